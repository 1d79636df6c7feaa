"""The edge's TLS listener: a development certificate from the CLI, Envoy serving HTTPS with
HTTP/2 by ALPN, grpcurl trusting the CA with -cacert; plaintext clients are refused."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from services.common.server import authority_from
from services.edge import (
    EdgeConfig,
    EdgeTls,
    build,
    config_from_env,
    envoy_log,
    kubernetes_config,
    main,
    start_envoy,
    wait_envoy_ready,
)
from services.ports import free_port
from tests.common.kit_servicer import kit_spec
from tests.conftest import StartServer, make_settings

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _dev_cert(out: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "dev-cert",
            "--out",
            str(out),
            "--host",
            "edge.test",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "grpcurl -cacert" in done.stdout


def test_the_dev_certificate_names_the_local_addresses_and_keeps_its_key_private(
    tmp_path: Path,
) -> None:
    _dev_cert(tmp_path)
    leaf = x509.load_pem_x509_certificates((tmp_path / "cert.pem").read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "edge.test"} <= set(san.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0
    # The chain verifies against the CA the clients are given.
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_tls_settings_need_both_files(tmp_path: Path) -> None:
    assert config_from_env({}).tls is None
    assert (
        "transport_socket"
        not in build(EdgeConfig())["static_resources"]["listeners"][0]["filter_chains"][0]
    )
    with pytest.raises(ValueError, match="both"):
        config_from_env({"ARCONV_EDGE_TLS_CERT": str(tmp_path / "cert.pem")})
    with pytest.raises(ValueError, match="not a readable file"):
        config_from_env(
            {"ARCONV_EDGE_TLS_CERT": str(tmp_path / "x"), "ARCONV_EDGE_TLS_KEY": str(tmp_path)}
        )


def test_the_kubernetes_edge_reads_its_certificate_from_the_mounted_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["render", "--kubernetes", "--tls"]) == 0
    (chain,) = build(kubernetes_config(tls=True))["static_resources"]["listeners"][0][
        "filter_chains"
    ]
    tls = chain["transport_socket"]["typed_config"]["common_tls_context"]
    (pair,) = tls["tls_certificates"]
    assert pair["certificate_chain"]["filename"] == "/etc/arconv/tls/tls.crt"
    assert pair["private_key"]["filename"] == "/etc/arconv/tls/tls.key"
    assert "filename: /etc/arconv/tls/tls.crt" in capsys.readouterr().out
    # Without --kubernetes the certificate comes from ARCONV_EDGE_TLS_CERT / _KEY.
    with pytest.raises(SystemExit) as refused:
        main(["render", "--tls"])
    assert refused.value.code == 2
    assert "--tls goes with --kubernetes" in capsys.readouterr().err


@pytest.mark.envoy
async def test_grpcurl_reaches_a_service_through_the_tls_edge(
    tmp_path: Path, start_server: StartServer
) -> None:
    _dev_cert(tmp_path / "tls")
    env = {
        "ARCONV_EDGE_TLS_CERT": str(tmp_path / "tls" / "cert.pem"),
        "ARCONV_EDGE_TLS_KEY": str(tmp_path / "tls" / "key.pem"),
    }
    settings = make_settings(tmp_path)
    rooms = await start_server(settings, kit_spec())
    cfg = EdgeConfig(
        listen_port=free_port(),
        admin_port=free_port(),
        upstreams={"rooms": rooms.port},
        tls=config_from_env(env).tls,
    )
    assert isinstance(cfg.tls, EdgeTls)
    proc = await start_envoy(cfg, tmp_path, quiet=True)
    try:
        await wait_envoy_ready(cfg.admin_port, process=proc, log=envoy_log(cfg, tmp_path))
        token = authority_from(settings).mint("alice", ttl_s=300)
        target = f"127.0.0.1:{cfg.listen_port}"

        async def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [GRPCURL, *args],
                capture_output=True,
                text=True,
                timeout=60,
            )

        ok = await grpcurl(
            "-cacert",
            str(tmp_path / "tls" / "ca.pem"),
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            '{"room_id": "r1"}',
            target,
            "arconv.rooms.v1.RoomService/GetRoom",
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["room"] == {"room_id": "r1", "user_id": "alice"}
        # Without trusting the CA, and in plaintext, nothing gets through.
        untrusted = await grpcurl(target, "list")
        assert untrusted.returncode != 0
        assert "certificate" in untrusted.stderr
        plain = await grpcurl("-plaintext", target, "list")
        assert plain.returncode != 0
        # HTTP/2 is chosen by ALPN, HTTP/1.1 (gRPC-web) is offered too.
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        for protocols, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
            ctx.set_alpn_protocols(protocols)
            _, writer = await asyncio.open_connection(
                "127.0.0.1", cfg.listen_port, ssl=ctx, server_hostname="localhost"
            )
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == chosen
            writer.close()
            await writer.wait_closed()
    finally:
        proc.terminate()
        await proc.wait()
