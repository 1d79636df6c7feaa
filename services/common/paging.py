"""Keyset paging of List RPCs: page sizes and signed page tokens, one helper for every listing.

A listing reads one row more than the page holds: if it comes back there is a next page, and
the token carries the cursor of the page's last row (see services.common.pagetoken).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from services.common.errors import InvalidArgument
from services.common.pagetoken import PageTokens, invalid_token

T = TypeVar("T")


class Pages:
    """One listing's page sizes and page tokens.

    `page_size` 0 means `default`; above `maximum` it is INVALID_ARGUMENT, or with
    `clamp=True` the maximum (as the listing's proto says). Negative is always refused.
    """

    def __init__(
        self, secret: str, kind: str, *, default: int, maximum: int, clamp: bool = False
    ) -> None:
        self._tokens = PageTokens(secret, kind)
        self.default = default
        self.maximum = maximum
        self._clamp = clamp

    def size(self, requested: int) -> int:
        """The number of rows a page holds for a request's `page_size`."""
        if requested == 0:
            return self.default
        if requested > self.maximum and self._clamp:
            return self.maximum
        if requested < 0 or requested > self.maximum:
            rule = f"0 to {self.maximum}; 0 means {self.default}"
            if self._clamp:
                rule += f", larger values mean {self.maximum}"
            raise InvalidArgument(
                f"page_size must be 0 to {self.maximum}", violations=[("page_size", rule)]
            )
        return requested

    def cursor(
        self, token: str, *, user_id: str, query: Mapping[str, Any], types: Sequence[type]
    ) -> list[Any] | None:
        """The cursor in `token` (None for no token), each part of the type in `types`."""
        if not token:
            return None
        cursor = self._tokens.decode(token, user_id=user_id, query=query)
        if len(cursor) != len(types) or not all(
            isinstance(part, t) and not (t is int and isinstance(part, bool))
            for part, t in zip(cursor, types, strict=True)
        ):
            raise invalid_token("malformed")
        return cursor

    def page(
        self,
        rows: Sequence[T],
        *,
        size: int,
        user_id: str,
        query: Mapping[str, Any],
        cursor_of: Callable[[T], list[Any]],
    ) -> tuple[list[T], str]:
        """The page out of up to `size + 1` rows, and the token of the next page ("" if none)."""
        page = list(rows[:size])
        if len(rows) <= size:
            return page, ""
        return page, self._tokens.encode(user_id=user_id, query=query, cursor=cursor_of(page[-1]))
