"""UpsertAgent, GetAgent, ListAgents: validation, auth, pagination; on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from arconv.avatar.v1 import avatar_service_pb2 as pb
from google.rpc import error_details_pb2

from services.avatar.demo import DEMO_AGENTS
from services.common.status import status_details
from tests.avatar.conftest import AvatarClient, make_agent, upsert


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    for d in status_details(err):
        if isinstance(d, error_details_pb2.BadRequest):
            return {v.field: v.description for v in d.field_violations}
    return {}


async def test_upsert_then_get_round_trips(avatar: AvatarClient) -> None:
    first = await upsert(avatar, make_agent())
    assert first.created
    assert first.agent.appearance.accessories == ["glasses", "circlet"]
    assert first.agent.create_time.seconds > 0
    again = await upsert(avatar, make_agent(name="Nova Two"))
    assert not again.created
    assert again.agent.create_time == first.agent.create_time
    got = await avatar.stub.GetAgent(pb.GetAgentRequest(agent_id="nova"), metadata=avatar.user)
    assert got.agent.name == "Nova Two"
    assert got.agent.voice.voice_id == "nova-bright"
    assert got.agent.appearance.style == pb.AVATAR_STYLE_CARTOON
    assert got.agent.appearance.expression_baseline == "happy"


async def test_demo_agents_are_valid(avatar: AvatarClient) -> None:
    for agent in DEMO_AGENTS:
        assert (await upsert(avatar, agent)).created
    listed = await avatar.stub.ListAgents(pb.ListAgentsRequest(), metadata=avatar.user)
    assert [a.agent_id for a in listed.agents] == ["atlas", "nova", "willow"]
    assert len({a.appearance.style for a in listed.agents}) == 3


async def test_upsert_with_user_token_is_denied(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await avatar.internal.UpsertAgent(
            pb.UpsertAgentRequest(agent=make_agent()), metadata=avatar.user
        )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_missing_token_is_unauthenticated(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await avatar.stub.GetAgent(pb.GetAgentRequest(agent_id="nova"))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_every_bad_field_is_listed(avatar: AvatarClient) -> None:
    agent = make_agent(
        "Bad Id!",
        style=pb.AVATAR_STYLE_UNSPECIFIED,
        height_cm=12,
        hair_color="plaid",
        eye_color="#12345",
        expression_baseline="smug",
        clothing="x" * 201,
    )
    agent.name = ""
    agent.appearance.accessories.extend(["a"] * 9)
    agent.appearance.color_palette[:] = ["#zzzzzz"]
    agent.voice.provider = "Eleven Labs"
    agent.voice.voice_id = "bad\nid"
    agent.persona.system_prompt = "p" * 8001
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upsert(avatar, agent)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(exc.value)) == {
        "agent.agent_id",
        "agent.name",
        "agent.persona.system_prompt",
        "agent.appearance.style",
        "agent.appearance.height_cm",
        "agent.appearance.hair_color",
        "agent.appearance.eye_color",
        "agent.appearance.expression_baseline",
        "agent.appearance.clothing",
        "agent.appearance.accessories",
        "agent.appearance.color_palette[0]",
        "agent.voice.provider",
        "agent.voice.voice_id",
    }
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await avatar.stub.GetAgent(pb.GetAgentRequest(agent_id="nova"), metadata=avatar.user)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_missing_sub_messages_are_required(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upsert(avatar, pb.Agent(agent_id="x", name="X"))
    assert set(violations(exc.value)) == {"agent.persona", "agent.appearance", "agent.voice"}
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await avatar.internal.UpsertAgent(pb.UpsertAgentRequest(), metadata=avatar.service)
    assert violations(none.value) == {"agent": "required"}


async def test_unknown_style_number_is_rejected(avatar: AvatarClient) -> None:
    agent = make_agent()
    agent.appearance.style = 42  # type: ignore[assignment]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upsert(avatar, agent)
    assert "agent.appearance.style" in violations(exc.value)


async def test_edges_of_the_limits_are_accepted(avatar: AvatarClient) -> None:
    agent = make_agent("a" * 64, height_cm=300, hair_color="#ABCDEF")
    agent.name = "n" * 100
    agent.appearance.accessories[:] = ["x"] * 10
    agent.appearance.color_palette[:] = ["#000000"] * 8
    agent.voice.voice_id = "v" * 128
    stored = (await upsert(avatar, agent)).agent
    assert stored.appearance.height_cm == 300
    assert stored.appearance.color_palette[0] == "#000000"
    agent.appearance.height_cm = 0
    agent.appearance.expression_baseline = ""
    stored = (await upsert(avatar, agent)).agent
    assert stored.appearance.expression_baseline == "neutral"


@pytest.mark.parametrize("agent_id", ["", "UPPER", "-lead", "a" * 65, "sp ace", "ü"])
async def test_get_agent_rejects_malformed_ids(avatar: AvatarClient, agent_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await avatar.stub.GetAgent(pb.GetAgentRequest(agent_id=agent_id), metadata=avatar.user)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "agent_id" in violations(exc.value)


async def test_get_unknown_agent_is_not_found(avatar: AvatarClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await avatar.stub.GetAgent(pb.GetAgentRequest(agent_id="ghost"), metadata=avatar.user)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert any(
        isinstance(d, error_details_pb2.ResourceInfo) and d.resource_name == "ghost"
        for d in status_details(exc.value)
    )


async def test_list_pages_through_every_agent_once(avatar: AvatarClient) -> None:
    ids = [f"agent-{i:02d}" for i in range(25)]
    for i, agent_id in enumerate(ids):
        await upsert(avatar, make_agent(agent_id, name=f"Same{i % 3}"))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        resp = await avatar.stub.ListAgents(
            pb.ListAgentsRequest(page_size=7, page_token=token), metadata=avatar.user
        )
        seen.extend(a.agent_id for a in resp.agents)
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert pages == 4
    assert sorted(seen) == ids and len(seen) == len(set(seen))
    names = [(f"Same{ids.index(i) % 3}", i) for i in seen]
    assert names == sorted(names)
    default = await avatar.stub.ListAgents(pb.ListAgentsRequest(), metadata=avatar.user)
    assert len(default.agents) == 20
    huge = await avatar.stub.ListAgents(pb.ListAgentsRequest(page_size=1000), metadata=avatar.user)
    assert len(huge.agents) == 25 and not huge.next_page_token


async def test_list_rejects_bad_page_size_and_tampered_tokens(avatar: AvatarClient) -> None:
    for i in range(3):
        await upsert(avatar, make_agent(f"a{i}"))
    with pytest.raises(grpc.aio.AioRpcError) as neg:
        await avatar.stub.ListAgents(pb.ListAgentsRequest(page_size=-1), metadata=avatar.user)
    assert neg.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in violations(neg.value)
    token = (
        await avatar.stub.ListAgents(pb.ListAgentsRequest(page_size=1), metadata=avatar.user)
    ).next_page_token
    body, mac = token.split(".")
    forged = [
        "garbage",
        body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac,
        body + "." + mac[::-1],
        token + ".x",
        "x" * 5000,
    ]
    for bad in forged:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await avatar.stub.ListAgents(pb.ListAgentsRequest(page_token=bad), metadata=avatar.user)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "page_token" in violations(exc.value)
