"""The Meshy adapter against a local server that speaks its API; failover; circuit breaker."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb

from services.avatar.description import derive
from services.avatar.domain import Agent, validate_agent
from services.avatar.mapping import agent_input
from services.avatar.providers.base import ProviderFailure
from services.avatar.providers.chain import ProviderChain, parse_routes
from services.avatar.providers.meshy import MeshyProvider
from services.avatar.providers.procedural import ProceduralProvider
from services.common.breaker import CircuitBreaker
from tests.avatar.conftest import (
    AvatarClient,
    avatar_settings,
    make_agent,
    running_avatar,
    upsert,
    watch_to_end,
)
from tests.avatar.meshy_server import MeshyServer

API_KEY = "msy-test-key"
# The procedural provider is the fallback here, never the subject.
pytestmark = pytest.mark.usefixtures("procedural_once")


@pytest.fixture
async def meshy() -> AsyncIterator[MeshyServer]:
    async with MeshyServer() as server:
        yield server


@pytest.fixture
def meshy_settings(tmp_path: Path, meshy: MeshyServer) -> Callable[..., object]:
    def make(**overrides: object) -> object:
        values: dict[str, object] = {
            "meshy_api_key": API_KEY,
            "meshy_base_url": meshy.base_url,
            "meshy_poll_interval_s": 0.01,
            "meshy_timeout_s": 10.0,
        }
        values.update(overrides)
        return avatar_settings(tmp_path, **values)

    return make


async def generate_ready(
    client: AvatarClient, agent_id: str, style: int, *, force: bool = False
) -> list[pb.Avatar]:
    await upsert(client, make_agent(agent_id, style=style))
    resp = await client.stub.GenerateAvatar(
        pb.GenerateAvatarRequest(agent_id=agent_id, force=force), metadata=client.user
    )
    assert resp.started
    return await watch_to_end(client, agent_id)


async def test_meshy_success_textured_and_rigged_with_progress(
    meshy: MeshyServer, meshy_settings
) -> None:
    async with running_avatar(meshy_settings()) as client:
        seen = await generate_ready(client, "nova", pb.AVATAR_STYLE_REALISTIC)
    final = seen[-1]
    assert final.status == pb.AVATAR_STATUS_READY, final.error
    assert final.provider == "meshy"
    assert [lod.level for lod in final.lods] == [0]
    assert final.lods[0].triangle_count == 1
    assert list(final.morph_targets) == []
    percents = [a.progress.percent for a in seen if a.progress.provider == "meshy"]
    assert percents and percents == sorted(percents)
    # preview → refine (texture) → rigging of the refined task; only the rigged GLB is fetched.
    assert [t.kind for t in meshy.tasks] == ["preview", "refine", "rig"]
    preview, refine, rig = meshy.tasks
    assert refine.body == {"mode": "refine", "preview_task_id": preview.task_id}
    assert rig.body == {"input_task_id": refine.task_id}
    assert meshy.auth == [f"Bearer {API_KEY}"] * 3
    assert meshy.asset_auth == [""]  # the key never goes to the asset host
    caps = final.capabilities
    assert caps.rigged and caps.joint_count == 2
    assert list(caps.clips) == [] and not caps.vrm and list(caps.morph_targets) == []
    body = preview.body
    assert body["mode"] == "preview" and body["art_style"] == "realistic"
    assert "Nova" in body["prompt"] and len(body["prompt"]) <= 600
    assert "full body" in body["prompt"]


async def test_meshy_without_rigging_is_used_and_says_it_cannot_move(
    meshy: MeshyServer, meshy_settings
) -> None:
    async with running_avatar(meshy_settings(meshy_rigging="off")) as client:
        seen = await generate_ready(client, "nova", pb.AVATAR_STYLE_REALISTIC)
    final = seen[-1]
    assert final.status == pb.AVATAR_STATUS_READY and final.provider == "meshy"
    assert [t.kind for t in meshy.tasks] == ["preview"] and meshy.rig_creates == 0
    assert final.HasField("capabilities")
    assert not final.capabilities.rigged and list(final.capabilities.clips) == []


@pytest.mark.parametrize("rig_mode", ["fail", "error", "unrigged", "no_url", "bad_glb"])
async def test_rigging_failure_fails_over_to_procedural(
    meshy: MeshyServer, meshy_settings, rig_mode: str
) -> None:
    """By default a model that cannot play gestures is a failure: the procedural avatar,
    rigged and animated, is used instead, and Meshy's breaker counts it."""
    meshy.rig_mode = rig_mode
    meshy.error_message = "Pose estimation failed"
    async with running_avatar(meshy_settings()) as client:
        seen = await generate_ready(client, "nova", pb.AVATAR_STYLE_REALISTIC)
    final = seen[-1]
    assert final.status == pb.AVATAR_STATUS_READY, final.error
    assert final.provider == "procedural"
    assert [lod.level for lod in final.lods] == [0, 1, 2]
    assert final.capabilities.rigged and "gesture_wave" in final.capabilities.clips
    assert meshy.creates == 1 and meshy.rig_creates == 1
    assert any(a.progress.provider == "meshy" for a in seen[:-1])


