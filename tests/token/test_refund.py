"""RefundProviderUsage: characters reserved by a consumed request and not synthesized go back."""

from __future__ import annotations

import time

import grpc
import pytest
from arconv.token.v1 import token_service_pb2 as pb

from services.common.status import status_details
from tests.token.conftest import Mesh
from tests.token.keyutil import claims, sign, tamper


async def refund(mesh: Mesh, token: str, n: int, md: object = None) -> int:
    resp = await mesh.token_internal.RefundProviderUsage(
        pb.RefundProviderUsageRequest(token=token, characters=n),
        metadata=md if md is not None else mesh.service_md(),
    )
    return int(resp.characters_used)


async def test_gives_back_unused_characters_never_below_zero(mesh: Mesh) -> None:
    issued = await mesh.issue("alice", await mesh.room("alice"))
    assert (await mesh.verify(issued.token, n=100)).allowed
    assert await refund(mesh, issued.token, 40) == 60
    assert (await mesh.usage("alice")).characters_used == 60
    assert await mesh.counters("alice", issued.token_id) == (1, 60)  # the request still counts
    assert await refund(mesh, issued.token, 1000) == 0


async def test_an_expired_token_of_this_service_may_still_be_refunded(mesh: Mesh) -> None:
    kid, key = mesh.keys[0]
    now = int(time.time())
    expired = sign(claims(sub="alice", iat=now - 900, nbf=now - 900, exp=now - 600), key, kid)
    issued = await mesh.issue("alice", await mesh.room("alice"))
    await mesh.verify(issued.token, n=50)
    assert await refund(mesh, expired, 20) == 30


@pytest.mark.parametrize("bad", ["forged", "zero", "user"])
async def test_refusals(mesh: Mesh, bad: str) -> None:
    issued = await mesh.issue("alice", await mesh.room("alice"))
    await mesh.verify(issued.token, n=50)
    token, n, md, code = issued.token, 10, None, grpc.StatusCode.INVALID_ARGUMENT
    if bad == "forged":
        token = tamper(issued.token, sub="mallory")
    elif bad == "zero":
        n = 0
    else:
        md, code = mesh.md("alice"), grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await refund(mesh, token, n, md)
    assert err.value.code() == code
    if bad == "forged":
        assert status_details(err.value)[0].reason == "TOKEN_INVALID"  # type: ignore[attr-defined]
    assert (await mesh.usage("alice")).characters_used == 50
