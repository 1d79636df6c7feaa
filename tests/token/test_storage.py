"""SQL on both back ends (SQLite and the real PostgreSQL), migrations, and start-up checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.token.v1 import token_service_pb2 as pb

from services.common.db import create_engine, downgrade, migrate
from tests.token.conftest import Mesh

ROOT = Path(__file__).resolve().parents[2]


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return set(names)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'token.db'}"
    return str(request.getfixturevalue("pg_url"))


async def test_migrations_run_up_and_down(db_url: str) -> None:
    await asyncio.to_thread(migrate, "token", db_url)
    assert {"token_issued", "token_audit", "alembic_version_token"} <= await _tables(db_url)
    await asyncio.to_thread(downgrade, "token", db_url, "base")
    assert not {"token_issued", "token_audit"} & await _tables(db_url)
    await asyncio.to_thread(migrate, "token", db_url)
    assert {"token_issued", "token_audit"} <= await _tables(db_url)


@pytest.mark.postgres
@pytest.mark.parametrize("kv_backend", ["memory", "redis"], indirect=True)
async def test_whole_lifecycle_on_postgresql(mesh_factory: Callable[..., Any], pg_url: str) -> None:
    mesh: Mesh = await mesh_factory(database_url=pg_url)
    room = await mesh.room("alice")
    a = await mesh.issue("alice", room, ("tts.synthesize", "tts.viseme_stream"))
    b = (
        await mesh.token.RefreshProviderToken(
            pb.RefreshProviderTokenRequest(token=a.token), metadata=mesh.md("alice")
        )
    ).token
    assert (await mesh.verify(b.token, "tts.viseme_stream", n=1200)).quota_remaining == 8800
    assert (await mesh.usage("alice")).active_tokens == 2
    revoked = await mesh.token.RevokeProviderToken(
        pb.RevokeProviderTokenRequest(token_id=a.token_id), metadata=mesh.md("alice")
    )
    assert revoked.revoked
    assert (await mesh.verify(a.token)).reason == pb.DENY_REASON_REVOKED
    await mesh.rooms.EndRoom(rooms_pb.EndRoomRequest(room_id=room), metadata=mesh.md("alice"))
    assert (await mesh.verify(b.token)).reason == pb.DENY_REASON_REVOKED
    usage = await mesh.usage("alice")
    assert usage.active_tokens == 0 and usage.characters_used == 1200
    actions = [r["action"] for r in await mesh.audit()]
    assert actions == [
        "issue",
        "refresh",
        "revoke",
        "verify_denied",
        "revoke_room",
        "verify_denied",
    ]


@pytest.mark.postgres
async def test_a_refused_verify_with_a_hostile_operation_is_audited_on_postgresql(
    mesh_factory: Callable[..., Any], pg_url: str
) -> None:
    # The operation comes from the TTS proxy's client; PostgreSQL refuses NUL in text.
    mesh: Mesh = await mesh_factory(database_url=pg_url)
    room = await mesh.room("alice")
    issued = await mesh.issue("alice", room)
    answer = await mesh.verify(issued.token, "tts.synthesize\x00\x1b[2J" + "x" * 100)
    assert (answer.allowed, answer.reason) == (False, pb.DENY_REASON_SCOPE)
    assert await mesh.counters("alice", issued.token_id) == (0, 0)
    denied = [r for r in await mesh.audit() if r["action"] == "verify_denied"]
    assert len(denied) == 1
    op = denied[0]["operation"]
    assert op.startswith("tts.synthesize\ufffd\ufffd[2J") and len(op) == 64
    assert (denied[0]["reason"], denied[0]["token_id"]) == ("SCOPE", issued.token_id)


def test_production_start_up_refuses_the_development_key(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ARCONV_")},
        "ARCONV_ENV": "production",
        "ARCONV_JWT_SECRET": "p" * 48,
        "ARCONV_SERVICE_JWT_SECRET": "v" * 48,
        "ARCONV_PAGE_TOKEN_SECRET": "g" * 48,
        "ARCONV_VAR_DIR": str(tmp_path),
        "ARCONV_PORT": "0",
        "ARCONV_METRICS_PORT": "-1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "services.token"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "ARCONV_TOKEN_KEYS is not set" in proc.stderr
    assert not (tmp_path / "token-keys").exists()
