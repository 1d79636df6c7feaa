"""The token service: settings, wiring and entry point.

Configuration (besides the shared ARCONV_ variables):

- ARCONV_TOKEN_KEYS: Ed25519 signing keys, a directory of `<kid>.pem` files or a JSON list of
  {kid, pem} (see services/token/keys.py). Required in production; the default is a
  development key generated under var/token-keys/.
- ARCONV_TOKEN_ISSUER (arconv-token), ARCONV_TOKEN_AUDIENCE (arconv-tts): `iss` and `aud`.
- ARCONV_TOKEN_TTL_S (300): token lifetime; ARCONV_TOKEN_LEEWAY_S (10): clock skew allowed
  on exp and nbf; ARCONV_TOKEN_MAX_INPUT_LENGTH (5000): characters per TTS request.
- ARCONV_TOKEN_ISSUE_PER_MINUTE (30), ARCONV_TOKEN_REFRESH_PER_MINUTE (30): calls per user.
- ARCONV_TOKEN_PLANS: JSON, plan name -> {daily_characters, requests_per_token_per_hour};
  default {"free": {"daily_characters": 10000, "requests_per_token_per_hour": 100}}.
- ARCONV_TOKEN_USER_PLANS: JSON, user id -> plan name (default {}).
- ARCONV_TOKEN_DEFAULT_PLAN (free): the plan of every other user.
- ARCONV_TOKEN_KV_PREFIX (arconv:token:): key prefix in Redis (ARCONV_REDIS_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from arconv.token.v1 import token_service_pb2_grpc
from pydantic import BaseModel, Field, model_validator

from services.common.app import run_service
from services.common.clients import ServiceChannels
from services.common.config import ConfigError, Settings
from services.common.db import create_engine, migrate, sessionmaker
from services.common.errors import Unavailable
from services.common.kv import KV, open_kv
from services.common.server import ServiceSpec
from services.token.codec import TokenCodec
from services.token.directory import CachedDirectory, GrpcDirectory
from services.token.domain import Plan
from services.token.keys import load_keys
from services.token.limits import Limits
from services.token.repository import TokenRepository
from services.token.service import PlanBook, TokenService
from services.token.servicer import TokenInternalServicer, TokenServicer

log = logging.getLogger("arconv.token")

SERVICE = "arconv.token.v1.TokenService"
PUBLIC_METHODS = ("/arconv.token.v1.TokenService/GetJwks",)


class PlanLimits(BaseModel):
    daily_characters: int = Field(ge=0, le=10**12)
    requests_per_token_per_hour: int = Field(ge=0, le=10**9)


def _default_plans() -> dict[str, PlanLimits]:
    return {"free": PlanLimits(daily_characters=10_000, requests_per_token_per_hour=100)}


class TokenSettings(Settings):
    token_keys: str = ""
    token_issuer: str = Field(default="arconv-token", min_length=1)
    token_audience: str = Field(default="arconv-tts", min_length=1)
    token_ttl_s: int = Field(default=300, ge=30, le=3600)
    token_leeway_s: int = Field(default=10, ge=0, le=60)
    token_max_input_length: int = Field(default=5000, ge=1, le=1_000_000)
    token_issue_per_minute: int = Field(default=30, ge=1)
    token_refresh_per_minute: int = Field(default=30, ge=1)
    token_plans: dict[str, PlanLimits] = Field(default_factory=_default_plans)
    token_user_plans: dict[str, str] = Field(default_factory=dict)
    token_default_plan: str = "free"
    token_kv_prefix: str = "arconv:token:"
    token_voice_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)

    @model_validator(mode="after")
    def _token_guards(self) -> TokenSettings:
        if not self.token_plans:
            raise ConfigError("ARCONV_TOKEN_PLANS must define at least one plan")
        if self.token_default_plan not in self.token_plans:
            raise ConfigError(
                f"ARCONV_TOKEN_DEFAULT_PLAN {self.token_default_plan!r}"
                " is not a plan of ARCONV_TOKEN_PLANS"
            )
        unknown = sorted({p for p in self.token_user_plans.values() if p not in self.token_plans})
        if unknown:
            raise ConfigError(f"ARCONV_TOKEN_USER_PLANS names unknown plans: {', '.join(unknown)}")
        if self.env == "production" and not self.token_keys.strip():
            raise ConfigError(
                "ARCONV_TOKEN_KEYS is not set; production refuses the generated development key."
                " Point it at a directory of <kid>.pem Ed25519 keys or a JSON list of {kid, pem}"
            )
        return self

    def plan_book(self) -> PlanBook:
        plans = {
            name: Plan(name, p.daily_characters, p.requests_per_token_per_hour)
            for name, p in self.token_plans.items()
        }
        return PlanBook(
            plans=plans, user_plans=dict(self.token_user_plans), default=self.token_default_plan
        )


@contextlib.asynccontextmanager
async def open_spec(
    settings: TokenSettings,
    *,
    kv: KV | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[ServiceSpec]:
    """Loads the keys, opens the database (migrating it when asked), the key-value store and
    the clients, and yields the spec. A given `kv` is used as is and left open."""
    keys = load_keys(
        settings.token_keys, var_dir=settings.var_dir, production=settings.env == "production"
    )
    url = settings.service_database_url("token")
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate, "token", url)
    engine = create_engine(url)
    own_kv = kv is None
    store = open_kv(settings, prefix=settings.token_kv_prefix) if kv is None else kv
    channels = ServiceChannels(settings, "token")
    try:
        service = TokenService(
            codec=TokenCodec(
                keys,
                issuer=settings.token_issuer,
                audience=settings.token_audience,
                ttl_s=settings.token_ttl_s,
                leeway_s=settings.token_leeway_s,
                max_input_length=settings.token_max_input_length,
            ),
            keys=keys,
            limits=Limits(
                store,
                issue_per_minute=settings.token_issue_per_minute,
                refresh_per_minute=settings.token_refresh_per_minute,
            ),
            repo=TokenRepository(sessionmaker(engine)),
            directory=CachedDirectory(
                GrpcDirectory(channels, lambda: (settings.rooms_addr, settings.avatar_addr)),
                ttl_s=settings.token_voice_cache_ttl_s,
            ),
            plans=settings.plan_book(),
            clock=clock,
        )
        try:
            await service.restore_revocations()
        except Unavailable as exc:
            # Not fatal: without the loaded marker, the first revocation check loads them.
            log.warning("revocations not loaded at start-up: %s", exc.message)
        servicer = TokenServicer(service=service)

        def register(server: grpc.aio.Server) -> None:
            token_service_pb2_grpc.add_TokenServiceServicer_to_server(servicer, server)
            token_service_pb2_grpc.add_TokenInternalServiceServicer_to_server(
                TokenInternalServicer(service=service), server
            )

        yield ServiceSpec(
            name="token",
            grpc_service=SERVICE,
            register=register,
            public_methods=PUBLIC_METHODS,
        )
    finally:
        await channels.close()
        if own_kv:
            await store.close()
        await engine.dispose()


def main() -> None:
    run_service("token", TokenSettings, open_spec)
