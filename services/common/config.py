"""Settings from environment variables (prefix ARCONV_), validated at start-up."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "arconv-development-secret-not-for-production"
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
MIN_SECRET_CHARS = 32


def derive_secret(secret: str, purpose: str) -> str:
    """A key for `purpose` ("service", "page") derived from `secret`: the development default
    of the service and page-token keys, so processes sharing ARCONV_JWT_SECRET agree."""
    label = f"arconv.{purpose}.v1".encode()
    return hmac.new(secret.encode(), label, hashlib.sha256).hexdigest()


DEFAULT_PORTS = {
    "rooms": 50051,
    "stream": 50052,
    "avatar": 50053,
    "token": 50054,
    "voice": 50055,
}
DEFAULT_METRICS_PORTS = {
    "rooms": 9451,
    "stream": 9452,
    "avatar": 9453,
    "token": 9454,
    "voice": 9455,
}


class ConfigError(ValueError):
    """A setting is missing or unsafe; the message says which variable to change."""


class Settings(BaseSettings):
    """Settings every service shares. Each service extends this class."""

    model_config = SettingsConfigDict(env_prefix="ARCONV_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    # None: the service's default metrics port; -1 disables the metrics endpoint.
    metrics_port: int | None = Field(default=None, ge=-1, le=65535)
    var_dir: Path = Path("var")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "arconv"
    jwt_audience: str = "arconv"
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)
    # Users' tokens from an identity provider, verified with the keys at this URL (HTTPS in
    # production); empty: HS256 user tokens signed with ARCONV_JWT_SECRET (development).
    jwt_jwks_url: str = ""
    jwt_algorithms: str = "RS256,ES256,EdDSA"
    jwt_jwks_refresh_s: float = Field(default=300, ge=1)
    jwt_jwks_max_age_s: float = Field(default=3600, ge=1)
    jwt_jwks_min_refetch_s: float = Field(default=30, ge=0)
    jwt_jwks_timeout_s: float = Field(default=5, gt=0, le=60)
    # Service tokens' and page tokens' keys; empty: derived from ARCONV_JWT_SECRET (development
    # only, refused in production).
    service_jwt_secret: str = ""
    page_token_secret: str = ""
    service_token_ttl_s: int = Field(default=600, ge=60, le=86400)

    rooms_addr: str = f"127.0.0.1:{DEFAULT_PORTS['rooms']}"
    stream_addr: str = f"127.0.0.1:{DEFAULT_PORTS['stream']}"
    avatar_addr: str = f"127.0.0.1:{DEFAULT_PORTS['avatar']}"
    token_addr: str = f"127.0.0.1:{DEFAULT_PORTS['token']}"
    voice_addr: str = f"127.0.0.1:{DEFAULT_PORTS['voice']}"
    call_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # Attempts of an idempotent service-to-service call answered UNAVAILABLE (the channels'
    # gRPC retry policy; gRPC allows at most 5). 1 turns retries off.
    call_attempts: int = Field(default=3, ge=1, le=5)

    database_url: str = ""
    redis_url: str = ""
    migrate_on_start: bool = True

    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    keepalive_time_s: int = Field(default=30, ge=1)
    keepalive_timeout_s: int = Field(default=10, ge=1)
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    # Seconds between going NOT_SERVING and refusing new calls on SIGTERM, long enough for a
    # balancer's health checks to stop sending calls here (make cluster: its edge's checks).
    # A call that arrives after the stop starts is cancelled by gRPC before any handler sees it.
    shutdown_drain_delay_s: float = Field(default=0.0, ge=0, le=60)
    # 0: connections live for ever. Otherwise a connection is told to go (GOAWAY) at this age,
    # so clients reconnect and spread over new replicas; its open streams get the grace, then
    # end UNAVAILABLE (clients resume with their cursor).
    max_connection_age_s: float = Field(default=0, ge=0)
    max_connection_age_grace_s: float = Field(default=300, ge=0)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("ARCONV_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return v

    @field_validator("jwt_algorithms")
    @classmethod
    def _algorithms(cls, v: str) -> str:
        names = [a.strip() for a in v.split(",") if a.strip()]
        unknown = [a for a in names if a not in JWT_ALGORITHMS]
        if not names or unknown:
            raise ValueError(
                f"ARCONV_JWT_ALGORITHMS must list some of {', '.join(JWT_ALGORITHMS)}"
                f" (comma-separated); not {', '.join(unknown) or 'empty'}"
            )
        return ",".join(names)

    @model_validator(mode="after")
    def _production_guards(self) -> Settings:
        if self.jwt_jwks_max_age_s < self.jwt_jwks_refresh_s:
            raise ConfigError(
                "ARCONV_JWT_JWKS_MAX_AGE_S must be at least ARCONV_JWT_JWKS_REFRESH_S"
            )
        if self.jwt_jwks_url and not self.jwt_jwks_url.startswith(("https://", "http://")):
            raise ConfigError(f"ARCONV_JWT_JWKS_URL {self.jwt_jwks_url!r} is not an HTTP(S) URL")
        if self.env != "production":
            return self
        problems = []
        if not self.jwt_jwks_url and (
            self.jwt_secret == DEV_JWT_SECRET or len(self.jwt_secret) < MIN_SECRET_CHARS
        ):
            problems.append(
                "ARCONV_JWT_SECRET is the development secret or shorter than 32 characters;"
                " set a random secret of at least 32 characters in production, or"
                " ARCONV_JWT_JWKS_URL to take users' tokens from an identity provider"
            )
        if self.jwt_jwks_url and not self.jwt_jwks_url.startswith("https://"):
            problems.append("ARCONV_JWT_JWKS_URL must be an https:// URL in production")
        for name, value in (
            ("ARCONV_SERVICE_JWT_SECRET", self.service_jwt_secret),
            ("ARCONV_PAGE_TOKEN_SECRET", self.page_token_secret),
        ):
            if len(value) < MIN_SECRET_CHARS or value in (self.jwt_secret, DEV_JWT_SECRET):
                problems.append(
                    f"{name} is missing, shorter than 32 characters or the same as"
                    " ARCONV_JWT_SECRET; set its own random secret of at least 32 characters"
                    " in production"
                )
        if self.service_jwt_secret and self.service_jwt_secret == self.page_token_secret:
            problems.append("ARCONV_SERVICE_JWT_SECRET and ARCONV_PAGE_TOKEN_SECRET must differ")
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def service_secret(self) -> str:
        """The key of service tokens: ARCONV_SERVICE_JWT_SECRET, or derived in development."""
        return self.service_jwt_secret or derive_secret(self.jwt_secret, "service")

    def page_secret(self) -> str:
        """The key of page tokens: ARCONV_PAGE_TOKEN_SECRET, or derived in development."""
        return self.page_token_secret or derive_secret(self.jwt_secret, "page")

    def algorithms(self) -> tuple[str, ...]:
        return tuple(self.jwt_algorithms.split(","))

    def service_database_url(self, service: str) -> str:
        """The SQLAlchemy URL for `service`: ARCONV_DATABASE_URL or a SQLite file under var/."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{self.var_dir / f'{service}.db'}"


_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}


def normalize_database_url(url: str) -> str:
    """Rewrites known drivers to the async ones this project ships; refuses others."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"ARCONV_DATABASE_URL {url!r} is not a URL (postgresql://...)")
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise ConfigError(
            f"ARCONV_DATABASE_URL driver {scheme!r} is not supported; use postgresql:// or sqlite://"
        )
    return f"{driver}://{rest}"


def load_settings(cls: type[Settings], service: str) -> Settings:
    """Reads the environment into `cls`, filling per-service default ports."""
    settings = cls()
    if settings.port == 0 and "ARCONV_PORT" not in _env():
        settings.port = DEFAULT_PORTS[service]
    if settings.metrics_port is None:
        settings.metrics_port = DEFAULT_METRICS_PORTS[service]
    return settings


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
