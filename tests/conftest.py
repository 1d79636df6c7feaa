"""Shared fixtures: settings, tokens, real in-process servers, the real PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from services.common.auth import JwtAuthority
from services.common.config import Settings
from services.common.server import RunningServer, ServiceSpec, authority_from, create_server

if TYPE_CHECKING:
    from tests.common.databases import DatabasePool

REQUIRE_SERVICES = os.environ.get("ARCONV_REQUIRE_SERVICES") == "1"
TEST_DATABASE_URL = os.environ.get(
    "ARCONV_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("ARCONV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, why: object) -> None:
    msg = f"{what} is not reachable ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{msg}; ARCONV_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(f"{msg}; set ARCONV_REQUIRE_SERVICES=1 to make this a failure")


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "var_dir": tmp_path,
        "metrics_port": -1,
        "log_format": "text",
        "shutdown_grace_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def authority(settings: Settings) -> JwtAuthority:
    return authority_from(settings)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def user_md(authority: JwtAuthority) -> Callable[[str], tuple[tuple[str, str], ...]]:
    """Call metadata for a user: `user_md("alice")`."""

    def make(user: str) -> tuple[tuple[str, str], ...]:
        return bearer(authority.mint(user, ttl_s=600))

    return make


@pytest.fixture
def service_md(authority: JwtAuthority) -> Callable[..., tuple[tuple[str, str], ...]]:
    """Call metadata for a service, optionally acting for a user."""

    def make(user: str | None = None) -> tuple[tuple[str, str], ...]:
        md = bearer(authority.mint("service:test", ttl_s=600, role="service"))
        return (*md, ("x-arconv-user", user)) if user else md

    return make


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Starts real grpc.aio servers on port 0; stops them at teardown."""
    running: list[RunningServer] = []

    async def start(settings: Settings, spec: ServiceSpec) -> RunningServer:
        srv = await create_server(settings, spec, port=0)
        running.append(srv)
        return srv

    yield start
    for srv in reversed(running):
        await srv.stop(0)


@contextlib.asynccontextmanager
async def channel(port: int) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch


# --- the real PostgreSQL and Redis ---------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    import psycopg

    url = TEST_DATABASE_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        _unavailable("PostgreSQL at ARCONV_TEST_DATABASE_URL", exc)
    return url


@pytest.fixture(scope="session")
def pg_databases(pg_admin_url: str) -> Iterator[DatabasePool]:
    """This process's pool of per-test databases, dropped when the session ends."""
    from tests.common.databases import DatabasePool

    pool = DatabasePool(pg_admin_url)
    yield pool
    pool.close()


@pytest.fixture
def pg_url(pg_databases: DatabasePool) -> Iterator[str]:
    """An empty PostgreSQL database that no other test uses meanwhile (from the pool)."""
    with pg_databases.database() as url:
        yield f"postgresql+psycopg://{url.split('://', 1)[1]}"


@pytest.fixture(scope="session")
def redis_base_url() -> str:
    import redis

    try:
        client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        _unavailable("Redis at ARCONV_TEST_REDIS_URL", exc)
    return TEST_REDIS_URL


@contextlib.contextmanager
def redis_key_prefix(redis_url: str) -> Iterator[str]:
    """A new key prefix on the Redis server at `redis_url`; its keys are deleted afterwards."""
    import redis

    prefix = f"arconv-test:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def redis_prefix(redis_base_url: str) -> Iterator[str]:
    """A unique key prefix for one test; its keys are deleted afterwards."""
    with redis_key_prefix(redis_base_url) as prefix:
        yield prefix


class FakeClock:
    """A clock that moves only when a test sets `now` (seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# (spec, lod) -> the GLB and the progress the generator reported while making it.
_PROCEDURAL_MODELS: dict[tuple[object, int], tuple[bytes, list[tuple[str, float]]]] = {}


@pytest.fixture
def procedural_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The avatar service's procedural provider makes each (spec, LOD) once per test process
    and gives the same bytes and progress reports again after that.

    The generator is deterministic (tests/avatar/test_procedural.py checks that one spec
    gives one file), so a test about jobs, failover, storage or the breaker gets the very
    bytes it would have generated, without a second of CPU per avatar. Not for a test that
    needs a generation to take time (to watch it run, or to act while it runs).
    """
    from services.avatar.providers import procedural

    real = procedural.generate_glb

    def generate(spec: Any, lod: int = 0, progress: Any = None) -> bytes:
        made = _PROCEDURAL_MODELS.get((spec, lod))
        if made is None:
            reports: list[tuple[str, float]] = []

            def record(stage: str, fraction: float) -> None:
                reports.append((stage, fraction))
                if progress is not None:
                    progress(stage, fraction)

            made = _PROCEDURAL_MODELS[(spec, lod)] = (real(spec, lod, record), reports)
        elif progress is not None:
            for stage, fraction in made[1]:
                progress(stage, fraction)
        return made[0]

    monkeypatch.setattr(procedural, "generate_glb", generate)


@pytest.fixture
def procedural_held(
    procedural_once: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[threading.Event]:
    """procedural_once, with every generation held inside the provider until the test sets
    the event it returns: the test acts while a job is certainly running, without relying
    on how long a generation takes."""
    from services.avatar.providers import procedural

    release = threading.Event()
    once = procedural.generate_glb

    def held(spec: Any, lod: int = 0, progress: Any = None) -> bytes:
        if not release.wait(60):
            raise TimeoutError("the test never let the generation go on")
        return once(spec, lod, progress)

    monkeypatch.setattr(procedural, "generate_glb", held)
    yield release
    release.set()  # a test that failed before letting it go must not leave a thread waiting
