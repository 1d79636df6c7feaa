"""A request cannot make its error large: IssueProviderToken with 100,000 operations used to
answer with one violation each (5.5 MB of trailers)."""

from __future__ import annotations

import grpc
import pytest
from arconv.token.v1 import token_service_pb2 as pb

from services.common.status import status_details
from tests.token import conftest as token_fixtures
from tests.token.conftest import Mesh

mesh_factory = token_fixtures.mesh_factory
mesh = token_fixtures.mesh
kv_backend = token_fixtures.kv_backend


@pytest.mark.parametrize("ops", [["tts.nope"] * 100_000, ["tts.synthesize"] * 11])
async def test_too_many_operations_is_one_small_violation(mesh: Mesh, ops: list[str]) -> None:
    room_id = await mesh.room("alice")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.token.IssueProviderToken(
            pb.IssueProviderTokenRequest(room_id=room_id, operations=ops),
            metadata=mesh.md("alice"),
        )
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = sum(len(k) + len(v) for k, v in err.trailing_metadata() or ())
    assert trailers < 2_000, trailers
    bad = [d for d in status_details(err) if hasattr(d, "field_violations")]
    assert [(v.field, v.description) for v in bad[0].field_violations] == [
        ("operations", "at most 10 entries")
    ]
