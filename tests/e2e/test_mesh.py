"""`make run`'s runner as a newcomer uses it: six processes, healthy, clean stop."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path

import pytest

from services.ports import free_port

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.envoy
async def test_mesh_starts_six_healthy_processes_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("rooms", "stream", "avatar", "token", "voice")}
    edge_port, admin_port, web_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "ARCONV_VAR_DIR": str(tmp_path / "var"),
        "ARCONV_EDGE_PORT": str(edge_port),
        "ARCONV_EDGE_ADMIN_PORT": str(admin_port),
        "ARCONV_WEB_PORT": str(web_port),
        "ARCONV_MESH_METRICS": "0",
        "ARCONV_LLM_PACING_MS": "0",
        "ARCONV_VOICE_HTTP_PORT": str(free_port()),
        **{f"ARCONV_{n.upper()}_ADDR": f"127.0.0.1:{p}" for n, p in ports.items()},
    }
    for var in ("ARCONV_DATABASE_URL", "ARCONV_REDIS_URL"):
        env.pop(var, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.mesh",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    banner: list[str] = []
    drain: asyncio.Future[bytes] | None = None
    try:
        async with asyncio.timeout(120):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "the mesh exited before it was up:\n" + "".join(banner)
                banner.append(line)
                if "Ctrl-C stops everything" in line:
                    break
        # Keep reading the runner's output so it never blocks on a full pipe.
        drain = asyncio.ensure_future(proc.stdout.read())
        text = "".join(banner)
        # What a newcomer sees before the banner: a line per service and per seeded agent, one
        # per migrated database, no Alembic chatter and no Envoy warnings.
        before = banner[: next(i for i, ln in enumerate(banner) if "arconv is up" in ln)]
        assert len([ln for ln in before if ln.strip()]) <= 15, text
        assert not [ln for ln in before if "alembic" in ln.lower() or "Context impl" in ln]
        assert not [ln for ln in before if "[warning]" in ln], text
        assert f"127.0.0.1:{edge_port}" in text
        assert "export TOKEN=" in text
        assert "Demo agents seeded: 3" in text
        children = _children(proc.pid)
        assert len(children) == 6, text
        listed = await asyncio.to_thread(
            subprocess.run,
            [GRPCURL, "-plaintext", f"127.0.0.1:{edge_port}", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for svc in (
            "arconv.rooms.v1.RoomService",
            "arconv.stream.v1.StreamService",
            "arconv.avatar.v1.AvatarService",
            "arconv.token.v1.TokenService",
            "arconv.voice.v1.VoiceService",
        ):
            assert svc in listed.stdout.split(), listed.stderr
        token = next(ln.split("=", 1)[1].strip() for ln in banner if "export TOKEN=" in ln)
        if "Open the web client" in text:  # web/dist is built (`make run` builds it)
            link = next(ln.strip() for ln in banner if f"127.0.0.1:{web_port}/#" in ln)
            assert f"edge=http%3A%2F%2F127.0.0.1%3A{edge_port}" in link and "token=" in link
            page = await asyncio.to_thread(_fetch, link.split("#")[0])
            assert b'<script type="module" src="app.js">' in page
        await _converse_through_the_edge(edge_port, token)
        await _speak_as_the_banner_says(text, env)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            rc = await proc.wait()
        assert rc == 0
        assert not [pid for pid in children if _alive(pid)], "orphan processes left behind"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if drain is None:
            drain = asyncio.ensure_future(proc.stdout.read())
        # The children follow the runner (SIGTERM on parent death) and close the pipe.
        await asyncio.wait_for(drain, timeout=60)


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as res:
        body: bytes = res.read()
        return body


async def _grpcurl(*args: str, stdin: str | None = None) -> str:
    out = await asyncio.to_thread(
        subprocess.run,
        [GRPCURL, "-plaintext", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _objects(text: str) -> list[dict[str, object]]:
    decoder, objs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        objs.append(obj)
    return objs


async def _converse_through_the_edge(port: int, token: str) -> None:
    """The newcomer's session from the README: agents, a room, a conversation with Nova."""
    auth = ["-H", f"authorization: Bearer {token}"]
    target = f"127.0.0.1:{port}"
    agents = json.loads(await _grpcurl(*auth, target, "arconv.avatar.v1.AvatarService/ListAgents"))
    assert {a["agent_id"] for a in agents["agents"]} == {"nova", "atlas", "willow"}
    room = json.loads(
        await _grpcurl(
            *auth, "-d", '{"agent_id": "nova"}', target, "arconv.rooms.v1.RoomService/CreateRoom"
        )
    )["room"]["room_id"]
    lines = (
        json.dumps({"join": {"room_id": room}})
        + "\n"
        + json.dumps({"message": {"content": "Hello Nova!", "client_message_id": "m1"}})
        + "\n"
    )
    events = _objects(
        await _grpcurl(
            *auth, "-d", "@", target, "arconv.stream.v1.StreamService/Converse", stdin=lines
        )
    )
    kinds = [next(k for k in e if k != "event_id") for e in events]
    assert kinds[:3] == ["joined", "message_accepted", "stream_started"]
    assert kinds[-1] == "stream_ended" and "speech_cue" in kinds
    text = "".join(
        str(e["stream_chunk"].get("text", ""))  # type: ignore[union-attr]
        for e in events
        if "stream_chunk" in e
    )
    assert text and "[" not in text
    ended = events[-1]["stream_ended"]
    assert ended["reason"] == "STREAM_END_REASON_COMPLETED"  # type: ignore[index]


async def _speak_as_the_banner_says(banner: str, env: dict[str, str]) -> None:
    """The banner's two lines: a provider token from the CLI, then curl gets a WAV."""
    lines = banner.splitlines()
    export = next(ln for ln in lines if "export TTS_TOKEN=" in ln)
    cli = export.split("$(", 1)[1].rsplit(")", 1)[0].split()
    assert cli[0] == ".venv/bin/python"
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *cli[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    curl = next(i for i, ln in enumerate(lines) if ln.strip().startswith("curl -s"))
    command = lines[curl].rstrip(" \\") + " " + lines[curl + 1].strip()
    out = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", command.replace("> hello.wav", "")],
        capture_output=True,
        timeout=60,
        env={**env, "TTS_TOKEN": made.stdout.strip()},
    )
    with wave.open(io.BytesIO(out.stdout)) as w:
        assert (w.getframerate(), w.getnchannels()) == (22050, 1)
        assert len(w.readframes(w.getnframes())) > 22050  # over half a second of speech
