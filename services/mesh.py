"""`make run`: the whole mesh on the embedded defaults, with Envoy in front, and the web client.

Migrates the SQL databases, starts the four services and Envoy, waits until all are healthy,
seeds the demo agents, serves the built web client (web/dist) on 127.0.0.1, prints where to
connect (the client's URL carries a development token in its fragment), and stops everything on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, Settings
from services.common.db import migrate
from services.common.server import authority_from
from services.edge import (
    EdgeConfig,
    parent_death_launcher,
    parse_jwks_max_age,
    parse_origins,
    start_envoy,
    wait_envoy_ready,
)

SERVICES = ("avatar", "rooms", "token", "stream", "voice")
WEB_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"
SQL_SERVICES = ("avatar", "rooms", "token")


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, quietly; never cached, so a rebuilt client is what the browser runs."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextlib.contextmanager
def static_site(directory: Path, port: int = 0) -> Iterator[str]:
    """Serves `directory` on 127.0.0.1:`port` (0: a free one) in a thread; yields its origin."""
    handler = functools.partial(_StaticHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


async def wait_healthy(port: int, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"service on :{port} not healthy after {timeout_s}s")
            await asyncio.sleep(0.2)


def service_ports(settings: Settings) -> dict[str, int]:
    """Each service listens on the port of its ARCONV_<NAME>_ADDR (defaults 50051-50055)."""
    addrs = {
        "rooms": settings.rooms_addr,
        "stream": settings.stream_addr,
        "avatar": settings.avatar_addr,
        "token": settings.token_addr,
        "voice": settings.voice_addr,
    }
    out = {}
    for name, addr in addrs.items():
        port = addr.rsplit(":", 1)[-1]
        out[name] = int(port) if port.isdigit() else DEFAULT_PORTS[name]
    # The voice service's OpenAI-compatible HTTP listener, which the edge also routes to.
    out["voice_http"] = int(os.environ.get("ARCONV_VOICE_HTTP_PORT", "50056"))
    return out


async def _seed(settings: Settings) -> int:
    from services.avatar.demo import seed_demo_agents

    return await seed_demo_agents(settings, settings.avatar_addr)


async def run() -> int:
    settings = Settings()
    try:
        origins = parse_origins(os.environ.get("ARCONV_CORS_ORIGINS", ""))
        jwks_max_age_s = parse_jwks_max_age(os.environ.get("ARCONV_JWKS_MAX_AGE_S", "300"))
    except ValueError as exc:
        print(f"arconv: configuration error: {exc}", file=sys.stderr)
        return 2
    var = settings.var_dir
    var.mkdir(parents=True, exist_ok=True)
    for name in SQL_SERVICES:
        steps = await asyncio.to_thread(migrate, name, settings.service_database_url(name))
        if steps:
            print(f"arconv: {name} database migrated ({'; '.join(steps)})", flush=True)
    procs: dict[str, asyncio.subprocess.Process] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = service_ports(settings)
        metrics_on = os.environ.get("ARCONV_MESH_METRICS", "1") != "0"
        for name in SERVICES:
            env = {
                **os.environ,
                "ARCONV_PORT": str(ports[name]),
                "ARCONV_METRICS_PORT": str(DEFAULT_METRICS_PORTS[name] if metrics_on else -1),
                "ARCONV_LOG_FORMAT": os.environ.get("ARCONV_LOG_FORMAT", "text"),
                # The runner has just migrated every database.
                "ARCONV_MIGRATE_ON_START": "false",
            }
            procs[name] = await asyncio.create_subprocess_exec(
                *parent_death_launcher(), sys.executable, "-m", f"services.{name}", env=env
            )
        await asyncio.gather(*(wait_healthy(ports[n]) for n in SERVICES))
        seeded = await _seed(settings)
        edge = EdgeConfig(
            listen_host=os.environ.get("ARCONV_EDGE_HOST", "127.0.0.1"),
            listen_port=int(os.environ.get("ARCONV_EDGE_PORT", "8080")),
            admin_port=int(os.environ.get("ARCONV_EDGE_ADMIN_PORT", "9901")),
            upstreams=ports,
            cors_origins=origins,
            jwks_max_age_s=jwks_max_age_s,
        )
        procs["envoy"] = await start_envoy(edge, var / "envoy")
        await wait_envoy_ready(edge.admin_port, process=procs["envoy"])
        web = contextlib.ExitStack()
        origin = None
        if (WEB_DIST / "index.html").exists():
            web_port = int(os.environ.get("ARCONV_WEB_PORT", "8000"))
            try:
                origin = web.enter_context(static_site(WEB_DIST, web_port))
            except OSError as exc:
                print(f"arconv: web port {web_port} unavailable ({exc}); using a free one")
                origin = web.enter_context(static_site(WEB_DIST, 0))
        _banner(settings, edge, ports, seeded, origin)
        with web:
            return await supervise(procs, stop)
    finally:
        await stop_all(procs)


async def supervise(procs: dict[str, asyncio.subprocess.Process], stop: asyncio.Event) -> int:
    """Waits for a stop signal (0) or for any process to exit (1)."""
    waiters = {asyncio.ensure_future(p.wait()): n for n, p in procs.items()}
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({*waiters, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for fut in done:
        if fut in waiters:
            print(f"arconv: {waiters[fut]} exited ({fut.result()}); stopping", file=sys.stderr)
            return 1
    return 0


async def stop_all(procs: dict[str, asyncio.subprocess.Process]) -> None:
    for p in procs.values():
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    for name, p in procs.items():
        try:
            await asyncio.wait_for(p.wait(), timeout=10)
        except TimeoutError:
            print(f"arconv: {name} did not stop in 10 s; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()
    print("arconv: stopped", file=sys.stderr)


def _banner(
    settings: Settings, edge: EdgeConfig, ports: dict[str, int], seeded: int, web: str | None
) -> None:
    token = authority_from(settings).mint("alice", ttl_s=3600)
    port = edge.listen_port
    if web is None:
        client = "The web client is not built (make web); `make run` builds it."
    else:
        # The token rides in the fragment: the browser never sends it to the web server.
        host = "127.0.0.1" if edge.listen_host in ("0.0.0.0", "::") else edge.listen_host
        edge_url = f"http://{host}:{port}"
        link = f"{web}/#" + urlencode({"edge": edge_url, "token": token})
        client = f"Open the web client (signed in as alice for 1 hour):\n  {link}"
    print(
        f"""
