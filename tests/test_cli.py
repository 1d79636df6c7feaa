"""The development CLI refuses arguments it cannot honour, with a message saying why."""

from __future__ import annotations

import jwt
import pytest

from services.cli import MAX_TTL_S, main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["token", "--user", "alice", "--ttl", "-5"], "out of range"),
        (["token", "--user", "alice", "--ttl", "0"], "out of range"),
        (["token", "--user", "alice", "--ttl", str(MAX_TTL_S + 1)], "out of range"),
        (["token", "--user", "alice", "--ttl", "1h"], "not a whole number"),
        (["token", "--user", ""], "not a valid name"),
        (["token", "--user", "a b"], "not a valid name"),
        (["token", "--service", "x" * 200], "not a valid name"),
        (["model", "Nova!"], "not an agent id"),
        (["model", "nova", "--lod", "3"], "0, 1 or 2"),
        (["model", "nova", "--addr", "localhost"], "not host:port"),
        (["model", "nova", "--addr", "localhost:99999"], "not host:port"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr()
    assert says in err.err
    assert err.out == ""


def test_a_valid_ttl_mints_a_token_living_that_long(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "alice", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 120
