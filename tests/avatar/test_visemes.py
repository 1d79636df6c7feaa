"""ComputeVisemes: markers removed, the shared speech engine's cue, input limits."""

from __future__ import annotations

import itertools

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb
from arconv.speech.v1 import speech_pb2

from tests.avatar.conftest import AvatarClient


async def visemes(client: AvatarClient, text: str, tone: str = "") -> speech_pb2.SpeechCue:
    resp = await client.stub.ComputeVisemes(
        pb.ComputeVisemesRequest(text=text, tone=tone), metadata=client.user
    )
    return resp.cue


async def test_cue_for_text_with_markers(avatar: AvatarClient) -> None:
    cue = await visemes(avatar, "[emotion:happy,gesture:wave] Hello there! [tone:excited]")
    assert "[" not in cue.text and cue.text.startswith("Hello there!")
    assert cue.emotion == "happy" and cue.gesture == "wave"
    assert cue.tone == "excited" and cue.rate == pytest.approx(1.2)
    keys = list(cue.visemes)
    assert keys[0].name == "sil" and keys[-1].name == "sil" and keys[0].time_ms == 0
    assert all(a.time_ms < b.time_ms for a, b in itertools.pairwise(keys))
    for key in keys:
        assert speech_pb2.Viseme.Name(key.viseme) == f"VISEME_{key.name.upper()}"
        assert 0.0 <= key.weight <= 1.0
    assert cue.duration_ms >= keys[-1].time_ms > 0
    assert not cue.stream_id and cue.text_offset == 0


async def test_request_tone_wins_and_unknown_tone_is_neutral(avatar: AvatarClient) -> None:
    calm = await visemes(avatar, "[tone:excited] Take a breath.", tone="calm")
    assert calm.tone == "calm" and calm.rate == pytest.approx(0.9)
    odd = await visemes(avatar, "Take a breath.", tone="whimsical")
    assert odd.tone == "neutral" and odd.rate == pytest.approx(1.0)
    slow = await visemes(avatar, "Take a breath.", tone="calm")
    fast = await visemes(avatar, "Take a breath.", tone="excited")
    assert slow.duration_ms > fast.duration_ms


@pytest.mark.parametrize("text", ["", "   \n", "x" * 5001])
async def test_invalid_text(avatar: AvatarClient, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await visemes(avatar, text)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_longest_text_is_accepted(avatar: AvatarClient) -> None:
    cue = await visemes(avatar, ("Hello world. " * 400)[:5000])
    assert cue.duration_ms > 0


async def test_needs_a_token(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await avatar.stub.ComputeVisemes(pb.ComputeVisemesRequest(text="hi"))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_viseme_mappings_are_published_complete(avatar: AvatarClient) -> None:
    resp = await avatar.stub.GetVisemeMappings(pb.GetVisemeMappingsRequest(), metadata=avatar.user)
    names = [m.name for m in resp.oculus_to_arkit]
    assert names == [
        "sil",
        "PP",
        "FF",
        "TH",
        "DD",
        "kk",
        "CH",
        "SS",
        "nn",
        "RR",
        "aa",
        "E",
        "I",
        "O",
        "U",
    ]
    by_name = {m.name: m for m in resp.oculus_to_arkit}
    assert not by_name["sil"].blendshapes
    jaw = {b.blendshape: b.weight for b in by_name["aa"].blendshapes}
    assert jaw.get("jawOpen", 0) > 0.3
    for m in resp.oculus_to_arkit:
        assert speech_pb2.Viseme.Name(m.viseme) == f"VISEME_{m.name.upper()}"
        assert all(0 < b.weight <= 1 for b in m.blendshapes)
    assert [p.provider_viseme for p in resp.azure_to_oculus] == [str(i) for i in range(22)]
    assert resp.azure_to_oculus[0].name == "sil"
    polly = {p.provider_viseme: p.name for p in resp.polly_to_oculus}
    assert polly["p"] == "PP" and polly["f"] == "FF" and polly["sil"] == "sil"
    assert len(polly) == 17


async def test_viseme_mappings_need_a_token(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await avatar.stub.GetVisemeMappings(pb.GetVisemeMappingsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
