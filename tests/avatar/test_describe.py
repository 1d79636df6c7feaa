"""DescribeCharacter: derived from the profile (persona) or from an LLM, validated, repaired."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb

from services.avatar.description import FIELDS, extract_json_object
from services.common.status import status_details
from tests.avatar.conftest import (
    AvatarClient,
    avatar_settings,
    make_agent,
    running_avatar,
    upsert,
    watch_to_end,
)
from tests.llm.openai_server import OpenAICompatServer, Script

GOOD = {
    "summary": "A slim anime-style guide with a violet ponytail and teal eyes.",
    "skin_color": "#F1C7A5",
    "hair_color": "#6a5acd",
    "eye_color": "#40e0d0",
    "clothing_color": "silver",
    "accent_color": "#ffd700",
    "hair_style": "ponytail",
    "body_type": "slim",
    "accessories": ["earrings", "glasses"],
    "expression_baseline": "happy",
}


async def describe(client: AvatarClient, agent_id: str = "nova") -> pb.CharacterDescription:
    resp = await client.stub.DescribeCharacter(
        pb.DescribeCharacterRequest(agent_id=agent_id), metadata=client.user
    )
    return resp.description


@pytest.fixture
async def llm_server() -> AsyncIterator[OpenAICompatServer]:
    async with OpenAICompatServer() as server:
        yield server


@pytest.fixture
async def llm_avatar(tmp_path: Path, llm_server: OpenAICompatServer) -> AsyncIterator[AvatarClient]:
    settings = avatar_settings(
        tmp_path,
        llm_provider="openai",
        llm_base_url=llm_server.base_url,
        llm_api_key="sk-test",
        llm_model="test-model",
        llm_timeout_s=5,
    )
    async with running_avatar(settings) as client:
        await upsert(client, make_agent())
        yield client


async def test_persona_derives_the_description_from_the_profile(avatar: AvatarClient) -> None:
    await upsert(avatar, make_agent())
    d = await describe(avatar)
    assert d.source == "persona" and not d.repaired_fields
    assert d.agent_id == "nova" and d.style == pb.AVATAR_STYLE_CARTOON
    assert d.hair_color == "#7b3f26"  # auburn
    assert d.eye_color == "#40e0d0"
    assert d.clothing_color == "#2e8b57"  # "green hoodie"
    assert d.accent_color == "#6a5acd"  # second palette colour
    assert d.hair_style == "ponytail" and d.body_type == "slim"
    assert list(d.accessories) == ["glasses", "headband"]  # circlet → headband
    assert d.expression_baseline == "happy"
    assert "Nova" in d.summary and len(d.summary) <= 1000
    assert d == await describe(avatar)


async def test_persona_describes_a_robot(avatar: AvatarClient) -> None:
    agent = make_agent("atlas", style=pb.AVATAR_STYLE_ROBOT, hair_style="", hair_color="")
    agent.appearance.species = "robot"
    await upsert(avatar, agent)
    d = await describe(avatar, "atlas")
    assert d.skin_color == "#8a9299" and d.hair_style == "bald"


async def test_llm_json_is_used_when_valid(
    llm_avatar: AvatarClient, llm_server: OpenAICompatServer
) -> None:
    llm_server.script = Script(content=json.dumps(GOOD))
    d = await describe(llm_avatar)
    assert d.source == "openai" and not d.repaired_fields
    assert d.summary == GOOD["summary"]
    assert d.skin_color == "#f1c7a5" and d.clothing_color == "#c0c0c0"
    assert list(d.accessories) == ["earrings", "glasses"]
    request = llm_server.last
    assert request.model == "test-model"
    assert request.body.get("response_format") == {"type": "json_object"}
    assert request.messages[0]["role"] == "system"
    assert json.loads(request.messages[1]["content"])["name"] == "Nova"


async def test_partial_llm_json_is_repaired_field_by_field(
    llm_avatar: AvatarClient, llm_server: OpenAICompatServer
) -> None:
    partial = {
        "summary": "  A tall elf\nwith silver hair. ",
        "hair_color": "Silver",
        "hair_style": "mohawk-ish",
        "skin_color": 42,
        "eye_color": "#GGGGGG",
        "body_type": "SLIM",
        "accessories": ["glasses", "laser"],
        "expression_baseline": "smug",
        "clothing_color": "#" + "a" * 10_000,
    }
    text = f"Sure! Here it is:\n```json\n{json.dumps(partial)}\n```\nAnything else?"
    llm_server.script = Script(content=text)
    d = await describe(llm_avatar)
    assert d.summary == "A tall elf with silver hair."
    assert d.hair_color == "#c0c0c0" and d.body_type == "slim"
    assert set(d.repaired_fields) == {
        "hair_style",
        "skin_color",
        "eye_color",
        "accessories",
        "expression_baseline",
        "clothing_color",
        "accent_color",
    }
    assert d.hair_style == "ponytail" and d.eye_color == "#40e0d0"  # from the profile
    assert list(d.accessories) == ["glasses", "headband"]
    assert d.expression_baseline == "happy" and d.clothing_color == "#2e8b57"


@pytest.mark.parametrize(
    "content",
    [
        "I'm sorry, I can't help with that.",
        "[1, 2, 3]",
        '{"summary": ' + json.dumps("x" * 5000) + "}",
        "{" * 10_000,
        json.dumps({k: None for k in FIELDS}),
    ],
)
async def test_garbage_llm_output_falls_back_to_the_profile(
    llm_avatar: AvatarClient, llm_server: OpenAICompatServer, content: str
) -> None:
    llm_server.script = Script(content=content)
    d = await describe(llm_avatar)
    assert d.source == "openai"
    assert set(d.repaired_fields) == set(FIELDS)
    assert d.hair_color == "#7b3f26" and len(d.summary) <= 1000


async def test_llm_error_is_unavailable(
    llm_avatar: AvatarClient, llm_server: OpenAICompatServer
) -> None:
    llm_server.script = Script(status=503)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await describe(llm_avatar)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert any(getattr(d, "reason", "") == "LLM_UNAVAILABLE" for d in status_details(exc.value))
    # Generation does not depend on the LLM: it uses the profile-derived description.
    await llm_avatar.stub.GenerateAvatar(
        pb.GenerateAvatarRequest(agent_id="nova"), metadata=llm_avatar.user
    )
    seen = await watch_to_end(llm_avatar, "nova")
    assert seen[-1].status == pb.AVATAR_STATUS_READY, seen[-1].error


async def test_describe_unknown_agent(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await describe(avatar, "ghost")
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await describe(avatar, "Bad!")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_extract_json_object_tolerates_prose() -> None:
    assert extract_json_object('x {"a": 1} y {"b": 2}') == {"a": 1}
    assert extract_json_object('{bad} then {"ok": true}') == {"ok": True}
    assert extract_json_object("no json") is None
