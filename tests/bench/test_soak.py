"""`make soak`'s arguments and report (bench/soak.py), without a run: a run takes minutes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.soak import key_kind, parse_args, per_minute
from bench.soak_client import Tally
from bench.soak_report import render, write


def test_arguments_default_to_the_environment_and_refuse_what_is_not_positive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parse_args([], {})
    assert (args.conversations, args.minutes) == (20, 3.0)
    args = parse_args([], {"SOAK_CONVERSATIONS": "7", "SOAK_MINUTES": "0.5"})
    assert (args.conversations, args.minutes) == (7, 0.5)
    args = parse_args(["--conversations", "2"], {"SOAK_CONVERSATIONS": "7"})
    assert args.conversations == 2
    for argv, env in (
        (["--conversations", "0"], {}),
        (["--minutes", "-1"], {}),
        (["--conversations", "1.5"], {}),
        ([], {"SOAK_MINUTES": "three"}),
    ):
        with pytest.raises(SystemExit) as exited:
            parse_args(argv, env)
        assert exited.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_keys_are_counted_by_kind() -> None:
    p = "arconv-soak:"
    assert key_kind(f"{p}stream:open-streams:soak-3", p) == "stream:open-streams:*"
    room = "0b9d7c1e-8a4f-4d2b-9f3e-1c2d3e4f5a6b"
    assert key_kind(f"{p}bus:room:{room}:events", p) == "bus:room:*:events"
    assert key_kind(f"{p}stream:msg-rate:soak-1:29461234", p) == "stream:msg-rate:*:*"


def _doc() -> dict[str, Any]:
    tally = Tally(turns=3, answered=3)
    tally.first_chunk = [(5.0, 100.0), (30.0, 300.0), (70.0, 2500.0)]
    tally.errors_at = [65.0]
    return {
        "machine": {
            "cores": 2,
            "cpu_model": "cpu",
            "python": "3.11",
            "grpcio": "1",
            "platform": "linux",
            "date": "2026-12-07T17:00:00+00:00",
            "load_average_at_start": [3.5, 3.0, 2.5],
        },
        "config": {
            "conversations": 2,
            "minutes": 2.0,
            "replicas": 2,
            "bus": "Redis",
            "database": "PostgreSQL",
            "llm": "persona",
            "think_s": 1.0,
        },
        "ran_s": 121.0,
        "faults": [{"at_s": 40.0, "fault": "SIGKILL of stream replica 0 (pid 1)"}],
        "load_average_1min": {"min": 3.1, "mean": 4.25, "max": 6.0, "samples": []},
        "minutes": per_minute(tally, 2.0),
        "first_chunk_all": {"p50_ms": 300.0, "p99_ms": 2500.0},
        "totals": {
            "turns": 3,
            "answered": 3,
            "answered_from_history": 0,
            "unanswered": 0,
            "replies_cut": {"STREAM_END_REASON_INTERRUPTED": 1},
            "resent": 0,
            "duplicates_acknowledged": 0,
            "events": 90,
            "events_repeated": 0,
            "events_missing": 0,
            "human_messages_lost": 0,
            "human_messages_never_acknowledged": 0,
            "replies_left_running": 0,
            "resumes": {"start": 2, "unavailable": 1},
            "errors": {"UNAVAILABLE": 1},
        },
        "samples": [
            {"at_s": 0.0, "rss_mb": {"stream-0": 80.0}, "redis": {"error": "down"}},
            {
                "at_s": 60.0,
                "rss_mb": {"stream-0": 90.5, "envoy": 40.0},
                "redis": {
                    "used_memory_mb": 1.5,
                    "used_memory_rss_mb": 9.0,
                    "keys": 4,
                    "keys_by_kind": {"bus:room:*:events": 2},
                },
            },
        ],
    }


def test_the_report_says_load_faults_and_figures_per_minute(tmp_path: Path) -> None:
    doc = _doc()
    assert [r["turns"] for r in doc["minutes"]] == [2, 1]
    assert doc["minutes"][1]["errors"] == 1
    write(doc, tmp_path)
    text = (tmp_path / "soak.md").read_text()
    assert json.loads((tmp_path / "soak.json").read_text()) == doc
    assert "load average at start 3.5, 3.0, 2.5" in text
    assert "min 3.10, mean 4.25, max 6.00" in text
    assert "at 40.0 s: SIGKILL of stream replica 0" in text
    assert "| 1 | 2 | 300 | 300 | 0 |" in text and "| 2 | 1 | 2,500 | 2,500 | 1 |" in text
    assert "**human messages lost** (acknowledged, not in the history) | **0** |" in text
    assert "| 60 | 40.0 | 90.5 |" in text  # columns sorted: envoy, stream-0
    assert "unreachable: down" in text and "bus:room:*:events 2" in text
    assert text == render(doc)
