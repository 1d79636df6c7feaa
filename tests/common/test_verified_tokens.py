"""The verified-token cache: hits only while the time claims pass; failures are never cached."""

from __future__ import annotations

import time

import jwt
import pytest

from services.common.auth import JwtAuthority, VerifiedTokens
from services.common.errors import Unauthenticated


def test_a_hit_is_a_copy_and_only_within_the_time_window() -> None:
    cache = VerifiedTokens(leeway_s=10)
    now = time.time()
    cache.put("live", {"sub": "a", "exp": now + 60, "nbf": now - 1, "iat": now - 1})
    cache.put("expired", {"sub": "b", "exp": now - 11})
    cache.put("in-leeway", {"sub": "c", "exp": now - 5})
    cache.put("future", {"sub": "d", "exp": now + 60, "nbf": now + 30})
    cache.put("future-iat", {"sub": "e", "exp": now + 60, "iat": now + 30})
    cache.put("no-exp", {"sub": "f"})
    hit = cache.get("live")
    assert hit == {"sub": "a", "exp": now + 60, "nbf": now - 1, "iat": now - 1}
    hit["sub"] = "changed"
    assert cache.get("live")["sub"] == "a"  # type: ignore[index]
    assert cache.get("in-leeway") is not None
    for token in ("expired", "future", "future-iat", "no-exp", "unknown"):
        assert cache.get(token) is None


def test_the_oldest_entry_goes_first() -> None:
    cache = VerifiedTokens(leeway_s=0, size=2)
    exp = time.time() + 60
    for t in ("a", "b", "c"):
        cache.put(t, {"exp": exp})
    assert cache.get("a") is None
    assert cache.get("b") is not None and cache.get("c") is not None


def test_authority_serves_repeat_tokens_and_still_refuses_bad_ones() -> None:
    auth = JwtAuthority(secret="s" * 32, issuer="arconv", audience="arconv", leeway_s=0)
    token = auth.mint("alice", ttl_s=60)
    first = auth.verify(token)
    assert auth.verify(token) == first
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated) as err:
        auth.verify(forged)
    assert err.value.reason in ("TOKEN_SIGNATURE", "TOKEN_INVALID", "TOKEN_MALFORMED")
    other = JwtAuthority(secret="t" * 32, issuer="arconv", audience="arconv", leeway_s=0)
    with pytest.raises(Unauthenticated):
        other.verify(token)  # each authority has its own cache and key


def test_authority_does_not_cache_an_expired_token() -> None:
    auth = JwtAuthority(secret="s" * 32, issuer="arconv", audience="arconv", leeway_s=0)
    now = int(time.time())
    claims = {
        "sub": "alice",
        "iss": "arconv",
        "aud": "arconv",
        "iat": now - 120,
        "exp": now - 60,
        "role": "user",
    }
    token = jwt.encode(claims, "s" * 32, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(Unauthenticated) as err:
            auth.verify(token)
        assert err.value.reason == "TOKEN_EXPIRED"