arconv is up: rooms :{ports["rooms"]}  stream :{ports["stream"]}  \
avatar :{ports["avatar"]}  token :{ports["token"]}  voice :{ports["voice"]}
Envoy (gRPC and gRPC-web): {edge.listen_host}:{port}   admin :{edge.admin_port}
Demo agents seeded: {seeded}

A development token for user "alice" (1 hour; more with `python -m services.cli token --user NAME`):
  export TOKEN={token}

Try:
  .venv/bin/grpcurl -plaintext localhost:{port} list
  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $TOKEN" localhost:{port} \
arconv.avatar.v1.AvatarService/ListAgents
  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{{"agent_id": "nova"}}' \
localhost:{port} arconv.rooms.v1.RoomService/CreateRoom

Nova speaks (espeak-ng), OpenAI-style: a provider token for her voice, then POST /v1/audio/speech:
  export TTS_TOKEN=$(.venv/bin/python -m services.cli provider-token --edge localhost:{port})
  curl -s localhost:{port}/v1/audio/speech -H "authorization: Bearer $TTS_TOKEN" \\
\
  -d '{{"model": "tts-1", "voice": "nova-bright", "input": "Hello, I am Nova!"}}' > hello.wav

{client}

Ctrl-C stops everything.
""",
        flush=True,
    )


def main() -> None:
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