@pytest.mark.parametrize("rig_mode", ["fail", "unrigged"])
async def test_optional_rigging_keeps_the_unrigged_model(
    meshy: MeshyServer, meshy_settings, rig_mode: str
) -> None:
    meshy.rig_mode = rig_mode
    async with running_avatar(meshy_settings(meshy_rigging="optional")) as client:
        seen = await generate_ready(client, "nova", pb.AVATAR_STYLE_REALISTIC)
    final = seen[-1]
    assert final.status == pb.AVATAR_STATUS_READY, final.error
    assert final.provider == "meshy" and [lod.level for lod in final.lods] == [0]
    assert not final.capabilities.rigged and list(final.capabilities.clips) == []
    # "unrigged": the skinless "rigged" file was fetched and refused, then the preview's GLB
    assert len(meshy.asset_auth) == (2 if rig_mode == "unrigged" else 1)


@pytest.mark.parametrize(("rigging", "opens"), [("required", True), ("optional", False)])
async def test_rigging_failures_and_the_breaker(
    meshy: MeshyServer, rigging: str, opens: bool
) -> None:
    """Required rigging that fails is a Meshy failure like any other: three open the circuit.
    Optional rigging that fails still delivers a model: the circuit stays closed."""
    meshy.rig_mode = "fail"
    chain = ProviderChain(
        {"meshy": _meshy_provider(meshy, rigging), "procedural": ProceduralProvider()},
        routes=parse_routes("realistic=meshy"),
        breaker_threshold=3,
    )
    try:
        for _ in range(3):
            await chain.generate(derive(_agent()), lambda p, f: None)
        assert chain.breakers["meshy"].state == ("open" if opens else "closed")
        result = await chain.generate(derive(_agent()), lambda p, f: None)
    finally:
        await chain.aclose()
    assert result.provider == ("procedural" if opens else "meshy")
    assert meshy.creates == (3 if opens else 4)
    if opens:
        assert result.failures == ("meshy: skipped, circuit open",)
        assert result.capabilities.rigged  # the procedural avatar moves
    else:
        assert not result.capabilities.rigged and result.failures == ()


@pytest.mark.parametrize(
    ("mode", "overrides"),
    [
        ("fail", {}),
        ("error", {}),
        ("bad_glb", {"meshy_rigging": "off"}),
        ("hang", {"meshy_timeout_s": 0.3}),
    ],
)
async def test_any_meshy_failure_fails_over_to_procedural(
    meshy: MeshyServer, meshy_settings, mode: str, overrides: dict[str, object]
) -> None:
    meshy.mode = mode
    async with running_avatar(meshy_settings(**overrides)) as client:
        seen = await generate_ready(client, "atlas", pb.AVATAR_STYLE_FANTASY)
    final = seen[-1]
    assert meshy.creates == 1
    assert final.status == pb.AVATAR_STATUS_READY, final.error
    assert final.provider == "procedural"
    assert [lod.level for lod in final.lods] == [0, 1, 2]
    assert "viseme_sil" in final.morph_targets


async def test_styles_routed_to_procedural_never_call_meshy(
    meshy: MeshyServer, meshy_settings
) -> None:
    async with running_avatar(meshy_settings()) as client:
        seen = await generate_ready(client, "atlas", pb.AVATAR_STYLE_ROBOT)
    assert seen[-1].provider == "procedural"
    assert meshy.creates == 0


async def test_breaker_opens_after_three_failures(meshy: MeshyServer, meshy_settings) -> None:
    """Three realistic jobs that Meshy fails (one agent's, generated again) open the circuit:
    another agent's fantasy job, also routed to Meshy, then goes to procedural without a call."""
    meshy.mode = "error"
    async with running_avatar(meshy_settings()) as client:
        for i in range(3):
            seen = await generate_ready(client, "nova", pb.AVATAR_STYLE_REALISTIC, force=i > 0)
            assert seen[-1].provider == "procedural"
        assert meshy.creates == 3
        meshy.mode = "succeed"
        seen = await generate_ready(client, "atlas", pb.AVATAR_STYLE_FANTASY)
        assert seen[-1].status == pb.AVATAR_STATUS_READY
        assert seen[-1].provider == "procedural"
        assert meshy.creates == 3  # skipped without a call while the circuit is open


def _agent() -> Agent:
    """Nova as the service stores her with the realistic style: the procedural fallback
    makes the same model as for the service-level tests above."""
    return validate_agent(agent_input(make_agent("nova", style=pb.AVATAR_STYLE_REALISTIC)))


