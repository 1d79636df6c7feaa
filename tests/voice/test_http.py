"""POST /v1/audio/speech through a real Envoy: the openai SDK gets playable audio, errors come
in OpenAI's shape; Synthesize over gRPC-web (buf curl) through the same edge."""

from __future__ import annotations

import asyncio
import io
import itertools
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from services.voice.segments import segments
from tests.edge.conftest import running_envoy
from tests.edge.mesh_fixtures import buf_curl
from tests.voice.conftest import Voice, words_of


@pytest.fixture
async def edge(voice: Voice, tmp_path: Path) -> AsyncIterator[str]:
    m = voice.mesh
    upstreams = {
        "rooms": m.rooms_port,
        "avatar": m.avatar_port,
        "token": m.token_port,
        "voice": voice.port,
        "voice_http": voice.http_port,
    }
    async with running_envoy(tmp_path / "envoy", upstreams) as cfg:
        yield f"http://127.0.0.1:{cfg.listen_port}"


def client(edge: str, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{edge}/v1", api_key=key, max_retries=0)


async def test_the_openai_sdk_gets_a_playable_wav_through_the_edge(voice: Voice, edge: str) -> None:
    tok = await voice.token()
    text = "Hello from the edge! This audio streams as it is spoken."
    async with (
        client(edge, tok.token) as c,
        c.audio.speech.with_streaming_response.create(
            model="tts-1", voice=tok.voice_id, input=text, response_format="wav"
        ) as resp,
    ):
        assert resp.headers["content-type"] == "audio/wav"
        audio = b"".join([part async for part in resp.iter_bytes()])
    with wave.open(io.BytesIO(audio)) as w:
        pcm = w.readframes(w.getnframes())
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22050, 1, 2)
    assert len(pcm) / 2 / 22050 > 2.0
    assert await voice.mesh.counters("alice", tok.token_id) == (1, len(text))


async def test_pcm_and_speed(voice: Voice, edge: str) -> None:
    tok = await voice.token()
    text = "The same words at two speeds."
    sizes = []
    async with client(edge, tok.token) as c:
        for speed in (1.0, 2.0):
            resp = await c.audio.speech.create(
                model="tts-1", voice=tok.voice_id, input=text, response_format="pcm", speed=speed
            )
            sizes.append(len(resp.content))
    assert sizes[1] < sizes[0] * 0.7


@pytest.mark.parametrize(
    ("key", "body", "status", "code"),
    [
        ("not-a-token", {}, 401, "TOKEN_INVALID"),
        ("", {"voice": "someone-else"}, 403, "TOKEN_VOICE"),
        ("", {"response_format": "mp3"}, 400, "INVALID_ARGUMENT"),
        ("", {"input": "x" * 5001}, 400, "INPUT_TOO_LONG"),
        ("", {"speed": 10}, 400, "INVALID_ARGUMENT"),
    ],
)
async def test_errors_are_openai_shaped(
    voice: Voice, edge: str, key: str, body: dict[str, Any], status: int, code: str
) -> None:
    tok = await voice.token()
    req = {"model": "tts-1", "voice": tok.voice_id, "input": "Hi.", **body}
    async with client(edge, key or tok.token) as c:
        with pytest.raises(openai.APIStatusError) as err:
            await c.audio.speech.create(**req)
    assert err.value.status_code == status
    error = err.value.response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    if status == 401:
        assert isinstance(err.value, openai.AuthenticationError)
    assert await voice.mesh.counters("alice", tok.token_id) == (0, 0)


async def test_no_bearer_and_bad_bodies(edge: str) -> None:
    async with httpx.AsyncClient(base_url=edge) as http:
        r = await http.post("/v1/audio/speech", json={"input": "Hi", "voice": "v"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_MISSING"
        r = await http.post(
            "/v1/audio/speech", content=b"{not json", headers={"authorization": "Bearer x"}
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "body"


async def test_synthesize_over_grpc_web(voice: Voice, edge: str) -> None:
    tok = await voice.token()
    text = "Browsers hear this."
    res = await buf_curl(
        edge,
        "arconv.voice.v1.VoiceService/Synthesize",
        {"text": text, "visemes": True},
        token=tok.token,
    )
    assert res.returncode == 0, res.stderr
    msgs = res.messages()
    assert "header" in msgs[0] and "summary" in msgs[-1]
    assert [m["word"]["text"] for m in msgs if "word" in m] == words_of(text)
    assert any("viseme" in m for m in msgs) and any("audio" in m for m in msgs)
    bad = await buf_curl(
        edge, "arconv.voice.v1.VoiceService/Synthesize", {"text": text}, token="forged"
    )
    assert bad.error()["code"] == "unauthenticated"


async def test_an_http_client_that_goes_away_is_metered_for_what_was_produced(
    voice: Voice,
) -> None:
    tok = await voice.token()
    text = " ".join(f"This is sentence number {n} of a long story." for n in range(40))
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{voice.http_port}") as http,
        http.stream(
            "POST",
            "/v1/audio/speech",
            json={"input": text, "voice": tok.voice_id, "response_format": "pcm"},
            headers={"authorization": f"Bearer {tok.token}"},
        ) as resp,
    ):
        assert resp.status_code == 200 and resp.headers["x-sample-rate"] == "22050"
        async for _ in resp.aiter_bytes():
            break  # hang up after the first audio
    # TCP buffers what the client never read, so more than one sentence may have been produced
    # before the server saw the hang-up; whole sentences are metered, never the whole text.
    sums = list(itertools.accumulate(len(p) for _, p in segments(text)))
    async with asyncio.timeout(10):
        while True:  # the refund follows the server's end of the response
            used = (await voice.mesh.counters("alice", tok.token_id))[1]
            if used != len(text):
                break
            await asyncio.sleep(0.02)
    assert used in sums[:-1]
