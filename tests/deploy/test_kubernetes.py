"""deploy/kubernetes: each overlay renders (kubectl kustomize), passes the Kubernetes schema
strictly and yamllint, and keeps the invariants a platform team relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.config import DEFAULT_PORTS
from services.edge import build, kubernetes_config, parse_origins

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ("dev", "prod")
SERVICES = tuple(DEFAULT_PORTS)  # a new service must get its manifests


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # prod's secrets.env is never committed: render with the example in a copy of the tree.
    tree = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(MANIFESTS, tree)
    prod = tree / "overlays" / "prod"
    shutil.copy(prod / "secrets.env.example", prod / "secrets.env")
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
                assert v["secret"]["secretName"] in secrets, where
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
        assert float(config["data"]["ARCONV_SHUTDOWN_GRACE_S"]) + 5 < grace, name


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
    (secret,) = _by_kind(docs, "Secret").values()
    assert {
        "ARCONV_DATABASE_URL",
        "ARCONV_REDIS_URL",
        "ARCONV_JWT_SECRET",
        "ARCONV_SERVICE_JWT_SECRET",
        "ARCONV_PAGE_TOKEN_SECRET",
        "ARCONV_TOKEN_KEYS",
    } <= set(secret["data"])


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
    assert yaml.safe_load(text) == build(kubernetes_config(parse_origins(origins)))
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
