"""The avatar service: settings, wiring and entry point."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import grpc
from arconv.avatar.v1 import avatar_service_pb2_grpc
from pydantic import Field, field_validator, model_validator

from services.avatar.description import Describer
from services.avatar.domain import AGENTS_PAGE_DEFAULT, AGENTS_PAGE_MAX
from services.avatar.generation import AvatarManager, WorkerConfig
from services.avatar.mapping import ModelLinks
from services.avatar.providers.base import ModelProvider
from services.avatar.providers.chain import ProviderChain, parse_routes
from services.avatar.providers.meshy import MeshyProvider
from services.avatar.providers.procedural import ProceduralProvider
from services.avatar.repository import AgentRepository, AvatarRepository
from services.avatar.service import AvatarService
from services.avatar.servicer import AvatarInternalServicer, AvatarServicer
from services.avatar.storage import FileModelStore, ModelStore
from services.common.app import run_service
from services.common.config import ConfigError, Settings
from services.common.db import create_engine, migrate_async, sessionmaker
from services.common.paging import Pages
from services.common.server import ServiceSpec
from services.llm import LLMProvider, build_provider

SERVICE = "arconv.avatar.v1.AvatarService"
PUBLIC_METHODS = ()


class AvatarSettings(Settings):
    """ARCONV_ variables of the avatar service (the LLM ones are shared with stream)."""

    llm_provider: Literal["persona", "openai"] = "persona"
    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_model: str = ""
    llm_timeout_s: float = Field(default=30.0, gt=0, le=600)

    model_dir: Path | None = None  # default: <var_dir>/models
    model_base_url: str = ""
    # Where models live: files under model_dir (one machine), or an S3-compatible bucket
    # shared by every replica (credentials: the standard AWS_* variables or the role).
    model_store: Literal["files", "s3"] = "files"
    s3_endpoint_url: str = ""  # empty: AWS S3
    s3_bucket: str = ""
    s3_region: str = ""
    s3_prefix: str = "models/"
    s3_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Lifetime of the presigned download URLs in AvatarLod.url (SigV4 allows up to 7 days).
    model_url_ttl_s: int = Field(default=3600, ge=60, le=7 * 86400)

    avatar_max_generations: int = Field(default=5, ge=1, le=1000)
    avatar_workers: int = Field(default=2, ge=1, le=32)
    avatar_lease_s: float = Field(default=60.0, ge=1, le=3600)
    avatar_max_resumes: int = Field(default=3, ge=0, le=100)
    avatar_watch_poll_s: float = Field(default=1.0, gt=0, le=60)
    avatar_max_model_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # STYLE=PROVIDER[,PROVIDER];... — providers tried before `procedural`, which is always last.
    avatar_routes: str = "realistic=meshy;fantasy=meshy;anime=meshy"
    avatar_breaker_threshold: int = Field(default=3, ge=1, le=100)
    avatar_breaker_open_s: float = Field(default=300.0, ge=0, le=86400)

    meshy_api_key: str = ""
    meshy_base_url: str = "https://api.meshy.ai"
    meshy_poll_interval_s: float = Field(default=5.0, gt=0, le=300)
    meshy_timeout_s: float = Field(default=600.0, gt=0, le=7200)
    # After text-to-3D: "required" (rigging fails → fail over to procedural), "optional"
    # (rigging fails → keep the unrigged mesh), "off" (never rig).
    meshy_rigging: Literal["required", "optional", "off"] = "required"

    @model_validator(mode="after")
    def _model_store(self) -> AvatarSettings:
        if self.model_store == "s3":
            if not self.s3_bucket:
                raise ConfigError("ARCONV_MODEL_STORE=s3 needs ARCONV_S3_BUCKET")
            if self.env == "production" and self.s3_endpoint_url.startswith("http://"):
                raise ConfigError(
                    "ARCONV_S3_ENDPOINT_URL must be https:// in production (download URLs"
                    " carry signatures)"
                )
        return self

    @field_validator("model_base_url", "meshy_base_url", "llm_base_url", "s3_endpoint_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        v = v.strip()
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("avatar_routes")
    @classmethod
    def _routes(cls, v: str) -> str:
        parse_routes(v)
        return v

    def models_path(self) -> Path:
        return self.model_dir or self.var_dir / "models"


async def open_store(settings: AvatarSettings) -> ModelStore:
    """The configured model store; an S3 bucket is checked before the service starts."""
    if settings.model_store == "files":
        return FileModelStore(settings.models_path())
    from services.avatar.s3store import S3ModelStore, S3StoreError

    store = S3ModelStore(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        url_ttl_s=settings.model_url_ttl_s,
        timeout_s=settings.s3_timeout_s,
    )
    try:
        await store.check()
    except S3StoreError as exc:
        raise ConfigError(str(exc)) from exc
    return store


def build_llm(settings: AvatarSettings) -> LLMProvider | None:
    """The LLM that describes characters; None for the embedded persona (no LLM call)."""
    if settings.llm_provider == "persona":
        return None
    try:
        return build_provider(
            settings.llm_provider,
            base_url=settings.llm_base_url or None,
            api_key=settings.llm_api_key,
            model=settings.llm_model,
            timeout_s=settings.llm_timeout_s,
        )
    except ValueError as exc:
        raise ConfigError(f"ARCONV_LLM_*: {exc}") from exc


def build_chain(settings: AvatarSettings) -> ProviderChain:
    providers: dict[str, ModelProvider] = {"procedural": ProceduralProvider()}
    if settings.meshy_api_key:
        providers["meshy"] = MeshyProvider(
            base_url=settings.meshy_base_url,
            api_key=settings.meshy_api_key,
            poll_interval_s=settings.meshy_poll_interval_s,
            timeout_s=settings.meshy_timeout_s,
            max_bytes=settings.avatar_max_model_bytes,
            rigging=settings.meshy_rigging,
        )
    return ProviderChain(
        providers,
        routes=parse_routes(settings.avatar_routes),
        breaker_threshold=settings.avatar_breaker_threshold,
        breaker_open_s=settings.avatar_breaker_open_s,
        max_model_bytes=settings.avatar_max_model_bytes,
    )


@contextlib.asynccontextmanager
async def open_spec(settings: AvatarSettings) -> AsyncIterator[ServiceSpec]:
    url = settings.service_database_url("avatar")
    if settings.migrate_on_start:
        await migrate_async("avatar", url)
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    llm = build_llm(settings)
    chain = build_chain(settings)
    agents = AgentRepository(sessions)
    describer = Describer(llm, model=settings.llm_model)
    store = await open_store(settings)
    manager = AvatarManager(
        agents=agents,
        avatars=AvatarRepository(sessions),
        describer=describer,
        chain=chain,
        store=store,
        config=WorkerConfig(
            max_generations=settings.avatar_max_generations,
            workers=settings.avatar_workers,
            lease_s=settings.avatar_lease_s,
            max_resumes=settings.avatar_max_resumes,
            watch_poll_s=settings.avatar_watch_poll_s,
        ),
    )
    service = AvatarService(
        agents=agents,
        avatars=manager,
        describer=describer,
        pages=Pages(
            settings.page_secret(),
            "agents",
            default=AGENTS_PAGE_DEFAULT,
            maximum=AGENTS_PAGE_MAX,
            clamp=True,
        ),
    )
    servicer = AvatarServicer(service=service, links=ModelLinks(settings.model_base_url, store))

    def register(server: grpc.aio.Server) -> None:
        avatar_service_pb2_grpc.add_AvatarServiceServicer_to_server(servicer, server)
        avatar_service_pb2_grpc.add_AvatarInternalServiceServicer_to_server(
            AvatarInternalServicer(service=service), server
        )

    try:
        from services.speech import warm_up

        await asyncio.to_thread(warm_up)
        await manager.start()
        yield ServiceSpec(
            name="avatar",
            grpc_service=SERVICE,
            register=register,
            public_methods=PUBLIC_METHODS,
        )
    finally:
        await manager.stop()
        await chain.aclose()
        if llm is not None:
            await llm.aclose()
        await engine.dispose()


def main() -> None:
    run_service("avatar", AvatarSettings, open_spec)
