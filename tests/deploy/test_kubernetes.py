"""deploy/kubernetes: each overlay renders (kubectl kustomize), passes the Kubernetes schema
strictly and yamllint, and keeps the invariants a platform team relies on."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.config import DEFAULT_PORTS, DEV_JWT_SECRET, Settings
from services.devcert import make_dev_cert
from services.edge import build, kubernetes_config, parse_origins

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ("dev", "prod")
SERVICES = tuple(DEFAULT_PORTS)  # a new service must get its manifests


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # prod's secrets.env and TLS certificate are never committed: render with the example and
    # a development certificate in a copy of the tree.
    tree = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(MANIFESTS, tree)
    prod = tree / "overlays" / "prod"
    shutil.copy(prod / "secrets.env.example", prod / "secrets.env")
    make_dev_cert(prod / "tls", ["arconv.example.com"])
    out = {}
    for overlay in OVERLAYS:
        run = subprocess.run(
            [str(BIN / "kubectl"), "kustomize", str(tree / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        out[overlay] = run.stdout
    return out


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_schema_strict(rendered: dict[str, str], overlay: str, tmp_path: Path) -> None:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(rendered[overlay])
    run = subprocess.run(
        [
            str(BIN / "kubernetes-validate"),
            "--strict",
            "--quiet",
            "-k",
            KUBERNETES_VERSION,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_yamllint() -> None:
    run = subprocess.run(
        [str(BIN / "yamllint"), "-s", "-c", str(MANIFESTS / ".yamllint.yaml"), str(MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(rendered: dict[str, str], overlay: str) -> None:
    for where, spec in _pod_specs(_docs(rendered[overlay])):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"]["cpu"], where
            assert c["resources"]["requests"]["memory"], where
            assert c["resources"]["limits"]["memory"], where
            image = c["image"]
            name, _, tag = image.rpartition(":")
            assert "@sha256:" in image or (name and tag and tag != "latest"), (where, image)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_referenced_config_map_and_secret_exists(
    rendered: dict[str, str], overlay: str
) -> None:
    docs = _docs(rendered[overlay])
    config_maps, secrets = _by_kind(docs, "ConfigMap"), _by_kind(docs, "Secret")
    claims = _by_kind(docs, "PersistentVolumeClaim")
    for where, spec in _pod_specs(docs):
        for c in spec["containers"]:
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in config_maps, where
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets, where
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    secret = secrets[ref["secretKeyRef"]["name"]]
                    assert ref["secretKeyRef"]["key"] in secret["data"], where
                if "configMapKeyRef" in ref:
                    cm = config_maps[ref["configMapKeyRef"]["name"]]
                    assert ref["configMapKeyRef"]["key"] in cm["data"], where
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])} | {
                t["metadata"]["name"] for t in _claim_templates(docs, where)
            }, where
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps, where
            if "secret" in v:
                secret = secrets[v["secret"]["secretName"]]
                for item in v["secret"].get("items", []):
                    assert item["key"] in secret["data"], where
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, where


def _claim_templates(docs: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    kind, name = where.split("/")
    if kind != "StatefulSet":
        return []
    return list(_by_kind(docs, kind)[name]["spec"].get("volumeClaimTemplates", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_probes_spreads_and_has_a_budget(
    rendered: dict[str, str], overlay: str
) -> None:
    docs = _docs(rendered[overlay])
    deployments = _by_kind(docs, "Deployment")
    services = _by_kind(docs, "Service")
    pdbs = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: d
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    hpas = {
        d["spec"]["scaleTargetRef"]["name"]: d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert set(deployments) == {*SERVICES, "edge"}
    for name, dep in deployments.items():
        spec = dep["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert c["readinessProbe"] and c["livenessProbe"], name
        keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        assert name in pdbs and name in hpas, name
        if name == "edge":
            assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
            assert services["edge"]["spec"]["type"] == "LoadBalancer"
            continue
        port = DEFAULT_PORTS[name]
        # Native gRPC probes on the service's own port.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, (name, probe)
        assert {"name": "ARCONV_PORT", "value": str(port)} in c["env"]
        assert c["command"] == ["python", "-m", f"services.{name}"]
        headless = services[f"{name}-pods"]["spec"]
        assert headless["clusterIP"] == "None"
        assert port in {p["port"] for p in headless["ports"]}
        assert port in {p["port"] for p in services[name]["spec"]["ports"]}
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        config = next(
            iter(
                _by_kind(docs, "ConfigMap")[n]
                for n in _by_kind(docs, "ConfigMap")
                if n.startswith("arconv-config")
            )
        )
        # preStop sleep, the drain delay while NOT_SERVING, then the service's own grace.
        drain = float(config["data"]["ARCONV_SHUTDOWN_DRAIN_DELAY_S"])
        assert 5 + drain + float(config["data"]["ARCONV_SHUTDOWN_GRACE_S"]) < grace, name


def test_prod_runs_replicas_the_budgets_can_spare(rendered: dict[str, str]) -> None:
    docs = _docs(rendered["prod"])
    deployments = _by_kind(docs, "Deployment")
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    for d in docs:
        if d["kind"] != "HorizontalPodAutoscaler":
            continue
        name = d["spec"]["scaleTargetRef"]["name"]
        assert deployments[name]["spec"]["replicas"] >= 2, name
        assert d["spec"]["minReplicas"] >= pdbs[name]["spec"]["minAvailable"] + 1, name
        assert d["spec"]["maxReplicas"] > d["spec"]["minReplicas"], name
    # External PostgreSQL and Redis: no data store runs in the prod namespace.
    assert not _by_kind(docs, "StatefulSet")
    secret = _settings_secret(docs)
    assert {
        "ARCONV_DATABASE_URL",
        "ARCONV_REDIS_URL",
        "ARCONV_SERVICE_JWT_SECRET",
        "ARCONV_PAGE_TOKEN_SECRET",
        "ARCONV_TOKEN_KEYS",
    } <= set(secret["data"])


def _settings_secret(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (secret,) = (s for n, s in _by_kind(docs, "Secret").items() if n.startswith("arconv-secrets"))
    return secret


def _environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """What a service pod's environment holds: arconv-config, then arconv-secrets."""
    (config,) = (d for d in docs if d["kind"] == "ConfigMap" and "ARCONV_ENV" in d["data"])
    data = _settings_secret(docs)["data"]
    return {**config["data"], **{k: base64.b64decode(v).decode() for k, v in data.items()}}


