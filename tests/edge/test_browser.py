"""A real browser: headless Chromium runs the reference client (gRPC-web) through Envoy.

The page in web/ is built from the protos with protoc-gen-es and bundled with esbuild
(`make web`); a static server on a free port serves it, as `make run` does, and playwright-core
drives Debian's Chromium (WebGL on SwiftShader) through web/e2e/run.mjs, which plays a scenario
and prints what the page showed and its debug state. Screenshots of every step land in
var/test-artifacts/browser/<test>/ (not committed).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import pytest
from arconv.rooms.v1 import rooms_service_pb2 as rooms_pb
from arconv.rooms.v1 import rooms_service_pb2_grpc as rooms_grpc

from services.mesh import static_site
from tests.conftest import REQUIRE_SERVICES
from tests.edge.mesh_fixtures import ROOT, EdgeMesh, start_edge_mesh

pytestmark = [pytest.mark.envoy, pytest.mark.browser]

# Debian's Chromium (`make browser-setup`); ARCONV_CHROMIUM points elsewhere.
CHROMIUM = Path(os.environ.get("ARCONV_CHROMIUM", "/usr/bin/chromium"))
WEB = ROOT / "web"
MARKER = re.compile(r"^(emotion|gesture|tone|pose):[a-z_]+$")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        why = f"Chromium not found at {CHROMIUM}; run `make browser-setup` to install it"
        if REQUIRE_SERVICES:
            pytest.fail(f"{why} (ARCONV_REQUIRE_SERVICES=1 requires the browser test)")
        pytest.skip(why)
    return CHROMIUM


@pytest.fixture
async def bundle(chromium: Path) -> Path:
    """web/dist, built by `make web` (npm ci, buf generate, type check, esbuild) when stale."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed; the browser test drives Chromium with playwright-core")
    built = await asyncio.to_thread(
        subprocess.run,
        ["make", "-s", "web"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return WEB / "dist"


ARTIFACTS = (
    Path(os.environ.get("ARCONV_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "browser"
)
# A paced persona, so a reply is still streaming while the page interrupts it or goes offline.
PACING_MS = 70


@pytest.fixture
async def paced_mesh(tmp_path: Path) -> AsyncIterator[EdgeMesh]:
    async with start_edge_mesh(tmp_path, llm_pacing_ms=PACING_MS) as mesh:
        yield mesh


def shots_dir(request: pytest.FixtureRequest) -> Path:
    path = ARTIFACTS / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def drive(scenario: str, url: str, user_data_dir: Path, shots: Path) -> dict[str, Any]:
    env = {"CHROMIUM": str(CHROMIUM), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["node", "e2e/run.mjs", scenario, url, str(user_data_dir), str(shots)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, f"{out.stderr}\n(screenshots in {shots})"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    (shots / "result.json").write_text(json.dumps(result, indent=1))
    return result


async def open_client(
    bundle: Path, mesh: EdgeMesh, scenario: str, tmp: Path, shots: Path, **query: str
) -> dict[str, Any]:
    """Serves the client as `make run` does and plays `scenario` in it, signed in as alice."""
    with static_site(bundle) as origin:
        url = f"{origin}/?" + urlencode({"edge": mesh.url, "agent": "nova", **query})
        url += "#" + urlencode({"token": mesh.token("alice")})
        return await asyncio.to_thread(drive, scenario, url, tmp / "profile", shots)


async def stored_messages(mesh: EdgeMesh, room_id: str) -> list[rooms_pb.Message]:
    async with grpc.aio.insecure_channel(mesh.target) as ch:
        res = await rooms_grpc.RoomServiceStub(ch).ListMessages(
            rooms_pb.ListMessagesRequest(room_id=room_id, page_size=50),
            metadata=mesh.md("alice"),
        )
    return list(res.messages)


async def test_bad_token_is_refused_in_plain_words(
    bundle: Path, paced_mesh: EdgeMesh, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shots = shots_dir(request)
    with static_site(bundle) as origin:
        url = f"{origin}/#" + urlencode({"edge": paced_mesh.url, "token": "not-a-token"})
        page = await asyncio.to_thread(drive, "bad-token", url, tmp_path / "profile", shots)
    assert "token was refused" in page["signinError"]
    assert "services.cli token" in page["signinError"]
    assert (shots / "01-bad-token.png").stat().st_size > 0


async def test_reference_client_scenario(
    bundle: Path, paced_mesh: EdgeMesh, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shots = shots_dir(request)
    mesh = paced_mesh
    # Without the voice service: the browser's speechSynthesis, or (headless Chromium has no
    # voices) the cue timelines on the wall clock.
    page = await open_client(bundle, mesh, "conversation", tmp_path, shots, still="1", voice="off")

    # The network errors of the deliberate drop are the browser's own log lines, nothing else.
    errors = [line for line in page["console"] if line.startswith(("error", "pageerror"))]
    assert all(line.startswith("error: Failed to load resource: ") for line in errors), errors
    assert page["error"] == ""
    assert {a["name"] for a in page["agents"]} == {"Nova", "Atlas", "Willow"}
    nova = next(a for a in page["agents"] if a["id"] == "nova")
    assert nova["status"] == "avatar ready"
    # Every call went through Envoy as gRPC-web.
    # (The page reaches Envoy through the scenario's TCP relay, which can drop the network.)
    calls = {r["url"].rsplit("/", 1)[1] for r in page["requests"] if r["url"].startswith("EDGE")}
    assert calls >= {"ListAgents", "CreateRoom", "Subscribe", "ListMessages", "GetAvatar"}
    assert calls >= {"GenerateAvatar", "WatchAvatar", "DownloadModel", "SendMessage", "Interrupt"}
    for req in page["requests"]:
        if req["url"].startswith("EDGE/"):
            assert req["type"] == "application/grpc-web+proto", req

    # The avatar renders: the canvas is transparent (the page shows through, as the camera
    # does in AR) except where the model is, which covers much of the square the page reports
    # for the face, in many shades.
    initial = page["initial"]
    assert initial["avatarStatus"] == "ready" and initial["connection"] == "live"
    assert page["canvas"]["opaque"] > 48 * 48 * 0.4 and page["canvas"]["distinct"] > 20
    caps = initial["capabilities"]
    assert {f"viseme_{v}" for v in ("aa", "O", "PP", "sil")} <= set(caps["morphs"])

    # Visemes move while the greeting is spoken, the mouth changes the face, and rests after.
    greeting = page["greeting"]
    assert greeting["samples"] > 10 and greeting["audioMsRising"], greeting
    assert len(greeting["dominantVisemes"]) >= 4 and greeting["maxVisemeSum"] > 0.4, greeting
    assert page["mouthPixelsChanged"] > 20, page["mouthPixelsChanged"]
    assert greeting["restVisemeSum"] < 0.01 and not page["afterSpeech"]["speaking"]
    # (The face at rest again, once the reply's expressions decayed, is the face before it.)
    assert page["restPixelsChanged"] < page["mouthPixelsChanged"] / 4
    # The wave marker is played when speech reaches it: the clip where the model has one.
    assert all(MARKER.match(c) for c in greeting["reply"]["chips"]), greeting["reply"]
    assert "gesture:wave" in greeting["reply"]["chips"], greeting["reply"]
    assert "gesture:wave" in page["afterSpeech"]["played"]
    if "gesture_wave" in caps["clips"]:
        assert "gesture_wave" in greeting["clips"], greeting["clips"]
    else:
        assert "gesture_wave" in page["afterSpeech"]["missing"]

    room_id = initial["roomId"]
    stored = {m.stream_id: m for m in await stored_messages(mesh, room_id) if m.stream_id}
    assert stored[greeting["reply"]["streamId"]].text == greeting["reply"]["text"]

    # The interrupt stored what was heard: the text up to the played characters.
    cut = page["interrupted"]["reply"]
    assert cut["state"] == "interrupted"
    played = int(cut["cutAt"])
    assert 12 <= played < len(cut["text"]), cut
    answer = stored[cut["streamId"]]
    assert answer.status == rooms_pb.MESSAGE_STATUS_INTERRUPTED
    assert answer.text == cut["text"][:played]

    # The dropped connection resumed after the last event: nothing lost, nothing repeated.
    dropped = page["dropped"]
    assert dropped["debug"]["reconnects"] >= 1 and dropped["debug"]["repeats"] == 0
    assert dropped["reply"]["state"] == "completed"
    assert stored[dropped["reply"]["streamId"]].text == dropped["reply"]["text"]
    agents_seen = [m["streamId"] for m in page["transcript"] if m["kind"] == "agent"]
    assert len(agents_seen) == len(set(agents_seen)) == 3
    users = [m["text"] for m in page["transcript"] if m["kind"] == "user"]
    assert users == ["Hello Nova, wave at me!", "Please tell me a story.", "What can you do?"]
    for name in ("avatar", "speaking", "interrupted", "reconnecting", "resumed"):
        assert any(p.name.endswith(f"-{name}.png") for p in shots.iterdir()), name


@pytest.fixture
async def voiced_mesh(tmp_path: Path) -> AsyncIterator[EdgeMesh]:
    async with start_edge_mesh(tmp_path, voice=True, llm_pacing_ms=PACING_MS) as mesh:
        yield mesh


async def test_the_mesh_voice_drives_the_mouth_on_the_audio_clock(
    bundle: Path, voiced_mesh: EdgeMesh, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shots = shots_dir(request)
    mesh = voiced_mesh
    page = await open_client(bundle, mesh, "voice", tmp_path, shots, still="1")

    assert page["error"] == ""
    calls = {r["url"].rsplit("/", 1)[1] for r in page["requests"] if r["url"].startswith("EDGE")}
    assert {"IssueProviderToken", "Synthesize"} <= calls
    spoken = page["spoken"]
    # Every sentence was spoken by the voice service, its visemes moving on the audio clock.
    assert spoken["engines"] == ["voice"], spoken
    assert spoken["audioMsRising"] and spoken["samples"] > 10, spoken
    assert len(spoken["dominantVisemes"]) >= 3 and spoken["visemeChanges"] >= 3, spoken
    # Word by word, to the last word (its closing punctuation counts when the audio ends).
    assert len(spoken["reply"]["text"].rstrip()) - 2 <= spoken["maxPlayed"], spoken
    assert not page["afterSpeech"]["speaking"]
    assert not [k for k in page["afterSpeech"]["morphs"] if k.startswith("viseme_")]

    # An interrupt part-way stores what the audio had reached, by its word marks.
    cut = page["interrupted"]["reply"]
    played = int(cut["cutAt"])
    assert cut["state"] == "interrupted" and 12 <= played < len(cut["text"]), cut
    stored = {m.stream_id: m for m in await stored_messages(mesh, page["afterSpeech"]["roomId"])}
    answer = stored[cut["streamId"]]
    assert answer.status == rooms_pb.MESSAGE_STATUS_INTERRUPTED
    assert answer.text == cut["text"][:played]
