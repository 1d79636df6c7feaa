"""Page sizes of ListAgents (page tokens: services.common.pagetoken)."""

from __future__ import annotations

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    """0 → the default; above the maximum → the maximum; negative → INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative", violations=[("page_size", "0 to 100")]
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
