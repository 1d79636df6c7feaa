"""Free local ports for tests and benchmarks that start servers on ports chosen in advance.

A port the kernel hands out for `bind(0)` comes from its ephemeral range, the range every
outgoing connection draws its local port from too: between choosing such a port and the
server binding it (seconds, when a cluster of replicas starts first), a client connection
anywhere on the machine can take it, and the server fails to start. These ports come from
below that range instead, where no connection goes uninvited, and each pytest-xdist worker
draws from its own slice, so two workers never hand out the same port.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

# Below this no port is handed out: the well-known and registered ports the machine's own
# servers use (PostgreSQL 5432, Redis 6379, `make run`'s 8080 and 50051-50061, ...).
LOWEST = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default where the setting cannot be read


@functools.cache
def _slice() -> range:
    """This process's share of [LOWEST, start of the ephemeral range)."""
    top = max(_ephemeral_start(), LOWEST + 1_000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    size = (top - LOWEST) // max(workers, 1)
    return range(LOWEST + index * size, LOWEST + (index + 1) * size)


@functools.cache
def _candidates() -> Iterator[int]:
    ports = _slice()
    # A random start, so two processes of one slice (a benchmark beside a test run) rarely
    # walk the same ports; then every port of the slice once before any comes again.
    start = random.randrange(len(ports))
    return itertools.cycle([*ports[start:], *ports[:start]])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing is bound to now, outside the ephemeral range; this
    process does not hand it out again before it has handed out every other port of its
    slice."""
    for _ in range(len(_slice())):
        port = next(_candidates())
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {host} in {_slice()}")
