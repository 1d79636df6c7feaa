"""Structured logs: one JSON object per line, with the request id and trace id of the RPC
being handled."""

from __future__ import annotations

import json
import logging
import sys
import time

from services.common.context import current_call


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call = current_call.get()
        if call is not None:
            doc["request_id"] = call.request_id
            doc["trace_id"] = call.trace_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        call = current_call.get()
        ids = f"rid={call.request_id} trace={call.trace_id}" if call is not None else ""
        extra = getattr(record, "fields", None)
        tail = " ".join(f"{k}={v}" for k, v in extra.items()) if isinstance(extra, dict) else ""
        return " ".join(p for p in (base, ids, tail) if p)


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Routes the root logger to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
