"""The paging helper every List RPC uses: sizes, cursors and the next page's token."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.pagetoken import PageTokens
from services.common.paging import Pages


def test_sizes_refused_or_clamped_above_the_maximum() -> None:
    strict = Pages("s", "rooms", default=20, maximum=100)
    clamped = Pages("s", "agents", default=20, maximum=100, clamp=True)
    assert [strict.size(n) for n in (0, 1, 100)] == [20, 1, 100]
    assert [clamped.size(n) for n in (0, 1, 100, 1000)] == [20, 1, 100, 100]
    for pages, size in ((strict, 101), (strict, -1), (clamped, -1)):
        with pytest.raises(InvalidArgument) as err:
            pages.size(size)
        assert err.value.violations[0][0] == "page_size"


def test_a_page_carries_the_cursor_of_its_last_row_only_when_more_follow() -> None:
    pages = Pages("s", "rooms", default=2, maximum=10)
    rows = [(1, "a"), (2, "b"), (3, "c")]
    page, token = pages.page(rows, size=2, user_id="u", query={}, cursor_of=list)
    assert page == rows[:2]
    assert pages.cursor(token, user_id="u", query={}, types=(int, str)) == [2, "b"]
    assert pages.page(rows, size=3, user_id="u", query={}, cursor_of=list) == (rows, "")
    assert pages.cursor("", user_id="u", query={}, types=(int, str)) is None


@pytest.mark.parametrize("cursor", [[1], [1, 2], ["1", "a"], [True, "a"], [1, "a", 2]])
def test_a_cursor_of_the_wrong_shape_is_refused(cursor: list[object]) -> None:
    token = PageTokens("s", "rooms").encode(user_id="u", query={}, cursor=cursor)
    with pytest.raises(InvalidArgument) as err:
        Pages("s", "rooms", default=2, maximum=10).cursor(
            token, user_id="u", query={}, types=(int, str)
        )
    assert "malformed" in str(err.value)
