"""The context of the RPC being handled: its request id and W3C trace context.

The server's request-context interceptor sets it for every call (from the `x-request-id`,
`traceparent` and `tracestate` headers, or fresh when none arrive); the logs carry it, and the
service channels send it on with every call the handler makes to another service, so one
request id and one trace id follow a request through the mesh.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

MAX_REQUEST_ID_CHARS = 128
# W3C allows 32 list members of up to 256 characters; a longer header is dropped, not cut.
MAX_TRACESTATE_CHARS = 512

# version-traceid-parentid-flags, lower-case hex (https://www.w3.org/TR/trace-context/).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

# Request ids of calls that bring none: a random prefix per process and a counter, unique
# without a call to the OS's random source per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)
# Trace and span ids need to be unpredictable enough not to collide, not secret.
_random = random.Random(os.urandom(16))


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def new_trace_id() -> str:
    return f"{_random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_random.getrandbits(64) or 1:016x}"


@dataclass(slots=True)
class CallContext:
    """One RPC's identity for logs and downstream calls, and its outcome for the log line.

    `span_id` names this server's handling of the call: calls the handler makes carry it as
    their parent. `parent_id` is the caller's span (from its `traceparent`; empty when the
    trace starts here). `error` is the message of the status the errors interceptor answered
    with.
    """

    request_id: str
    trace_id: str
    span_id: str
    trace_flags: str = "00"
    tracestate: str = ""
    error: str = ""
    parent_id: str = ""

    def traceparent(self) -> str:
        """The `traceparent` header of a call made while handling this one."""
        return f"00-{self.trace_id}-{self.span_id}-{self.trace_flags}"

    def outgoing(self) -> tuple[tuple[str, str], ...]:
        """The metadata a downstream call carries."""
        md = (
            (REQUEST_ID_HEADER, self.request_id),
            (TRACEPARENT_HEADER, self.traceparent()),
        )
        return (*md, (TRACESTATE_HEADER, self.tracestate)) if self.tracestate else md


current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "arconv_call", default=None
)


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, flags) of a valid `traceparent`, or None. Versions above 00 are read as 00
    (the spec's forward compatibility); ff, all-zero ids and malformed values are refused."""
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace_id, parent, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if parent == _ZERO_SPAN:
        return None
    return trace_id, flags


def call_context_from(metadata: Iterable[Any] | None) -> CallContext:
    """The context of a call with this invocation metadata: its ids, or fresh ones."""
    rid: Any = None
    traceparent: Any = None
    tracestate: Any = None
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            rid = value
        elif key == TRACEPARENT_HEADER:
            traceparent = value
        elif key == TRACESTATE_HEADER and tracestate is None:
            tracestate = value
    if not (isinstance(rid, str) and 0 < len(rid) <= MAX_REQUEST_ID_CHARS):
        rid = new_request_id()
    parsed = parse_traceparent(traceparent) if isinstance(traceparent, str) else None
    if parsed is None:
        # A new trace starts here; a tracestate without its traceparent means nothing.
        return CallContext(rid, new_trace_id(), new_span_id())
    state = tracestate if isinstance(tracestate, str) else ""
    if len(state) > MAX_TRACESTATE_CHARS:
        state = ""
    # A valid traceparent has the caller's span id at a fixed place: vv-<32 hex>-<16 hex>-ff.
    return CallContext(rid, parsed[0], new_span_id(), parsed[1], state, "", traceparent[36:52])
