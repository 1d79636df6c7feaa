"""`python -m services.edge` (the image's edge): config from the environment, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import yaml

from services.edge import DEFAULT_UPSTREAMS, config_from_env, render
from services.ports import free_port


def test_upstreams_come_from_each_services_address() -> None:
    cfg = config_from_env(
        {
            "ARCONV_ROOMS_ADDR": "rooms.arconv.svc:7001",
            "ARCONV_STREAM_ADDR": "[::1]:7002",
            "ARCONV_EDGE_PORT": "8443",
            "ARCONV_CORS_ORIGINS": "https://app.example",
        }
    )
    assert cfg.upstream_hosts["rooms"] == "rooms.arconv.svc"
    assert cfg.upstreams["rooms"] == 7001
    assert (cfg.upstream_hosts["stream"], cfg.upstreams["stream"]) == ("::1", 7002)
    assert cfg.upstreams["token"] == DEFAULT_UPSTREAMS["token"]
    assert cfg.endpoints_of("voice_http") == [("127.0.0.1", DEFAULT_UPSTREAMS["voice_http"])]
    doc = yaml.safe_load(render(cfg))
    listener = doc["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 8443
    assert "https://app.example" in render(cfg)


def test_a_bad_origin_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="must look like"):
        config_from_env({"ARCONV_CORS_ORIGINS": "app.example"})


@pytest.mark.envoy
async def test_edge_drains_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    from services.edge import wait_envoy_ready

    admin = free_port()
    env = {
        **os.environ,
        "ARCONV_VAR_DIR": str(tmp_path),
        "ARCONV_EDGE_PORT": str(free_port()),
        "ARCONV_EDGE_ADMIN_PORT": str(admin),
        "ARCONV_EDGE_DRAIN_S": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.edge", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_envoy_ready(admin, process=proc)
        assert (tmp_path / "envoy").is_dir()
        hc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.healthcheck", "edge", env=env
        )
        assert await hc.wait() == 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
        hc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.healthcheck",
            "edge",
            env=env,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await hc.wait() == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_healthcheck_refuses_an_unknown_role() -> None:
    from services.healthcheck import main

    assert main(["nothing"]) == 1


@pytest.mark.envoy
async def test_an_envoy_that_cannot_start_fails_the_wait_at_once_with_its_log(
    tmp_path: Path,
) -> None:
    from services.edge import EdgeConfig, envoy_log, start_envoy, wait_envoy_ready

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = EdgeConfig(listen_port=free_port(), admin_port=taken.getsockname()[1])
        proc = await start_envoy(cfg, tmp_path, quiet=True)
        # Not the timeout's TimeoutError: the wait ends when Envoy does, and says why.
        with pytest.raises(RuntimeError, match="envoy exited with code 1") as err:
            await wait_envoy_ready(
                cfg.admin_port, timeout_s=120, process=proc, log=envoy_log(cfg, tmp_path)
            )
    assert f"cannot bind '127.0.0.1:{cfg.admin_port}': Address already in use" in str(err.value)
