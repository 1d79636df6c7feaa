"""Capabilities read from GLB files with pygltflib: skin, clips, morph targets, VRM."""

from __future__ import annotations

import json
import struct

import pygltflib
import pytest

from services.avatar.capabilities import MAX_NAME, Capabilities, read_capabilities
from services.avatar.providers.glb import InvalidGlb
from tests.avatar.meshy_server import rigged_glb, tiny_glb


def _with_json(glb: bytes, change: dict[str, object]) -> bytes:
    """The GLB with top-level JSON members replaced (the BIN chunk kept), written by hand
    so that any JSON, even JSON the library would refuse to write, can be tried."""
    gltf = pygltflib.GLTF2.load_from_bytes(glb)
    doc = json.loads(gltf.to_json())
    doc.update(change)
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    blob = gltf.binary_blob() or b""
    blob += b"\0" * (-len(blob) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    body += struct.pack("<II", len(blob), 0x004E4942) + blob
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def test_a_plain_mesh_is_usable_and_says_it_cannot_move() -> None:
    assert read_capabilities(tiny_glb()) == Capabilities()


def test_a_rigged_model_reports_its_skin_and_named_clips() -> None:
    caps = read_capabilities(rigged_glb(clips=("idle", "gesture_wave", "idle")))
    assert caps.rigged and caps.joint_count == 2
    assert caps.clips == ("idle", "gesture_wave")  # distinct, file order
    assert not caps.vrm and caps.humanoid_bones == () and caps.expressions == ()


def test_a_skin_that_no_mesh_uses_is_not_rigged() -> None:
    glb = _with_json(
        rigged_glb(),
        {"nodes": [{"name": "Character", "mesh": 0}, {"name": "Hips", "children": [2]},
                   {"name": "Head"}]},
    )  # fmt: skip
    caps = read_capabilities(glb)
    assert not caps.rigged and caps.joint_count == 0


def test_vrm_bone_map_expressions_and_morph_names() -> None:
    vrm = {
        "specVersion": "1.0",
        "humanoid": {
            "humanBones": {
                "hips": {"node": 1},
                "head": {"node": 2},
                "leftHand": {"node": 99},  # no such node: not reported
                "rightHand": "bad",
            }
        },
        "expressions": {
            "preset": {"aa": {"morphTargetBinds": []}, "happy": {}, "blink": None},
            "custom": {"viseme_PP": {}},
        },
    }
    doc = json.loads(pygltflib.GLTF2.load_from_bytes(rigged_glb()).to_json())
    doc["meshes"][0]["extras"] = {"targetNames": ["viseme_aa", "x" * 200, 7, "viseme_aa"]}
    glb = _with_json(
        rigged_glb(),
        {"meshes": doc["meshes"], "extensionsUsed": ["VRMC_vrm"], "extensions": {"VRMC_vrm": vrm}},
    )
    caps = read_capabilities(glb)
    assert caps.vrm and caps.rigged
    assert caps.humanoid_bones == ("hips", "head")
    assert caps.expressions == ("aa", "happy", "viseme_PP")
    assert caps.morph_targets == ("viseme_aa", "x" * MAX_NAME)


def test_names_from_a_provider_lose_control_characters() -> None:
    caps = read_capabilities(rigged_glb(clips=("wave\x00\x1b[31m", "\x00")))
    assert caps.clips == ("wave[31m",)


@pytest.mark.parametrize(
    "change",
    [
        {"skins": "nope"},
        {"nodes": [{"mesh": 0, "skin": 0}], "skins": [{"joints": "x"}]},
        {"nodes": [{"mesh": 0, "skin": True}]},
        {"extensions": {"VRMC_vrm": {"humanoid": [], "expressions": {"preset": 3}}}},
        {"animations": [{"name": ["x"], "channels": "x"}]},
    ],
)
def test_wrong_json_types_never_crash(change: dict[str, object]) -> None:
    glb = _with_json(rigged_glb(), change)
    try:
        caps = read_capabilities(glb)
    except InvalidGlb:
        return
    assert caps.clips == () and caps.humanoid_bones == () and caps.expressions == ()


def test_bytes_the_library_cannot_read_are_invalid() -> None:
    with pytest.raises(InvalidGlb):
        read_capabilities(b"glTF" + struct.pack("<II", 2, 12))
    with pytest.raises(InvalidGlb):
        read_capabilities(b"not a model at all")


def test_round_trip_through_json() -> None:
    caps = read_capabilities(rigged_glb(clips=("idle",)))
    assert Capabilities.from_json(caps.to_json()) == caps