def test_prod_takes_users_from_the_identity_provider_and_refuses_development_keys(
    rendered: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prod = _environment(_docs(rendered["prod"]))
    assert prod["ARCONV_ENV"] == "production"
    # Users' tokens come from the identity provider's JWKS: its URL, issuer and audience are
    # settings (the ConfigMap), not secrets.
    assert prod["ARCONV_JWT_JWKS_URL"].startswith("https://")
    assert prod["ARCONV_JWT_ISSUER"] and prod["ARCONV_JWT_AUDIENCE"]
    assert DEV_JWT_SECRET not in prod.values()
    for key in [k for k in os.environ if k.startswith("ARCONV_")]:
        monkeypatch.delenv(key)

    def settings(env: dict[str, str]) -> Settings:
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            return Settings()

    got = settings(prod)
    assert got.jwt_jwks_url == prod["ARCONV_JWT_JWKS_URL"]
    assert got.service_secret() != got.page_secret()
    # The development overlay's keys (the development secret, keys derived from it) are
    # refused under the production settings, and so is a JWKS URL without TLS.
    dev = _environment(_docs(rendered["dev"]))
    keys = ("ARCONV_JWT_JWKS_URL", "ARCONV_SERVICE_JWT_SECRET", "ARCONV_PAGE_TOKEN_SECRET")
    with pytest.raises(ValueError, match="ARCONV_JWT_SECRET is the development secret"):
        without = {k: v for k, v in prod.items() if k not in keys}
        settings({**without, **dev, "ARCONV_ENV": "production"})
    with pytest.raises(ValueError, match="ARCONV_SERVICE_JWT_SECRET is missing"):
        settings({k: v for k, v in prod.items() if k != "ARCONV_SERVICE_JWT_SECRET"})
    with pytest.raises(ValueError, match="must be an https:// URL"):
        settings({**prod, "ARCONV_JWT_JWKS_URL": "http://idp.example.com/jwks.json"})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_serves_tls_in_prod_from_its_secret(
    rendered: dict[str, str], overlay: str
) -> None:
    docs = _docs(rendered[overlay])
    (cm,) = (
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("edge-envoy")
    )
    (listener,) = yaml.safe_load(cm["data"]["envoy.yaml"])["static_resources"]["listeners"]
    sockets = [c["transport_socket"] for c in listener["filter_chains"] if "transport_socket" in c]
    edge = _by_kind(docs, "Deployment")["edge"]["spec"]["template"]["spec"]
    (container,) = edge["containers"]
    secret_volumes = {v["name"]: v["secret"] for v in edge["volumes"] if "secret" in v}
    service = _by_kind(docs, "Service")["edge"]["spec"]
    if overlay == "dev":
        # Plaintext on the local cluster: no certificate anywhere.
        assert not sockets and not secret_volumes
        return
    (socket,) = sockets
    context = socket["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    (pair,) = context["tls_certificates"]
    files = [Path(pair["certificate_chain"]["filename"]), Path(pair["private_key"]["filename"])]
    # Both files come from one kubernetes.io/tls Secret, mounted read-only where the
    # configuration reads them, readable by the pod's group only.
    (mount,) = (m for m in container["volumeMounts"] if m["name"] in secret_volumes)
    assert mount["readOnly"] is True
    assert all(f.parent == Path(mount["mountPath"]) for f in files), (files, mount)
    volume = secret_volumes[mount["name"]]
    assert volume["defaultMode"] & 0o007 == 0, oct(volume["defaultMode"])
    secret = _by_kind(docs, "Secret")[volume["secretName"]]
    assert secret["type"] == "kubernetes.io/tls"
    assert [f.name for f in files] == ["tls.crt", "tls.key"]
    assert {"tls.crt", "tls.key"} <= set(secret["data"])
    assert b"BEGIN CERTIFICATE" in base64.b64decode(secret["data"]["tls.crt"])
    # The probes and the LoadBalancer speak TLS to the listener's port.
    (port,) = container["ports"]
    assert port["containerPort"] == listener["address"]["socket_address"]["port_value"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["readinessProbe"]["httpGet"]["port"] == port["name"]
    (exposed,) = service["ports"]
    assert (exposed["port"], exposed["targetPort"], exposed["appProtocol"]) == (
        443,
        port["name"],
        "https",
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_once_in_a_job(rendered: dict[str, str], overlay: str) -> None:
    docs = _docs(rendered[overlay])
    (config,) = (d for d in docs if d["kind"] == "ConfigMap" and "ARCONV_ENV" in d["data"])
    assert config["data"]["ARCONV_MIGRATE_ON_START"] == "false"
    job = _by_kind(docs, "Job")["migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "services.cli",
        "migrate",
    ]
    assert float(config["data"]["ARCONV_MAX_CONNECTION_AGE_S"]) > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_edge_config_is_the_generators(rendered: dict[str, str], overlay: str) -> None:
    docs = _docs(rendered[overlay])
    (cm,) = (
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("edge-envoy")
    )
    text = cm["data"]["envoy.yaml"]
    command = text.splitlines()[1].removeprefix("# ").split()
    assert command[:4] == ["python", "-m", "services.edge", "render"] and "--kubernetes" in command
    origins = command[command.index("--cors-origins") + 1] if "--cors-origins" in command else ""
    # Regenerate with `make manifests` after changing envoy/envoy.yaml or services/edge.py.
    expected = kubernetes_config(parse_origins(origins), tls="--tls" in command)
    assert yaml.safe_load(text) == build(expected)
    services = _by_kind(docs, "Service")
    for cluster in yaml.safe_load(text)["static_resources"]["clusters"]:
        (group,) = cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]:
            address = e["endpoint"]["address"]["socket_address"]
            headless = services[address["address"]]["spec"]
            assert headless["clusterIP"] == "None"
            assert address["port_value"] in {p["port"] for p in headless["ports"]}
    if overlay == "prod":
        assert "https://app.example.com" in text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_reach_each_other_through_every_pod(
    rendered: dict[str, str], overlay: str
) -> None:
    docs = _docs(rendered[overlay])
    (config,) = (d for d in docs if d["kind"] == "ConfigMap" and "ARCONV_ENV" in d["data"])
    services = _by_kind(docs, "Service")
    for name, port in DEFAULT_PORTS.items():
        target = config["data"][f"ARCONV_{name.upper()}_ADDR"]
        host, _, got = target.removeprefix("dns:///").rpartition(":")
        assert target.startswith("dns:///") and int(got) == port, target
        assert services[host]["spec"]["clusterIP"] == "None", target