async def test_breaker_half_open_probe_closes_on_success(meshy: MeshyServer) -> None:
    now = [1000.0]
    meshy.mode = "error"
    chain = ProviderChain(
        {
            "meshy": MeshyProvider(
                base_url=meshy.base_url, api_key=API_KEY, poll_interval_s=0.01, timeout_s=10
            ),
            "procedural": ProceduralProvider(),
        },
        routes=parse_routes("realistic=meshy"),
        breaker_threshold=3,
        breaker_open_s=300,
        clock=lambda: now[0],
    )
    description = derive(_agent())
    try:
        for _ in range(3):
            assert (await chain.generate(description, lambda p, f: None)).provider == "procedural"
        assert chain.breakers["meshy"].state == "open"
        now[0] += 299
        await chain.generate(description, lambda p, f: None)
        assert meshy.creates == 3
        now[0] += 2
        assert chain.breakers["meshy"].state == "half_open"
        result = await chain.generate(description, lambda p, f: None)  # the probe fails
        assert result.provider == "procedural" and meshy.creates == 4
        assert chain.breakers["meshy"].state == "open"
        now[0] += 301
        meshy.mode = "succeed"
        result = await chain.generate(description, lambda p, f: None)
        assert result.provider == "meshy" and meshy.creates == 5
        assert chain.breakers["meshy"].state == "closed"
        assert result.failures == ()
    finally:
        await chain.aclose()


def _meshy_provider(meshy: MeshyServer, rigging: str = "off") -> MeshyProvider:
    return MeshyProvider(
        base_url=meshy.base_url, api_key=API_KEY, poll_interval_s=0.01, rigging=rigging
    )


async def test_meshy_progress_that_is_not_a_finite_number_is_ignored(meshy: MeshyServer) -> None:
    meshy.progress_steps = (math.nan, 20, math.inf, -math.inf, 150, 60)
    reported: list[float] = []
    provider = _meshy_provider(meshy)
    try:
        lods = await provider.generate(derive(_agent()), reported.append)
    finally:
        await provider.aclose()
    assert len(lods) == 1
    # 20, 150 (clamped to 100), 60, then SUCCEEDED at 100; NaN and the infinities are skipped.
    assert reported == pytest.approx([0.18, 0.9, 0.54, 0.9])


async def test_meshy_failure_reason_is_kept_without_control_characters(
    meshy: MeshyServer,
) -> None:
    meshy.mode = "fail"
    meshy.error_message = "bad\x00prompt\x1b[31m" + "!" * 500
    provider = _meshy_provider(meshy)
    try:
        with pytest.raises(ProviderFailure) as info:
            await provider.generate(derive(_agent()), lambda f: None)
    finally:
        await provider.aclose()
    message = str(info.value)
    assert "bad prompt [31m" in message
    assert not any(ord(c) < 32 for c in message) and len(message) < 400


def test_breaker_lets_one_probe_through_when_half_open() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, open_s=10, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    now[0] = 10
    assert breaker.allow()
    assert not breaker.allow()  # one probe at a time
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_routes_parse_and_procedural_is_always_last() -> None:
    assert parse_routes("realistic=meshy; anime = meshy,procedural ;") == {
        "realistic": ["meshy"],
        "anime": ["meshy", "procedural"],
    }
    with pytest.raises(ValueError):
        parse_routes("realistic")
    chain = ProviderChain(
        {"procedural": ProceduralProvider()},
        routes=parse_routes("anime=procedural,meshy"),
    )
    assert chain.order("anime") == ["procedural"]
    assert chain.order("robot") == ["procedural"]


@pytest.mark.parametrize(
    ("rig_mode", "reason"),
    [
        ("fail", "rigging failed: task failed: Pose estimation failed"),
        ("error", "rigging failed: HTTP 422 from /openapi/v1/rigging"),
        ("unrigged", "rigging failed: the rigged model has no skin"),
        ("no_url", "rigging failed: task succeeded without a GLB URL"),
        ("bad_glb", "rigging failed: the rigged model: not a GLB file"),
    ],
)
async def test_rigging_failure_says_why(meshy: MeshyServer, rig_mode: str, reason: str) -> None:
    meshy.rig_mode = rig_mode
    meshy.error_message = "Pose estimation failed"
    provider = _meshy_provider(meshy, "required")
    try:
        with pytest.raises(ProviderFailure) as info:
            await provider.generate(derive(_agent()), lambda f: None)
    finally:
        await provider.aclose()
    assert str(info.value).startswith(f"meshy: {reason}")


async def test_rigged_progress_rises_through_every_task(meshy: MeshyServer) -> None:
    reported: list[float] = []
    provider = _meshy_provider(meshy, "required")
    try:
        [glb] = await provider.generate(derive(_agent()), reported.append)
    finally:
        await provider.aclose()
    assert glb == meshy.rigged
    assert reported == sorted(reported) and reported[0] >= 0 and reported[-1] == pytest.approx(0.9)
    assert any(0.4 < f < 0.65 for f in reported) and any(0.65 < f < 0.9 for f in reported)
