"""Signing keys: configuration forms, the development key, production refusals, rotation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from services.common.config import ConfigError
from services.token.app import TokenSettings
from services.token.keys import DEV_DIR, load_keys, pem_of
from tests.token.keyutil import claims, keys_json, new_key, sign


def test_json_list_newest_signs_all_verify(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    ring = load_keys(
        keys_json(("2025-01", old), ("2025-06", new)), var_dir=tmp_path, production=True
    )
    assert ring.signer.kid == "2025-06"
    assert [k["kid"] for k in ring.jwks()["keys"]] == ["2025-01", "2025-06"]
    for jwk in ring.jwks()["keys"]:
        assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
        assert jwk["alg"] == "EdDSA" and jwk["use"] == "sig" and "d" not in jwk
    assert ring.public("2025-01") is not None and ring.public("nope") is None


def test_directory_of_pem_files_sorted_by_kid(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir()
    for kid in ("2025-06-01", "2024-12-01"):
        f = d / f"{kid}.pem"
        f.write_bytes(pem_of(new_key()))
        f.chmod(0o600)
    ring = load_keys(str(d), var_dir=tmp_path, production=True)
    assert ring.signer.kid == "2025-06-01"
    assert len(ring.keys) == 2


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    d.mkdir()
    f = d / "k1.pem"
    f.write_bytes(pem_of(new_key()))
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(str(d), var_dir=tmp_path, production=False)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("[not json", "not valid JSON"),
        ('{"kid": "a"}', "neither a JSON list nor a directory"),
        ('[{"kid": "a"}]', "kid and pem"),
        ('[{"kid": "a", "pem": "garbage"}]', "not an unencrypted PEM"),
        ("[]", "no keys"),
        ("/nonexistent/keys", "neither a JSON list nor a directory"),
    ],
)
def test_bad_key_configuration_is_a_clear_error(tmp_path: Path, spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_keys(spec, var_dir=tmp_path, production=False)


def test_non_ed25519_key_and_bad_kid_and_duplicates_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ec = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    spec = json.dumps([{"kid": "ec", "pem": ec.decode()}])
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        load_keys(spec, var_dir=tmp_path, production=False)
    with pytest.raises(ConfigError, match="key id"):
        load_keys(keys_json(("bad kid!", new_key())), var_dir=tmp_path, production=False)
    k = new_key()
    with pytest.raises(ConfigError, match="twice"):
        load_keys(keys_json(("a", k), ("a", k)), var_dir=tmp_path, production=False)


def test_development_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    ring = load_keys("", var_dir=tmp_path, production=False)
    files = list((tmp_path / DEV_DIR).glob("*.pem"))
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    assert ring.signer.kid.startswith("dev-")
    again = load_keys("", var_dir=tmp_path, production=False)
    assert again.jwks() == ring.jwks()
    token = sign(claims(), ring.signer.private, ring.signer.kid)
    pub = again.public(ring.signer.kid)
    assert jwt.decode(token, pub, algorithms=["EdDSA"], audience="arconv-tts")["sub"] == "alice"


def test_production_refuses_the_development_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ARCONV_TOKEN_KEYS is not set"):
        load_keys("", var_dir=tmp_path, production=True)
    load_keys("", var_dir=tmp_path, production=False)
    with pytest.raises(ConfigError, match="development key"):
        load_keys(str(tmp_path / DEV_DIR), var_dir=tmp_path, production=True)


def test_production_settings_without_keys_fail_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s" * 40
    with pytest.raises(ValueError, match="ARCONV_TOKEN_KEYS is not set"):
        TokenSettings(
            env="production",
            jwt_secret=secret,
            service_jwt_secret="v" * 40,
            page_token_secret="p" * 40,
            var_dir=tmp_path,
        )
    ok = TokenSettings(
        env="production",
        jwt_secret=secret,
        service_jwt_secret="v" * 40,
        page_token_secret="p" * 40,
        var_dir=tmp_path,
        token_keys=keys_json(("k", new_key())),
    )
    assert ok.token_keys


def test_plans_come_from_json_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "ARCONV_TOKEN_PLANS",
        '{"free": {"daily_characters": 10, "requests_per_token_per_hour": 2},'
        ' "pro": {"daily_characters": 1000, "requests_per_token_per_hour": 50}}',
    )
    monkeypatch.setenv("ARCONV_TOKEN_USER_PLANS", '{"bob": "pro"}')
    s = TokenSettings(var_dir=tmp_path)
    book = s.plan_book()
    assert book.plan_for("bob").daily_characters == 1000
    assert book.plan_for("alice").name == "free"
    monkeypatch.setenv("ARCONV_TOKEN_USER_PLANS", '{"bob": "gold"}')
    with pytest.raises(ValueError, match="unknown plans: gold"):
        TokenSettings(var_dir=tmp_path)
    monkeypatch.setenv("ARCONV_TOKEN_USER_PLANS", "{}")
    monkeypatch.setenv("ARCONV_TOKEN_DEFAULT_PLAN", "gold")
    with pytest.raises(ValueError, match="ARCONV_TOKEN_DEFAULT_PLAN"):
        TokenSettings(var_dir=tmp_path)
    monkeypatch.setenv("ARCONV_TOKEN_DEFAULT_PLAN", "free")
    monkeypatch.setenv("ARCONV_TOKEN_PLANS", '{"free": {"daily_characters": -1}}')
    with pytest.raises(ValueError):
        TokenSettings(var_dir=tmp_path)
