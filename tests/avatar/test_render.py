"""The generated avatar in a real browser: three.js and @pixiv/three-vrm in headless Chromium.

tools/render/render.mjs loads each LOD the way a web client does (GLTFLoader with three-vrm's
VRMLoaderPlugin), reports what three-vrm resolved, plays clips with an AnimationMixer, applies
expressions and renders frames on SwiftShader. The PNGs stay in var/test-artifacts/avatar/
(ARCONV_TEST_ARTIFACTS elsewhere) for a person to look at; the test measures them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.avatar.capabilities import read_capabilities
from services.avatar.description import derive
from services.avatar.domain import Agent, Appearance
from services.avatar.providers.glb import inspect_glb
from services.avatar.providers.procedural import ProceduralProvider
from services.common.vocabulary import GESTURES, POSES
from tests.conftest import REQUIRE_SERVICES

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("ARCONV_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("ARCONV_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
LODS = (0, 2)
FRAMES = ("rest", "gesture_wave", "face_rest", "face_aa", "face_happy", "face_blink")
BONES = (
    *("hips", "spine", "chest", "neck", "head"),
    *(f"{side}{bone}" for side in ("left", "right")
      for bone in ("Shoulder", "UpperArm", "LowerArm", "Hand", "ThumbProximal", "IndexProximal",
                   "UpperLeg", "LowerLeg", "Foot")),
)  # fmt: skip
PRESETS = ("happy", "angry", "sad", "relaxed", "surprised", "aa", "ih", "ou", "ee", "oh")
PRESETS += ("blink", "blinkLeft", "blinkRight", "neutral")


def _need_browser() -> None:
    why = ""
    if not CHROMIUM.exists():
        why = f"Chromium not found at {CHROMIUM}; run `make browser-setup` to install it"
    elif shutil.which("node") is None:
        why = "node is not installed; the render harness runs under node"
    if why and REQUIRE_SERVICES:
        pytest.fail(f"{why} (ARCONV_REQUIRE_SERVICES=1 requires the browser tests)")
    if why:
        pytest.skip(why)


def _render(out: Path, models: list[Path]) -> dict[str, Any]:
    made = subprocess.run(
        ["make", "-s", "node"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert made.returncode == 0, made.stdout + made.stderr
    run = subprocess.run(
        ["node", "tools/render/render.mjs", str(out), *map(str, models)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"CHROMIUM": str(CHROMIUM), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert run.stdout.strip(), run.stderr
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, json.dumps(report, indent=1)[:4000]
    return report


def test_the_avatar_loads_moves_and_speaks_in_three_vrm() -> None:
    _need_browser()
    agent = Agent(
        agent_id="nova",
        name="Nova",
        system_prompt="A cheerful guide.",
        model="",
        appearance=Appearance(style="realistic", hair_color="auburn"),
        voice_provider="espeak",
        voice_id="en",
    )
    lods = asyncio.run(ProceduralProvider().generate(derive(agent), lambda f: None))
    out = ARTIFACTS / "avatar"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    models = []
    for level in LODS:
        path = out / f"lod{level}.glb"
        path.write_bytes(lods[level])
        models.append(path)
    report = _render(out, models)
    print(f"avatar frames: {out}")  # shown with -s / on failure

    for level, model in zip(LODS, report["models"], strict=True):
        caps = read_capabilities(lods[level])
        where = f"LOD {level}"
        assert "error" not in model, (where, model.get("error"), model["log"])
        assert not [line for line in model["log"] if line.startswith("pageerror")], model["log"]
        for frame in FRAMES:
            png = Path(model["frames"][frame])
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
        assert model["triangles"] == inspect_glb(lods[level], max_bytes=1 << 26).triangle_count

        # The face: aa opens the mouth (more dark pixels where the lips part), happy changes it.
        assert set(model["applied"]["aa"]) and set(model["applied"]["happy"]), model["applied"]
        aa = model["metrics"]["aa"]
        assert aa["mouth"] > 0.1, (where, aa)
        assert aa["mouthLuma"]["dark"] > aa["mouthLumaRest"]["dark"] + 0.05, (where, aa)
        assert model["metrics"]["happy"]["face"] > 0.002, (where, model["metrics"])

        # The rig and the VRM humanoid, as three-vrm resolves them.
        assert model["skinned"] and caps.rigged, where
        assert model["vrm"] and model["meta"]["metaVersion"] == "1", (where, model["meta"])
        assert set(BONES) <= set(model["bones"]), (where, model["missingBones"])
        assert set(PRESETS) <= set(model["expressions"]), (where, model["expressions"])
        assert model["applied"]["blink"], (where, model["applied"])
        # blink closes the eyes: the lids cover much of the eye region
        assert model["metrics"]["blink"]["eyes"] > 0.1, (where, model["metrics"]["blink"])

        # The clips, played with an AnimationMixer: the wave raises the right hand above the
        # shoulder, and the frame differs from rest where the right arm is, not the left.
        clips = {c["name"] for c in model["clips"]}
        assert {"idle"} | {f"gesture_{g}" for g in GESTURES} <= clips, (where, clips)
        assert {f"pose_{p}" for p in POSES} <= clips, (where, clips)
        wave = model["wave"]
        assert wave["handY"] > wave["shoulderY"], (where, wave)
        moved = model["metrics"]["wave"]
        assert moved["rightArm"] > 0.1 and moved["rightArm"] > 2 * moved["leftArm"], (
            where,
            moved,
            model["regions"],
        )
