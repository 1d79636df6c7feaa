"""The edge generator: one envoy/envoy.yaml rendered for make run, make cluster and Kubernetes,
with replicas, health checks, outlier detection and retries of idempotent methods only."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pool

from services.edge import (
    DEFAULT_UPSTREAMS,
    IDEMPOTENT_METHODS,
    TEMPLATE,
    EdgeConfig,
    build,
    envoy_binary,
    kubernetes_config,
    render,
)


def _routes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return list(hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"])


def _clusters(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["static_resources"]["clusters"]}


def _addresses(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    (group,) = cluster["load_assignment"]["endpoints"]
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in group["lb_endpoints"]
    ]


def _import_protos() -> None:
    import arconv.voice.v1.voice_service_pb2  # noqa: F401

    from services.common.server import _import_descriptors

    _import_descriptors()


def test_every_template_route_is_kept_in_order() -> None:
    template = _routes(yaml.safe_load(TEMPLATE.read_text()))
    rendered = _routes(build(EdgeConfig()))
    it = iter(rendered)
    assert all(any(r == t for r in it) for t in template), "a template route was lost or moved"
    extra = [r for r in rendered if r not in template]
    assert {r["match"]["path"] for r in extra} == set(IDEMPOTENT_METHODS)


def test_only_idempotent_unary_methods_are_retried_and_refusals_still_win() -> None:
    _import_protos()
    pool = descriptor_pool.Default()
    routes = _routes(build(EdgeConfig()))
    last_refusal = max(i for i, r in enumerate(routes) if "direct_response" in r)
    retried = [(i, r) for i, r in enumerate(routes) if "retry_policy" in r.get("route", {})]
    assert {r["match"]["path"] for _, r in retried} == set(IDEMPOTENT_METHODS)
    for i, r in retried:
        path = r["match"]["path"]
        service, method = path.strip("/").split("/")
        desc = pool.FindMethodByName(f"{service}.{method}")
        assert not desc.client_streaming and not desc.server_streaming, path
        assert "InternalService/" not in path and i > last_refusal, path
        assert r["route"]["retry_policy"]["retry_on"].split(",")[0] == "unavailable"
        # The retried route goes where the service's own route goes.
        own = next(x for x in routes if x["match"].get("prefix") == f"/{service}/")
        assert r["route"]["cluster"] == own["route"]["cluster"]
        assert routes.index(own) > i


def test_every_other_call_is_retried_only_when_it_never_reached_a_replica() -> None:
    hcm = build(EdgeConfig())["static_resources"]["listeners"][0]["filter_chains"][0]
    (vhost,) = hcm["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
    policy = vhost["retry_policy"]
    # A stream or a change may have been acted on once anything reached a replica: no
    # `unavailable`, `reset`, `5xx` or status-based retry, only connections never made.
    assert set(policy["retry_on"].split(",")) == {
        "connect-failure",
        "refused-stream",
        "reset-before-request",
    }
    (predicate,) = policy["retry_host_predicate"]
    assert predicate["name"] == "envoy.retry_host_predicates.previous_hosts"
    for r in _routes(build(EdgeConfig())):
        if "retry_policy" in r.get("route", {}):  # idempotent: wider, same hosts and back-off
            own = r["route"]["retry_policy"]
            assert set(policy["retry_on"].split(",")) - {"reset-before-request"} < set(
                own["retry_on"].split(",")
            )
            assert {k: v for k, v in own.items() if k != "retry_on"} == {
                k: v for k, v in policy.items() if k != "retry_on"
            }


def test_replicas_health_checks_and_outlier_detection_on_every_cluster() -> None:
    cfg = EdgeConfig(
        endpoints={
            "stream": [("127.0.0.1", 7001), ("127.0.0.1", 7002)],
            "rooms": [("127.0.0.1", 7003), ("127.0.0.1", 7004)],
        }
    )
    clusters = _clusters(build(cfg))
    assert set(clusters) == set(DEFAULT_UPSTREAMS)
    assert _addresses(clusters["stream"]) == [("127.0.0.1", 7001), ("127.0.0.1", 7002)]
    assert _addresses(clusters["token"]) == [("127.0.0.1", DEFAULT_UPSTREAMS["token"])]
    for name, c in clusters.items():
        assert c["type"] == "STATIC"
        (check,) = c["health_checks"]
        kind = "tcp_health_check" if name == "voice_http" else "grpc_health_check"
        assert kind in check, name
        assert c["outlier_detection"]["consecutive_local_origin_failure"] >= 1
        assert c["common_lb_config"]["healthy_panic_threshold"]["value"] == 0
        # Enough concurrent retries for every call a dead replica failed at once.
        (limits,) = c["circuit_breakers"]["thresholds"]
        assert limits["retry_budget"]["min_retry_concurrency"] >= 10


def test_kubernetes_resolves_each_headless_service() -> None:
    clusters = _clusters(build(kubernetes_config(["https://app.example"])))
    for name, c in clusters.items():
        assert c["type"] == "STRICT_DNS"
        ((host, port),) = _addresses(c)
        assert host == f"{name.removesuffix('_http')}-pods"
        assert port == DEFAULT_UPSTREAMS[name]


@pytest.mark.envoy
@pytest.mark.parametrize("which", ["local", "replicas", "kubernetes"])
def test_envoy_accepts_the_rendered_configuration(which: str, tmp_path: Path) -> None:
    cfg = {
        "local": EdgeConfig(cors_origins=("https://a.example", "regex:^https://.*\\.b\\.dev$")),
        "replicas": EdgeConfig(endpoints={"stream": [("127.0.0.1", 1), ("127.0.0.1", 2)]}),
        # The image's descriptor set, here at its place in this checkout.
        "kubernetes": dataclasses.replace(
            kubernetes_config(), descriptor_set=TEMPLATE.parent.parent / "gen" / "arconv.binpb"
        ),
    }[which]
    path = tmp_path / "envoy.yaml"
    path.write_text(render(cfg))
    out = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_render_command_prints_the_kubernetes_configuration() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.edge", "render", "--kubernetes"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.splitlines()[1] == "# python -m services.edge render --kubernetes"
    assert yaml.safe_load(out.stdout) == build(kubernetes_config())
