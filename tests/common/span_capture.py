"""Spans captured in memory for the tracing tests: servers and service channels built while
`traced()` is open record into it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.common import tracing


def find(
    finished: Iterable[ReadableSpan], kind: SpanKind, service: str, method: str
) -> list[ReadableSpan]:
    """The spans of one kind of one RPC."""
    return [
        s
        for s in finished
        if s.kind == kind
        and s.attributes is not None
        and s.attributes.get("rpc.service") == service
        and s.attributes.get("rpc.method") == method
    ]


def ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) in hex, as traceparent and the logs write them."""
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str:
    assert span.parent is not None
    return f"{span.parent.span_id:016x}"


class Spans(InMemorySpanExporter):
    """The finished spans, and a way to await one: a refused call's status reaches the client
    when the handler aborts, before the server's outer layers (its span among them) finish,
    and a response stream's client span ends once the stream has."""

    def __init__(self) -> None:
        super().__init__()
        self._exported = asyncio.Event()

    def export(self, spans: Any) -> Any:
        result = super().export(spans)
        self._exported.set()
        return result

    async def one(self, kind: SpanKind, service: str, method: str) -> ReadableSpan:
        async with asyncio.timeout(10):
            while not (found := find(self.get_finished_spans(), kind, service, method)):
                self._exported.clear()
                await self._exported.wait()
        (span,) = found
        return span


@contextmanager
def traced() -> Iterator[Spans]:
    exporter = Spans()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)
        provider.shutdown()


@pytest.fixture
def spans() -> Iterator[Spans]:
    """Servers and channels built after this fixture trace into memory."""
    with traced() as exporter:
        yield exporter
