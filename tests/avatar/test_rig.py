"""The procedural avatar as a rigged, animated VRM 1.0 model, read back with pygltflib.

Joint-space checks evaluate the clips from the file (tests/avatar/gltf_rig.py),
not from the generator's own rig code.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pygltflib
import pytest

from services.avatar.procedural import (
    LOD_TRIANGLES,
    MORPH_TARGET_NAMES,
    ProceduralSpec,
    generate_glb,
)
from services.common.vocabulary import GESTURES, POSES
from tests.avatar.gltf_rig import (
    animation,
    bone_world,
    duration,
    node_index,
    qangle,
    qmul,
    qrotate,
    read_accessor,
    sample,
    world,
)

SPEC = ProceduralSpec(style="anime", hair_style="long", body_type="average", seed=11)
CLIPS = ["idle", *(f"gesture_{g}" for g in GESTURES), *(f"pose_{p}" for p in POSES)]
REQUIRED_BONES = {
    "hips", "spine", "chest", "upperChest", "neck", "head", "leftEye", "rightEye",
    *(
        f"{side}{bone}"
        for side in ("left", "right")
        for bone in (
            "Shoulder", "UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot", "Toes",
            "ThumbMetacarpal", "ThumbProximal", "ThumbDistal",
            "IndexProximal", "IndexIntermediate", "IndexDistal",
        )
    ),
}  # fmt: skip
PRESETS = {
    "happy": ["emotion_happy"],
    "angry": ["emotion_angry"],
    "sad": ["emotion_sad"],
    "relaxed": ["emotion_calm"],
    "surprised": ["emotion_surprised"],
    "aa": ["viseme_aa"],
    "ih": ["viseme_I"],
    "ou": ["viseme_U"],
    "ee": ["viseme_E"],
    "oh": ["viseme_O"],
    "blink": ["blink_left", "blink_right"],
    "blinkLeft": ["blink_left"],
    "blinkRight": ["blink_right"],
    "neutral": ["emotion_neutral"],
}


@pytest.fixture(scope="module")
def models() -> dict[int, pygltflib.GLTF2]:
    return {
        lod: pygltflib.GLTF2.load_from_bytes(generate_glb(SPEC, lod))
        for lod in range(len(LOD_TRIANGLES))
    }


@pytest.fixture(scope="module")
def model(models: dict[int, pygltflib.GLTF2]) -> pygltflib.GLTF2:
    return models[1]


def _dist(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def _joint_pose(gltf: pygltflib.GLTF2, name: str, t: float) -> list[Any]:
    return world(gltf, sample(gltf, animation(gltf, name), t))


def _pos(gltf: pygltflib.GLTF2, frame: list[Any], bone: str) -> tuple[float, float, float]:
    p = frame[node_index(gltf, bone)][1]
    return (p[0], p[1], p[2])


# --- skeleton and skin ----------------------------------------------------------------


def test_every_lod_has_the_humanoid_skeleton_and_a_correct_skin(
    models: dict[int, pygltflib.GLTF2],
) -> None:
    for lod, gltf in models.items():
        assert len(gltf.skins) == 1
        skin = gltf.skins[0]
        names = [gltf.nodes[j].name for j in skin.joints]
        assert set(names) >= REQUIRED_BONES, (lod, REQUIRED_BONES - set(names))
        assert len(names) == len(set(names))
        assert gltf.nodes[skin.skeleton].name == "hips"
        # Every joint descends from the hips; the VRM T-pose has no rest rotation or scale.
        nodes = world(gltf)
        for j in skin.joints:
            node = gltf.nodes[j]
            assert node.rotation in (None, [0.0, 0.0, 0.0, 1.0]) and node.scale is None
        # Inverse bind matrices: the inverse of each joint's world transform (column-major).
        ibms = read_accessor(gltf, skin.inverseBindMatrices)
        assert len(ibms) == len(skin.joints)
        for j, m in zip(skin.joints, ibms, strict=True):
            rot, pos = nodes[j]
            assert qangle(rot, (0.0, 0.0, 0.0, 1.0)) < 1e-3
            expected = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, -pos[0], -pos[1], -pos[2], 1]
            assert m == pytest.approx(expected, abs=1e-5), gltf.nodes[j].name
        # Every mesh node is skinned with it, at the scene root.
        roots = gltf.scenes[gltf.scene].nodes
        for i, node in enumerate(gltf.nodes):
            if node.mesh is not None:
                assert node.skin == 0 and i in roots


def test_vertices_have_at_most_four_joints_and_weights_summing_to_one(
    models: dict[int, pygltflib.GLTF2],
) -> None:
    for lod, gltf in models.items():
        joints_count = len(gltf.skins[0].joints)
        for mesh in gltf.meshes:
            for prim in mesh.primitives:
                joints = read_accessor(gltf, prim.attributes.JOINTS_0)
                weights = read_accessor(gltf, prim.attributes.WEIGHTS_0)
                for js, ws in zip(joints, weights, strict=True):
                    assert abs(sum(ws) - 1.0) < 1e-5, (lod, mesh.name)
                    assert all(0 <= j < joints_count for j in js)
                    used = [j for j, w in zip(js, ws, strict=True) if w > 0.0]
                    assert len(used) == len(set(used)), "a joint listed twice"


def test_body_weights_blend_smoothly_across_elbows_and_knees(model: pygltflib.GLTF2) -> None:
    """Near an elbow or knee, vertices are shared between the two bones (no hard seam)."""
    gltf = model
    joint_names = [gltf.nodes[j].name for j in gltf.skins[0].joints]
    body = next(m for m in gltf.meshes if m.name == "Body")
    shared = {"leftUpperArm/leftLowerArm": 0, "rightUpperLeg/rightLowerLeg": 0}
    for prim in body.primitives:
        joints = read_accessor(gltf, prim.attributes.JOINTS_0)
        weights = read_accessor(gltf, prim.attributes.WEIGHTS_0)
        for js, ws in zip(joints, weights, strict=True):
            named = {joint_names[j]: w for j, w in zip(js, ws, strict=True) if w > 0.05}
            for pair in shared:
                a, b = pair.split("/")
                if a in named and b in named:
                    shared[pair] += 1
    assert all(count >= 8 for count in shared.values()), shared


def test_standing_figure_on_the_floor_facing_forward(models: dict[int, pygltflib.GLTF2]) -> None:
    for lod, gltf in models.items():
        lo = [math.inf] * 3
        hi = [-math.inf] * 3
        for mesh in gltf.meshes:
            for prim in mesh.primitives:
                acc = gltf.accessors[prim.attributes.POSITION]
                lo = [min(a, b) for a, b in zip(lo, acc.min, strict=True)]
                hi = [max(a, b) for a, b in zip(hi, acc.max, strict=True)]
        assert lo[1] == pytest.approx(0.0, abs=1e-4), lod  # soles on y = 0
        assert 1.5 <= hi[1] <= 2.0, hi  # a person's height
        assert abs(lo[0] + hi[0]) < 0.02  # symmetric about x = 0 (T-pose)
        assert hi[0] - lo[0] > 0.8 * hi[1]  # arms spread in the T-pose
        nose = bone_world(gltf, "head")[1]
        left, right = bone_world(gltf, "leftUpperArm")[1], bone_world(gltf, "rightUpperArm")[1]
        assert left[0] > 0.0 > right[0]  # the avatar's left is +X: it faces +Z
        toes = bone_world(gltf, "leftToes")[1]
        assert toes[2] > bone_world(gltf, "leftFoot")[1][2]  # toes point forward
        assert nose[1] > left[1] > bone_world(gltf, "hips")[1][1]
    # The description's height is honoured.
    tall = pygltflib.GLTF2.load_from_bytes(generate_glb(ProceduralSpec(height_m=1.93), 2))
    top = max(
        gltf_acc.max[1]
        for m in tall.meshes
        for p in m.primitives
        for gltf_acc in [tall.accessors[p.attributes.POSITION]]
    )
    assert top == pytest.approx(1.93, abs=0.04)


# --- morph targets and VRM ------------------------------------------------------------


def test_blink_targets_close_one_eye_each(model: pygltflib.GLTF2) -> None:
    gltf = model
    face = next(m for m in gltf.meshes if m.name == "Face")
    names = face.extras["targetNames"]
    assert names == list(MORPH_TARGET_NAMES)
    left_eye = bone_world(gltf, "leftEye")[1]
    for target, sign in (("blink_left", 1.0), ("blink_right", -1.0)):
        moved_down = 0
        for prim in face.primitives:
            rest = read_accessor(gltf, prim.attributes.POSITION)
            deltas = read_accessor(gltf, prim.targets[names.index(target)]["POSITION"])
            for p, d in zip(rest, deltas, strict=True):
                if max(abs(c) for c in d) > 1e-6:
                    assert p[0] * sign > 0.0, f"{target} moves the other side"
                    assert abs(p[1] - left_eye[1]) < 0.05, f"{target} moves more than the lid"
                    moved_down += d[1] < -0.002
        assert moved_down >= 10, target


def test_vrm_extension_maps_bones_and_expressions(models: dict[int, pygltflib.GLTF2]) -> None:
    for gltf in models.values():
        assert gltf.extensionsUsed == ["VRMC_vrm"]
        vrm = gltf.extensions["VRMC_vrm"]
        assert vrm["specVersion"] == "1.0"
        meta = vrm["meta"]
        assert meta["name"] and meta["authors"] and all(meta["authors"])
        assert meta["licenseUrl"] == "https://vrm.dev/licenses/1.0/"
        assert meta["avatarPermission"] in (
            "onlyAuthor",
            "onlySeparatelyLicensedPerson",
            "everyone",
        )
        assert meta["commercialUsage"] in ("personalNonProfit", "personalProfit", "corporation")
        assert meta["modification"] in (
            "prohibited", "allowModification", "allowModificationRedistribution"
        )  # fmt: skip
        bones = vrm["humanoid"]["humanBones"]
        assert set(bones) >= REQUIRED_BONES
        for bone, ref in bones.items():
            assert gltf.nodes[ref["node"]].name == bone
            assert ref["node"] in gltf.skins[0].joints
        face_node = node_index(gltf, "Face")
        names = gltf.meshes[gltf.nodes[face_node].mesh].extras["targetNames"]
        presets = vrm["expressions"]["preset"]
        assert set(presets) == set(PRESETS)
        for key, targets in PRESETS.items():
            binds = presets[key]["morphTargetBinds"]
            assert [names[b["index"]] for b in binds] == targets, key
            assert all(b["node"] == face_node and b["weight"] == 1.0 for b in binds)
            assert presets[key]["isBinary"] is False
        custom = vrm["expressions"]["custom"]
        covered = {names[b["index"]] for e in (*presets.values(), *custom.values())
                   for b in e["morphTargetBinds"]}  # fmt: skip
        assert covered == set(MORPH_TARGET_NAMES), set(MORPH_TARGET_NAMES) - covered
        assert "viseme_PP" in custom and "emotion_thoughtful" in custom
        look = vrm["lookAt"]
        assert look["type"] == "bone"
        offset = look["offsetFromHeadBone"]
        head = bone_world(gltf, "head")[1]
        eye = bone_world(gltf, "leftEye")[1]
        assert offset[1] == pytest.approx(eye[1] - head[1], abs=1e-4)
        for key in ("HorizontalInner", "HorizontalOuter", "VerticalDown", "VerticalUp"):
            assert look[f"rangeMap{key}"]["inputMaxValue"] > 0.0


# --- clips ----------------------------------------------------------------------------


def test_every_lod_has_the_same_clips(models: dict[int, pygltflib.GLTF2]) -> None:
    for gltf in models.values():
        assert [a.name for a in gltf.animations] == CLIPS
    for name in CLIPS:
        lengths = {round(duration(g, animation(g, name)), 4) for g in models.values()}
        assert len(lengths) == 1, name
    for name in CLIPS:
        if name.startswith("gesture_"):
            assert 1.0 <= duration(models[0], animation(models[0], name)) <= 3.0, name


def test_clips_share_one_rest_pose_and_gestures_return_to_it(model: pygltflib.GLTF2) -> None:
    gltf = model
    idle = animation(gltf, "idle")
    rest = sample(gltf, idle, 0.0)
    rest_world = world(gltf, rest)
    joints = gltf.skins[0].joints
    for name in CLIPS[1:]:
        anim = animation(gltf, name)
        end = duration(gltf, anim)
        times = [0.0] if name.startswith("pose_") else [0.0, end]
        for t in times:
            frame = world(gltf, sample(gltf, anim, t))
            for j in joints:
                assert qangle(frame[j][0], rest_world[j][0]) < 0.5, (name, t, gltf.nodes[j].name)
                assert _dist(frame[j][1], rest_world[j][1]) < 1e-3, (name, t, gltf.nodes[j].name)
        # Clips drive the same joints, so cross-fading never falls back to the T-pose.
        driven = {(c.target.node, c.target.path) for c in anim.channels}
        assert {
            (c.target.node, c.target.path) for c in idle.channels if c.target.path != "weights"
        } <= driven
    # The rest pose has the arms down (the bind pose is the VRM T-pose).
    for side in ("left", "right"):
        shoulder = _pos(gltf, rest_world, f"{side}UpperArm")
        hand = _pos(gltf, rest_world, f"{side}Hand")
        assert shoulder[1] - hand[1] > 0.35
        assert abs(hand[0] - shoulder[0]) < 0.25


def test_idle_loops_without_a_jump_and_breathes_and_blinks(model: pygltflib.GLTF2) -> None:
    gltf = model
    idle = animation(gltf, "idle")
    end = duration(gltf, idle)
    first, last = sample(gltf, idle, 0.0), sample(gltf, idle, end)
    for key, value in first.items():
        assert last[key] == pytest.approx(value, abs=1e-5), key
    # Something moves during the loop: the chest (breathing) and the hips (weight shift).
    mid = sample(gltf, idle, end / 8)
    chest = node_index(gltf, "chest")
    hips = node_index(gltf, "hips")
    assert qangle(mid[(chest, "rotation")], first[(chest, "rotation")]) > 0.5  # type: ignore[arg-type]
    assert _dist(mid[(hips, "translation")], first[(hips, "translation")]) > 0.005
    # ...and the eyes blink, both at once, through the morph weights of the face.
    face = node_index(gltf, "Face")
    names = gltf.meshes[gltf.nodes[face].mesh].extras["targetNames"]
    blinks = [sample(gltf, idle, t / 20)[(face, "weights")] for t in range(int(end * 20) + 1)]
    closed = [w for w in blinks if w[names.index("blink_left")] > 0.9]
    assert closed and all(w[names.index("blink_right")] > 0.9 for w in closed)


def test_wave_raises_the_right_hand_above_the_shoulder_and_swings_the_forearm(
    model: pygltflib.GLTF2,
) -> None:
    gltf = model
    anim = animation(gltf, "gesture_wave")
    end = duration(gltf, anim)
    above = 0
    swing: list[float] = []
    for k in range(41):
        frame = world(gltf, sample(gltf, anim, end * k / 40))
        hand = _pos(gltf, frame, "rightHand")
        elbow = _pos(gltf, frame, "rightLowerArm")
        shoulder = _pos(gltf, frame, "rightUpperArm")
        if hand[1] > shoulder[1] + 0.1:
            above += 1
            swing.append(math.degrees(math.atan2(hand[0] - elbow[0], hand[1] - elbow[1])))
        # The left hand stays down.
        assert _pos(gltf, frame, "leftHand")[1] < _pos(gltf, frame, "leftUpperArm")[1] - 0.3
    assert above >= 15  # a good part of the clip
    assert max(swing) - min(swing) > 30.0  # the forearm swings side to side


def test_nod_bows_the_head_at_least_ten_degrees_about_the_side_axis(
    model: pygltflib.GLTF2,
) -> None:
    gltf = model
    anim = animation(gltf, "gesture_nod")
    end = duration(gltf, anim)
    head = node_index(gltf, "head")
    pitches = []
    for k in range(31):
        rot = world(gltf, sample(gltf, anim, end * k / 30))[head][0]
        forward = qrotate(rot, (0.0, 0.0, 1.0))
        side = qrotate(rot, (1.0, 0.0, 0.0))
        assert abs(side[1]) < 0.1  # no roll: the rotation is about the side (X) axis
        pitches.append(math.degrees(math.asin(-forward[1])))  # positive looks down
    assert max(pitches) >= 10.0
    # Down and back up (twice) rather than a single drift.
    downs = sum(1 for a, b in itertools.pairwise(pitches) if a < 5.0 <= b)
    assert downs >= 2, pitches


def test_shake_head_turns_left_and_right(model: pygltflib.GLTF2) -> None:
    gltf = model
    anim = animation(gltf, "gesture_shake_head")
    end = duration(gltf, anim)
    head = node_index(gltf, "head")
    yaws = []
    for k in range(31):
        forward = qrotate(world(gltf, sample(gltf, anim, end * k / 30))[head][0], (0.0, 0.0, 1.0))
        yaws.append(math.degrees(math.atan2(forward[0], forward[2])))
    assert max(yaws) > 15.0 and min(yaws) < -15.0


def test_point_extends_the_right_index_finger_forward(model: pygltflib.GLTF2) -> None:
    gltf = model
    anim = animation(gltf, "gesture_point")
    frame = world(gltf, sample(gltf, anim, duration(gltf, anim) / 2))
    shoulder = _pos(gltf, frame, "rightUpperArm")
    base = _pos(gltf, frame, "rightIndexProximal")
    tip = _pos(gltf, frame, "rightIndexDistal")
    d = [b - a for a, b in zip(base, tip, strict=True)]
    n = math.sqrt(sum(c * c for c in d))
    assert d[2] / n > 0.85  # the index finger points forward
    assert tip[2] - shoulder[2] > 0.4  # at the end of an outstretched arm
    # The other fingers are curled: the grouped fingers' tip is behind their base.
    mid_base = _pos(gltf, frame, "rightMiddleProximal")
    mid_tip = _pos(gltf, frame, "rightMiddleDistal")
    assert mid_tip[2] < mid_base[2] + 0.01


def test_thumbs_up_curls_the_fingers_and_raises_the_thumb(model: pygltflib.GLTF2) -> None:
    gltf = model
    anim = animation(gltf, "gesture_thumbs_up")
    pose = sample(gltf, anim, duration(gltf, anim) / 2)
    frame = world(gltf, pose)
    base, tip = _pos(gltf, frame, "rightThumbProximal"), _pos(gltf, frame, "rightThumbDistal")
    thumb = [b - a for a, b in zip(base, tip, strict=True)]
    assert thumb[1] / math.sqrt(sum(c * c for c in thumb)) > 0.7  # the thumb points up
    hand = node_index(gltf, "rightHand")
    index = node_index(gltf, "rightIndexIntermediate")
    bend = qmul((-frame[hand][0][0], -frame[hand][0][1], -frame[hand][0][2], frame[hand][0][3]),
                frame[index][0])  # fmt: skip
    assert qangle(bend, (0.0, 0.0, 0.0, 1.0)) > 120.0  # the index finger is folded


def test_hand_raise_and_shrug_read_as_what_they_say(model: pygltflib.GLTF2) -> None:
    gltf = model
    raise_ = animation(gltf, "gesture_hand_raise")
    frame = world(gltf, sample(gltf, raise_, duration(gltf, raise_) / 2))
    assert _pos(gltf, frame, "rightHand")[1] > _pos(gltf, frame, "head")[1] + 0.1
    shrug = animation(gltf, "gesture_shrug")
    rest = _joint_pose(gltf, "idle", 0.0)
    frame = world(gltf, sample(gltf, shrug, duration(gltf, shrug) / 2))
    for side in ("left", "right"):
        lifted = _pos(gltf, frame, f"{side}UpperArm")[1] - _pos(gltf, rest, f"{side}UpperArm")[1]
        assert lifted > 0.01  # the shoulders go up
        palm = qrotate(frame[node_index(gltf, f"{side}Hand")][0], (0.0, -1.0, 0.0))
        assert palm[1] > 0.5  # palms up


def test_poses_are_held_at_the_end(model: pygltflib.GLTF2) -> None:
    gltf = model
    rest = _joint_pose(gltf, "idle", 0.0)
    ends = {}
    for pose in POSES:
        anim = animation(gltf, f"pose_{pose}")
        end = duration(gltf, anim)
        a = world(gltf, sample(gltf, anim, end))
        b = world(gltf, sample(gltf, anim, end - 0.3))
        for j in gltf.skins[0].joints:
            assert qangle(a[j][0], b[j][0]) < 0.5, (pose, gltf.nodes[j].name)  # held
        ends[pose] = a
    hips_rest = _pos(gltf, rest, "hips")
    # Sitting lowers the hips by about a thigh's length and brings the knees forward.
    sit = ends["sitting"]
    assert hips_rest[1] - _pos(gltf, sit, "hips")[1] > 0.25
    assert _pos(gltf, sit, "leftLowerLeg")[2] - _pos(gltf, sit, "hips")[2] > 0.25
    # Leaning forward moves the head forward; hands on hips bring the hands to the hips.
    assert _pos(gltf, ends["leaning_forward"], "head")[2] - _pos(gltf, rest, "head")[2] > 0.05
    hands = ends["hands_on_hips"]
    for side in ("left", "right"):
        hand = _pos(gltf, hands, f"{side}Hand")
        assert abs(hand[1] - hips_rest[1]) < 0.15
        assert 0.08 < abs(hand[0]) < 0.3
    # Arms crossed: each hand ends up on the other side of the body, in front of the chest.
    crossed = ends["arms_crossed"]
    chest = _pos(gltf, rest, "chest")
    for side, sign in (("left", 1.0), ("right", -1.0)):
        hand = _pos(gltf, crossed, f"{side}Hand")
        assert hand[0] * sign < 0.05
        assert hand[2] > chest[2] + 0.08
