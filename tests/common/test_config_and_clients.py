"""Settings validation, database URL rules, the development CLI and service-to-service clients."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as pb_grpc
from pydantic import ValidationError

from services.common.clients import IDEMPOTENT_METHODS, ServiceChannels, for_user, service_config
from services.common.config import DEV_JWT_SECRET, ConfigError, Settings, normalize_database_url
from tests.common.kit_servicer import kit_spec
from tests.conftest import make_settings

PRODUCTION_KEYS = {"service_jwt_secret": "s" * 40, "page_token_secret": "p" * 40}


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises((ConfigError, ValidationError), match="ARCONV_JWT_SECRET"):
        Settings(env="production", jwt_secret=DEV_JWT_SECRET, **PRODUCTION_KEYS)
    with pytest.raises((ConfigError, ValidationError), match="ARCONV_JWT_SECRET"):
        Settings(env="production", jwt_secret="short", **PRODUCTION_KEYS)
    assert Settings(env="production", jwt_secret="x" * 40, **PRODUCTION_KEYS).env == "production"


def test_production_refuses_missing_or_shared_service_and_page_keys() -> None:
    for keys, missing in (
        ({}, ("ARCONV_SERVICE_JWT_SECRET", "ARCONV_PAGE_TOKEN_SECRET")),
        ({"service_jwt_secret": "s" * 40}, ("ARCONV_PAGE_TOKEN_SECRET",)),
        ({"service_jwt_secret": "x" * 40, "page_token_secret": "p" * 40}, ("SERVICE_JWT",)),
        ({"service_jwt_secret": "s" * 40, "page_token_secret": "short"}, ("PAGE_TOKEN",)),
    ):
        with pytest.raises((ConfigError, ValidationError)) as err:
            Settings(env="production", jwt_secret="x" * 40, **keys)
        for name in missing:
            assert name in str(err.value)
    # In development the keys are derived from ARCONV_JWT_SECRET, each its own.
    dev = Settings(env="development")
    assert len({dev.jwt_secret, dev.service_secret(), dev.page_secret()}) == 3
    assert Settings(env="development", service_jwt_secret="k" * 40).service_secret() == "k" * 40


def test_production_identity_provider_needs_https_and_no_user_secret() -> None:
    url = "https://idp.example/.well-known/jwks.json"
    s = Settings(env="production", jwt_jwks_url=url, **PRODUCTION_KEYS)
    assert s.jwt_jwks_url == url
    with pytest.raises((ConfigError, ValidationError), match="https"):
        Settings(env="production", jwt_jwks_url="http://idp.example/jwks", **PRODUCTION_KEYS)
    with pytest.raises((ConfigError, ValidationError), match="ARCONV_JWT_ALGORITHMS"):
        Settings(jwt_algorithms="RS256,HS256")
    with pytest.raises((ConfigError, ValidationError), match="ARCONV_JWT_ALGORITHMS"):
        Settings(jwt_algorithms=" , ")
    assert Settings(jwt_algorithms=" ES256 , EdDSA").algorithms() == ("ES256", "EdDSA")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCONV_CALL_TIMEOUT_S", "2.5")
    monkeypatch.setenv("ARCONV_LOG_LEVEL", "debug")
    s = Settings()
    assert s.call_timeout_s == 2.5
    assert s.log_level == "DEBUG"
    monkeypatch.setenv("ARCONV_LOG_LEVEL", "loud")
    with pytest.raises(ValidationError):
        Settings()


def test_database_urls_are_rewritten_or_refused() -> None:
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("sqlite:///var/x.db") == "sqlite+aiosqlite:///var/x.db"
    for bad in ("mysql://u@h/db", "not a url"):
        with pytest.raises(ConfigError):
            normalize_database_url(bad)


def test_service_start_fails_clearly_on_bad_config(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.rooms"],
        env={"ARCONV_ENV": "production", "PATH": "/usr/bin", "ARCONV_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    for name in ("ARCONV_JWT_SECRET", "ARCONV_SERVICE_JWT_SECRET", "ARCONV_PAGE_TOKEN_SECRET"):
        assert name in proc.stderr


def test_cli_mints_tokens_the_mesh_accepts(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "token", "--user", "alice", "--ttl", "60"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    settings = Settings()
    from services.common.server import authority_from

    claims = authority_from(settings).verify(out)
    assert claims["sub"] == "alice"
    assert claims["role"] == "user"


async def test_service_channel_sends_service_token_and_acts_for_user(
    tmp_path, start_server
) -> None:
    settings = make_settings(tmp_path)
    srv = await start_server(settings, kit_spec())
    channels = ServiceChannels(settings, "tester")
    try:
        stub = pb_grpc.RoomInternalServiceStub(channels.channel(f"127.0.0.1:{srv.port}"))
        # RoomInternalService is internal: only a service token passes.
        r = await stub.AppendMessage(pb.AppendMessageRequest(room_id="r"), metadata=for_user("u1"))
        assert r.message.sender_id == "u1"
        r2 = await stub.AppendMessage(pb.AppendMessageRequest(room_id="r"))
        assert r2.message.sender_id == "service:tester"
    finally:
        await channels.close()


async def test_service_channel_applies_the_default_deadline(tmp_path) -> None:
    settings = make_settings(tmp_path, call_timeout_s=0.3)
    # A listening socket that never answers HTTP/2: the call must end by the deadline.
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    channels = ServiceChannels(settings, "tester")
    try:
        stub = pb_grpc.RoomServiceStub(channels.channel(f"127.0.0.1:{sock.getsockname()[1]}"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetRoom(pb.GetRoomRequest(room_id="r"), wait_for_ready=True)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await channels.close()
        sock.close()


def test_the_retry_policy_names_real_methods_and_retries_unavailable_only() -> None:
    import arconv.avatar.v1.avatar_service_pb2
    import arconv.stream.v1.stream_service_pb2
    import arconv.token.v1.token_service_pb2  # noqa: F401
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for service, methods in IDEMPOTENT_METHODS.items():
        found = pool.FindServiceByName(service)
        for method in methods:
            assert found.FindMethodByName(method) is not None, (service, method)
    # Calls that count usage are never repeated by the channel.
    assert "VerifyProviderToken" not in IDEMPOTENT_METHODS["arconv.token.v1.TokenInternalService"]
    (config,) = json.loads(service_config(3))["methodConfig"]
    assert config["retryPolicy"]["maxAttempts"] == 3
    assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert len(config["name"]) == sum(len(m) for m in IDEMPOTENT_METHODS.values())
    assert json.loads(service_config(1)) == {}
