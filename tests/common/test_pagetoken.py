"""Page tokens: signed, bound to caller and query, keyed by the deployment's secret."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.pagetoken import PageTokens

QUERY = {"include_ended": False}


def test_round_trip() -> None:
    tokens = PageTokens("secret-a", "rooms")
    token = tokens.encode(user_id="alice", query=QUERY, cursor=[123, "r"])
    assert tokens.decode(token, user_id="alice", query=QUERY) == [123, "r"]


@pytest.mark.parametrize(
    ("decoder", "user", "query", "why"),
    [
        (PageTokens("secret-b", "rooms"), "alice", QUERY, "signature"),
        (PageTokens("secret-a", "messages"), "alice", QUERY, "another listing"),
        (PageTokens("secret-a", "rooms"), "bob", QUERY, "another caller"),
        (PageTokens("secret-a", "rooms"), "alice", {"include_ended": True}, "different query"),
    ],
)
def test_refused(decoder: PageTokens, user: str, query: dict, why: str) -> None:
    token = PageTokens("secret-a", "rooms").encode(user_id="alice", query=QUERY, cursor=[1, "r"])
    with pytest.raises(InvalidArgument) as info:
        decoder.decode(token, user_id=user, query=query)
    assert why in info.value.message
    assert info.value.reason == "INVALID_PAGE_TOKEN"
