"""`make cluster`: the replicated topology on one machine, a second way to run.

Two replicas of every service on distinct ports (the defaults, and the defaults + 100), the
local PostgreSQL and Redis (ARCONV_DATABASE_URL and ARCONV_REDIS_URL override them; keys under
their own prefix), one model store and one token key ring shared by the replicas, and the
edge in front listing both replicas of each service (health checks, outlier detection,
retries of idempotent methods). The services reach each other through every replica too
(`ipv4:` targets, round robin). Stops everything on Ctrl-C or SIGTERM.

SIGUSR1 to it rolls every replica, as a Kubernetes rolling update does: one replica at a time,
SIGTERM (it drains: health NOT_SERVING, its streams end UNAVAILABLE with the resume cursor),
a new process (the code as it is now), and the next only once the edge sees the new one
healthy. Clients that resume with their cursor lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.config import DEFAULT_METRICS_PORTS
from services.edge import (
    DEFAULT_UPSTREAMS,
    EdgeConfig,
    envoy_log,
    parent_death_launcher,
    start_envoy,
    tls_from_env,
    unhealthy_after_s,
    wait_envoy_ready,
)
from services.mesh import SERVICES, stop_all, wait_healthy

REPLICAS = 2
PORT_STEP = 100  # replica i of a service listens on its default port + i * PORT_STEP
DEFAULTS = {
    "ARCONV_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/arconv_cluster",
    "ARCONV_REDIS_URL": "redis://127.0.0.1:6379/0",
    "ARCONV_REDIS_PREFIX": "arconv-cluster:",
    "ARCONV_TOKEN_KV_PREFIX": "arconv-cluster:token:",
    "ARCONV_VAR_DIR": "var/cluster",
}


# How long a replica told to stop may drain beyond its ARCONV_SHUTDOWN_GRACE_S before it is
# killed (a hang guard: it exits as soon as its last call is done).
STOP_MARGIN_S = 30.0
# How long a restarted replica may take until the edge routes to it again (health checks every
# 2 s, every 5 s without traffic; an ejection for failed connections lasts 10 s).
EDGE_HEALTHY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class EdgeHost:
    """One replica as the edge sees it (Envoy's admin /clusters)."""

    healthy: bool  # neither failing its health check nor ejected by outlier detection
    active: int  # requests (streams included) in flight to it


def edge_hosts(admin_port: int, upstream: str) -> dict[int, EdgeHost]:
    """Each replica port of `upstream` as the edge sees it; blocking (call it in a thread)."""
    url = f"http://127.0.0.1:{admin_port}/clusters?format=json"
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc = json.load(resp)
    (status,) = (c for c in doc["cluster_statuses"] if c["name"] == upstream)
    out = {}
    for host in status.get("host_statuses", []):
        port = host["address"]["socket_address"]["port_value"]
        stats = {s["name"]: int(s.get("value", 0)) for s in host["stats"]}
        health = host.get("health_status", {})
        failing = any(v is True for k, v in health.items() if k.startswith("failed_"))
        healthy = not failing and health.get("eds_health_status", "HEALTHY") == "HEALTHY"
        out[port] = EdgeHost(healthy=healthy, active=stats.get("rq_active", 0))
    return out


@dataclass
class Replica:
    service: str
    index: int
    port: int
    http_port: int | None  # the voice service's HTTP listener
    proc: asyncio.subprocess.Process | None = None


@dataclass
class Cluster:
    env: dict[str, str]
    edge: EdgeConfig
    replicas: dict[tuple[str, int], Replica] = field(default_factory=dict)
    envoy: asyncio.subprocess.Process | None = None

    async def start(self, service: str, index: int) -> None:
        """Starts (or restarts) one replica and waits until it is healthy."""
        r = self.replicas[(service, index)]
        metrics = DEFAULT_METRICS_PORTS[service] + index * PORT_STEP
        env = {
            **self.env,
            "ARCONV_PORT": str(r.port),
            # Metrics ports (the defaults + 100 per replica) only when asked for.
            "ARCONV_METRICS_PORT": str(metrics)
            if self.env.get("ARCONV_CLUSTER_METRICS") == "1"
            else "-1",
        }
        if r.http_port is not None:
            env["ARCONV_VOICE_HTTP_PORT"] = str(r.http_port)
        # Started through the parent-death launcher rather than preexec_fn: this process may
        # be running gRPC threads, and a fork of it can abort the child.
        r.proc = await asyncio.create_subprocess_exec(
            *parent_death_launcher(), sys.executable, "-m", f"services.{service}", env=env
        )
        proc = r.proc
        healthy = asyncio.ensure_future(wait_healthy(r.port, timeout_s=180))
        exited = asyncio.ensure_future(proc.wait())
        await asyncio.wait({healthy, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not healthy.done():
            healthy.cancel()
            raise RuntimeError(f"{service} replica {index} exited ({proc.returncode}) at start")
        exited.cancel()
        await healthy

    def kill(self, service: str, index: int) -> int:
        """SIGKILL of one replica (no drain); returns its pid."""
        proc = self.replicas[(service, index)].proc
        assert proc is not None and proc.returncode is None
        proc.kill()
        return proc.pid

    async def stop(self, service: str, index: int) -> int:
        """SIGTERM of one replica, which drains and exits; returns its exit status (0 for a
        clean drain). One still running after its shutdown grace and STOP_MARGIN_S is killed."""
        proc = self.replicas[(service, index)].proc
        assert proc is not None
        if proc.returncode is None:
            proc.terminate()
        bound = (
            float(self.env.get("ARCONV_SHUTDOWN_GRACE_S", "5"))
            + float(self.env.get("ARCONV_SHUTDOWN_DRAIN_DELAY_S", "0"))
            + STOP_MARGIN_S
        )
        try:
            return await asyncio.wait_for(proc.wait(), timeout=bound)
        except TimeoutError:
            print(f"arconv: {service} replica {index} did not stop; killing it", file=sys.stderr)
            proc.kill()
            return await proc.wait()

    async def wait_edge_healthy(self, service: str, index: int) -> None:
        """Until the edge routes to the replica again: its health check passes and it is not
        ejected (voice: its gRPC and its HTTP listener)."""
        r = self.replicas[(service, index)]
        upstreams = {service: r.port}
        if r.http_port is not None:
            upstreams[f"{service}_http"] = r.http_port
        deadline = time.monotonic() + EDGE_HEALTHY_TIMEOUT_S
        admin = self.edge.admin_port
        while True:
            seen = [
                (await asyncio.to_thread(edge_hosts, admin, upstream)).get(port)
                for upstream, port in upstreams.items()
            ]
            if all(h is not None and h.healthy for h in seen):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the edge does not route to {service} replica {index}")
            await asyncio.sleep(0.2)

    async def restart(self, service: str, index: int) -> int:
        """Stops one replica (SIGTERM, drained), starts it again and waits until the edge
        routes to it; returns the old process's exit status."""
        status = await self.stop(service, index)
        await self.start(service, index)
        await self.wait_edge_healthy(service, index)
        return status

    async def roll(
        self,
        services: Iterable[str] = SERVICES,
        on_restart: Callable[[Replica, int], None] | None = None,
    ) -> dict[tuple[str, int], int]:
        """A rolling restart: every replica of each service in turn, one at a time, the next
        once the edge routes to the one before. Returns each old process's exit status;
        `on_restart(replica, status)` after each replica."""
        statuses = {}
        for service in services:
            for s, index in sorted(self.replicas):
                if s != service:
                    continue
                statuses[(s, index)] = status = await self.restart(s, index)
                if on_restart is not None:
                    on_restart(self.replicas[(s, index)], status)
        return statuses

    async def supervise(
        self,
        stop: asyncio.Event,
        roll: asyncio.Event,
        on_restart: Callable[[Replica, int], None] | None = None,
    ) -> int:
        """Until `stop` (0) or an exit nobody asked for (1); rolls every replica whenever
        `roll` is set (`on_restart` as in `roll`)."""
        while True:
            procs = self.processes()
            waiters = {asyncio.ensure_future(p.wait()): name for name, p in procs.items()}
            stopper = asyncio.ensure_future(stop.wait())
            roller = asyncio.ensure_future(roll.wait())
            done, pending = await asyncio.wait(
                {*waiters, stopper, roller}, return_when=asyncio.FIRST_COMPLETED
            )
            for fut in pending:
                fut.cancel()
            if stopper in done:
                return 0
            exited = [waiters[f] for f in done if f in waiters]
            if exited:
                print(f"arconv: {exited[0]} exited; stopping", file=sys.stderr)
                return 1
            roll.clear()
            print("arconv: rolling every replica, one at a time", flush=True)
            rolling = asyncio.ensure_future(self.roll(on_restart=on_restart))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({rolling, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not rolling.done():
                rolling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rolling
                return 0
            stopper.cancel()
            try:
                rolling.result()
            except (RuntimeError, TimeoutError) as exc:
                print(f"arconv: the rolling restart failed: {exc}; stopping", file=sys.stderr)
                return 1
            print("arconv: every replica restarted", flush=True)

    def processes(self) -> dict[str, asyncio.subprocess.Process]:
        procs = {f"{s}-{i}": r.proc for (s, i), r in self.replicas.items() if r.proc is not None}
        if self.envoy is not None:
            procs["envoy"] = self.envoy
        return procs


def replica_ports(
    base: Mapping[str, int] | None = None, replicas: int = REPLICAS
) -> dict[str, list[int]]:
    """Each upstream's replica ports: the defaults, then + PORT_STEP per replica."""
    base = base or DEFAULT_UPSTREAMS
    return {name: [port + i * PORT_STEP for i in range(replicas)] for name, port in base.items()}


def ensure_database(url: str) -> None:
    """Creates the PostgreSQL database of `url` when it does not exist yet."""
    if not url.startswith(("postgresql://", "postgres://")):
        return
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    name = name.split("?", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


async def _cli(env: Mapping[str, str], *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.DEVNULL,
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"python -m services.cli {' '.join(args)} failed")


@contextlib.asynccontextmanager
async def start_cluster(
    overrides: Mapping[str, str] | None = None,
    *,
    ports: Mapping[str, list[int]] | None = None,
    edge_port: int = 8080,
    admin_port: int = 9901,
    quiet_edge: bool = False,
) -> AsyncIterator[Cluster]:
    """Migrates, starts every replica and the edge, seeds the demo agents; stops on exit."""
    env = {**os.environ}
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    # A replica told to stop keeps serving until the edge's health checks have seen it
    # NOT_SERVING, so no call reaches it once it refuses them.
    env.setdefault("ARCONV_SHUTDOWN_DRAIN_DELAY_S", f"{unhealthy_after_s() + 0.5:g}")
    env.update(overrides or {})
    var = Path(env["ARCONV_VAR_DIR"])
    env.setdefault("ARCONV_MODEL_DIR", str(var / "models"))
    env.setdefault("ARCONV_LOG_FORMAT", "text")
    ports = dict(ports or replica_ports())
    # The services reach each other through every replica.
    for name in SERVICES:
        env[f"ARCONV_{name.upper()}_ADDR"] = "ipv4:" + ",".join(
            f"127.0.0.1:{p}" for p in ports[name]
        )
    env["ARCONV_MIGRATE_ON_START"] = "false"
    await asyncio.to_thread(var.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(ensure_database, env["ARCONV_DATABASE_URL"])
    await _cli(env, "migrate")
    edge = EdgeConfig(
        listen_host=env.get("ARCONV_EDGE_HOST", "127.0.0.1"),
        listen_port=edge_port,
        admin_port=admin_port,
        endpoints={name: [("127.0.0.1", p) for p in ports[name]] for name in DEFAULT_UPSTREAMS},
        # HTTPS with ARCONV_EDGE_TLS_CERT / ARCONV_EDGE_TLS_KEY (`python -m services.cli
        # dev-cert` makes a pair); plaintext without.
        tls=tls_from_env(env),
    )
    cluster = Cluster(env=env, edge=edge)
    for name in SERVICES:
        for i, port in enumerate(ports[name]):
            http = ports["voice_http"][i] if name == "voice" else None
            cluster.replicas[(name, i)] = Replica(name, i, port, http)
    try:
        # The first token replica makes the shared signing key; the others load it.
        await cluster.start("token", 0)
        await asyncio.gather(
            *(cluster.start(s, i) for (s, i) in cluster.replicas if (s, i) != ("token", 0))
        )
        await _cli(env, "seed")
        cluster.envoy = await start_envoy(edge, var / "envoy", quiet=quiet_edge)
        await wait_envoy_ready(
            edge.admin_port,
            process=cluster.envoy,
            log=envoy_log(edge, var / "envoy") if quiet_edge else None,
        )
        yield cluster
    finally:
        await stop_all(cluster.processes())


async def run() -> int:
    stop, roll = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, roll.set)
    edge_port = int(os.environ.get("ARCONV_EDGE_PORT", "8080"))
    admin_port = int(os.environ.get("ARCONV_EDGE_ADMIN_PORT", "9901"))
    try:
        tls_from_env(os.environ)
    except ValueError as exc:
        print(f"arconv: configuration error: {exc}", file=sys.stderr)
        return 2
    async with start_cluster(edge_port=edge_port, admin_port=admin_port) as cluster:
        _banner(cluster)
        return await cluster.supervise(stop, roll, on_restart=_restarted)


def _restarted(replica: Replica, status: int) -> None:
    how = "drained" if status == 0 else f"exit status {status}"
    pid = replica.proc.pid if replica.proc else "-"
    print(
        f"arconv: {replica.service} replica {replica.index} (:{replica.port}) restarted ({how});"
        f" pid {pid}",
        flush=True,
    )


def _banner(cluster: Cluster) -> None:
    env, edge = cluster.env, cluster.edge
    port = edge.listen_port
    grpcurl, scheme = ".venv/bin/grpcurl -plaintext", "plaintext"
    if edge.tls is not None:
        ca = edge.tls.cert.parent / "ca.pem"
        grpcurl = f".venv/bin/grpcurl -cacert {ca if ca.exists() else '<your CA>.pem'}"
        scheme = f"HTTPS, certificate {edge.tls.cert}"
    print(
        f"\narconv cluster is up: {REPLICAS} replicas of every service"
        f"\n  PostgreSQL {_redact(env['ARCONV_DATABASE_URL'])}"
        f"\n  Redis {_redact(env['ARCONV_REDIS_URL'])} (keys under {env['ARCONV_REDIS_PREFIX']})"
        f"\n  models in {env['ARCONV_MODEL_DIR']}",
        flush=True,
    )
    for name in SERVICES:
        reps = [r for (s, _), r in cluster.replicas.items() if s == name]
        pids = "  ".join(f":{r.port} (pid {r.proc.pid if r.proc else '-'})" for r in reps)
        print(f"  {name:7} {pids}")
    print(
        f"""Envoy in front of both replicas of each: {edge.listen_host}:{port} ({scheme})
  admin :{edge.admin_port} (/clusters lists each replica and its health)

Try:
  export TOKEN=$(.venv/bin/python -m services.cli token --user alice)
  {grpcurl} -H "authorization: Bearer $TOKEN" localhost:{port} \\
    arconv.avatar.v1.AvatarService/ListAgents
  kill -9 <a pid above>   # the edge routes around it; streams resume with their cursor
  kill -USR1 {os.getpid()}       # a rolling restart of every replica (the code as it is now)

Ctrl-C stops everything.
""",
        flush=True,
    )


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{creds}{at}{host}"


def main() -> None:
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
