"""Animation clips: ``idle``, ``gesture_<g>`` and ``pose_<p>`` as sampled joint tracks.

Poses are local joint rotations over the T-pose bind (see ``rig``). Sides are
written once for the avatar's left arm (along +X, palm down, forward is +Z) and
mirrored for the right. Useful rotations in that convention:

- upper arm ``rz(-a)`` lowers the arm, ``rz(+a)`` raises it, ``ry(-a)`` swings it forward;
- lower arm ``ry(-a)`` bends the elbow (the forearm comes forward), ``rx`` twists;
- finger joints ``rz(-a)`` curl towards the palm;
- head and spine ``rx(+a)`` bow forward, ``ry`` turn, ``rz`` tilt.

Every gesture starts and ends at ``REST`` (the first frame of ``idle``), so a
client can cross-fade; a pose clip moves from ``REST`` to its pose and holds it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from services.common.vocabulary import GESTURES, POSES

from .geometry import Vec3
from .rig import BONE_NAMES, IDENTITY, Quat, Skeleton, canonical, mirror, qmul, rx, ry, rz, slerp

FPS = 20
BLINK_LEFT, BLINK_RIGHT = "blink_left", "blink_right"

# Bones the clips drive (the eyes are left to look-at).
ANIMATED: tuple[str, ...] = tuple(n for n in BONE_NAMES if not n.endswith("Eye"))


@dataclass(frozen=True)
class Pose:
    rotations: Mapping[str, Quat] = field(default_factory=dict)
    hips: Vec3 = (0.0, 0.0, 0.0)  # offset of the hips from the bind position, body units
    morphs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Clip:
    name: str
    duration: float
    frames: tuple[Pose, ...]  # sampled at FPS, first at 0, last at duration
    times: tuple[float, ...]
    morphs: bool  # whether the clip drives the face's morph weights


def _sides(left: Mapping[str, Quat], *, right: bool = True, both: bool = False) -> dict[str, Quat]:
    """Expand ``{"UpperArm": q}`` (left convention) to the left and/or right bones."""
    out: dict[str, Quat] = {}
    for bone, q in left.items():
        if both or not right:
            out[f"left{bone}"] = q
        if both or right:
            out[f"right{bone}"] = mirror(q)
    return out


def _fingers(index: float, middle: float, thumb: float = 0.0) -> dict[str, Quat]:
    """Curl of the index, the grouped fingers and the thumb, in degrees (left convention)."""
    out = {
        "IndexProximal": rz(-index),
        "IndexIntermediate": rz(-index * 1.1),
        "IndexDistal": rz(-index * 0.7),
        "MiddleProximal": rz(-middle),
        "MiddleIntermediate": rz(-middle * 1.1),
        "MiddleDistal": rz(-middle * 0.7),
    }
    # The thumb folds across the palm: about its own axis' normal (down and in).
    out["ThumbMetacarpal"] = qmul(ry(0.4 * thumb), rz(-0.3 * thumb))
    out["ThumbProximal"] = rz(-0.6 * thumb)
    out["ThumbDistal"] = rz(-0.5 * thumb)
    return out


_ARM_DOWN = 76.0
_REST_SIDE = {
    "UpperArm": qmul(rz(-_ARM_DOWN), ry(-6.0)),
    "LowerArm": ry(-14.0),
    "Hand": rz(-4.0),
    **_fingers(12.0, 18.0, 8.0),
}
REST: dict[str, Quat] = _sides(_REST_SIDE, both=True)


def _merge(*parts: Mapping[str, Quat]) -> dict[str, Quat]:
    out: dict[str, Quat] = {}
    for part in parts:
        out.update(part)
    return out


def _rot(pose: Pose, bone: str) -> Quat:
    return pose.rotations.get(bone, REST.get(bone, IDENTITY))


def _ease(t: float) -> float:
    return t * t * (3.0 - 2.0 * t)


def _blend(a: Pose, b: Pose, t: float) -> Pose:
    u = _ease(t)
    rotations = {bone: slerp(_rot(a, bone), _rot(b, bone), u) for bone in ANIMATED}
    hips = tuple(a.hips[i] + (b.hips[i] - a.hips[i]) * u for i in range(3))
    names = sorted(set(a.morphs) | set(b.morphs))
    morphs = {
        n: a.morphs.get(n, 0.0) + (b.morphs.get(n, 0.0) - a.morphs.get(n, 0.0)) * u for n in names
    }
    return Pose(rotations, (hips[0], hips[1], hips[2]), morphs)


def _keyed(keys: Keys) -> Callable[[float], Pose]:
    def sample(t: float) -> Pose:
        for (t0, p0), (t1, p1) in itertools.pairwise(keys):
            if t <= t1:
                return _blend(p0, p1, 0.0 if t1 == t0 else (t - t0) / (t1 - t0))
        return _blend(keys[-1][1], keys[-1][1], 0.0)

    return sample


def _sample(name: str, duration: float, fn: Callable[[float], Pose], morphs: bool = False) -> Clip:
    n = max(2, round(duration * FPS) + 1)
    times = tuple(round(duration * i / (n - 1), 6) for i in range(n))
    frames = []
    for t in times:
        pose = fn(t)
        rotations = {bone: canonical(_rot(pose, bone)) for bone in ANIMATED}
        frames.append(Pose(rotations, pose.hips, pose.morphs))
    return Clip(name, duration, tuple(frames), times, morphs)


REST_POSE = Pose({})
Keys = list[tuple[float, Pose]]


def _pose(*parts: Mapping[str, Quat], hips: Vec3 = (0.0, 0.0, 0.0)) -> Pose:
    return Pose(_merge(*parts), hips)


# --- idle -----------------------------------------------------------------------

IDLE_SECONDS = 4.0
_BLINKS = (0.9, 3.0)  # blink starts (s); each closes in 0.1 s and opens in 0.15 s


def _blink(t: float) -> float:
    for start in _BLINKS:
        if start <= t <= start + 0.1:
            return (t - start) / 0.1
        if start + 0.1 < t <= start + 0.25:
            return 1.0 - (t - start - 0.1) / 0.15
    return 0.0


def _idle(t: float) -> Pose:
    phase = 2.0 * math.pi * t / IDLE_SECONDS
    breath = math.sin(2.0 * phase)  # two breaths per loop
    sway = math.sin(phase)  # one weight shift from side to side and back
    rotations = dict(REST)
    rotations["hips"] = rz(1.2 * sway)
    rotations["spine"] = rz(-0.8 * sway)
    rotations["chest"] = rx(-0.8 * breath)
    rotations["upperChest"] = qmul(rx(-0.7 * breath), rz(-0.4 * sway))
    rotations["neck"] = rx(0.5 * breath)
    rotations["head"] = qmul(
        rz(0.6 * sway), rx(0.3 * breath), ry(1.5 * math.sin(phase + 1.0) - 1.5 * math.sin(1.0))
    )
    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder = rz(sign * 0.8 * breath)
        rotations[f"{side}Shoulder"] = shoulder
        # The leg the weight moves onto straightens; the other bends a little.
        bend = max(0.0, sign * sway) * 4.0
        rotations[f"{side}UpperLeg"] = rx(-bend)
        rotations[f"{side}LowerLeg"] = rx(2.0 * bend)
        rotations[f"{side}Foot"] = rx(-bend)
    blink = _blink(t)
    return Pose(
        rotations,
        (0.012 * sway, -0.004 * (1.0 - math.cos(phase)) * 0.5, 0.0),
        {BLINK_LEFT: blink, BLINK_RIGHT: blink},
    )


# --- gestures ---------------------------------------------------------------------


def _wave() -> Keys:
    raised = {
        "UpperArm": qmul(rz(30.0), ry(-12.0), rx(-90.0)),
        "Hand": rz(5.0),
        **_fingers(3.0, 3.0, 0.0),
    }

    def swing(deg: float) -> Pose:
        return _pose(REST, _sides({**raised, "LowerArm": ry(-deg)}), {"head": rz(-3.0)})

    keys = [(0.0, REST_POSE), (0.45, swing(70.0))]
    t = 0.45
    for deg in (100.0, 45.0, 100.0, 45.0, 80.0):
        t += 0.28
        keys.append((t, swing(deg)))
    keys.append((t + 0.5, REST_POSE))
    return keys


def _nod() -> Keys:
    def bow(deg: float) -> Pose:
        return _pose(REST, {"head": rx(deg), "neck": rx(deg * 0.35)})

    return [
        (0.0, REST_POSE),
        (0.3, bow(18.0)),
        (0.55, bow(-3.0)),
        (0.85, bow(16.0)),
        (1.2, REST_POSE),
    ]


def _shake() -> Keys:
    def turn(deg: float) -> Pose:
        return _pose(REST, {"head": ry(deg), "neck": ry(deg * 0.3)})

    return [
        (0.0, REST_POSE),
        (0.25, turn(24.0)),
        (0.55, turn(-24.0)),
        (0.85, turn(20.0)),
        (1.1, turn(-12.0)),
        (1.4, REST_POSE),
    ]


_POINT_SIDE = {
    "Shoulder": ry(-4.0),
    "UpperArm": qmul(ry(-80.0), rz(8.0), rx(-75.0)),
    "LowerArm": ry(-4.0),
    "Hand": IDENTITY,
    **_fingers(0.0, 85.0, 35.0),
}


def _point() -> Keys:
    held = _pose(REST, _sides(_POINT_SIDE), {"head": ry(-6.0), "upperChest": ry(-5.0)})
    return [(0.0, REST_POSE), (0.55, held), (1.45, held), (2.0, REST_POSE)]


def _hand_raise() -> Keys:
    side = {
        "Shoulder": rz(10.0),
        "UpperArm": qmul(rz(78.0), ry(-12.0), rx(-90.0)),
        "LowerArm": ry(-18.0),
        **_fingers(4.0, 4.0, 0.0),
    }
    held = _pose(REST, _sides(side), {"head": rz(-2.0)})
    return [(0.0, REST_POSE), (0.6, held), (1.5, held), (2.1, REST_POSE)]


_THUMBS_SIDE = {
    "UpperArm": qmul(ry(-20.0), rz(-72.0), rx(-30.0)),
    "LowerArm": qmul(ry(-90.0), rx(-15.0)),
    "Hand": IDENTITY,
    **_fingers(95.0, 100.0, 0.0),
}


def _thumbs_up() -> Keys:
    held = _pose(REST, _sides(_THUMBS_SIDE), {"head": rx(-3.0)})
    return [(0.0, REST_POSE), (0.5, held), (1.4, held), (1.9, REST_POSE)]


def _shrug() -> Keys:
    side = {
        "Shoulder": rz(14.0),
        "UpperArm": qmul(rz(-72.0), rx(-40.0)),
        "LowerArm": qmul(ry(-85.0), rx(-90.0)),
        "Hand": rz(12.0),
        **_fingers(6.0, 8.0, 0.0),
    }
    up = _pose(REST, _sides(side, both=True), {"head": qmul(rz(8.0), rx(-4.0)), "neck": rx(-3.0)})
    return [(0.0, REST_POSE), (0.45, up), (1.05, up), (1.6, REST_POSE)]


_GESTURES: dict[str, Callable[[], Keys]] = {
    "wave": _wave,
    "nod": _nod,
    "shake_head": _shake,
    "point": _point,
    "hand_raise": _hand_raise,
    "thumbs_up": _thumbs_up,
    "shrug": _shrug,
}


# --- poses ------------------------------------------------------------------------


def _held_poses(sk: Skeleton) -> dict[str, Pose]:
    b = sk.body
    hip = sk.at("leftUpperLeg")
    knee = sk.at("leftLowerLeg")
    drop = (knee[1] - hip[1]) / b + 0.02  # thighs level on an implied seat
    return {
        "standing": _pose(
            REST, _sides({"UpperArm": qmul(rz(-80.0), ry(-3.0)), "LowerArm": ry(-6.0)}, both=True)
        ),
        "sitting": _pose(
            REST,
            _sides(
                {
                    "UpperLeg": qmul(rx(-88.0), rz(-4.0)),
                    "LowerLeg": rx(84.0),
                    "Foot": rx(4.0),
                    "UpperArm": qmul(ry(-22.0), rz(-80.0)),
                    "LowerArm": qmul(ry(-62.0), rx(-20.0)),
                    "Hand": rz(-18.0),
                },
                both=True,
            ),
            {"spine": rx(-4.0), "chest": rx(3.0)},
            hips=(0.0, drop, -0.04),
        ),
        "leaning_forward": _pose(
            REST,
            _sides({"UpperArm": qmul(rz(-70.0), ry(-22.0)), "LowerArm": ry(-30.0)}, both=True),
            {
                "spine": rx(9.0),
                "chest": rx(8.0),
                "upperChest": rx(5.0),
                "neck": rx(-8.0),
                "head": rx(-9.0),
            },
            hips=(0.0, 0.0, -0.02),
        ),
        "arms_crossed": _pose(
            REST,
            # The left forearm rests a little higher and in front of the right one.
            _sides(
                {
                    "UpperArm": qmul(ry(-72.0), rz(-61.0)),
                    "LowerArm": ry(-94.0),
                    "Hand": rz(-10.0),
                    **_fingers(25.0, 30.0, 10.0),
                },
                right=False,
            ),
            _sides(
                {
                    "UpperArm": qmul(ry(-66.0), rz(-68.0)),
                    "LowerArm": ry(-88.0),
                    "Hand": rz(-10.0),
                    **_fingers(25.0, 30.0, 10.0),
                },
            ),
            {"head": rx(-3.0)},
        ),
        "hands_on_hips": _pose(
            REST,
            _sides(
                {
                    "UpperArm": qmul(rz(-52.0), ry(8.0), rx(88.0)),
                    "LowerArm": ry(-82.0),
                    "Hand": rz(-12.0),
                    **_fingers(10.0, 12.0, 5.0),
                },
                both=True,
            ),
            {"chest": rx(-2.0)},
        ),
        "relaxed": _pose(
            REST,
            _sides(
                {"UpperLeg": qmul(rx(-6.0), rz(-2.0)), "LowerLeg": rx(12.0), "Foot": rx(-6.0)},
                right=False,
            ),
            {"hips": rz(2.5), "spine": rz(-2.0), "head": qmul(rz(4.0), ry(6.0))},
            _sides({"UpperArm": qmul(rz(-74.0), ry(-8.0)), "LowerArm": ry(-22.0)}, both=True),
            hips=(0.015, -0.006, 0.0),
        ),
    }


def build_clips(sk: Skeleton) -> list[Clip]:
    """Every clip, in a fixed order: idle, the gestures, the poses."""
    clips = [_sample("idle", IDLE_SECONDS, _idle, morphs=True)]
    for name in GESTURES:
        keys = _GESTURES[name]()
        clips.append(_sample(f"gesture_{name}", keys[-1][0], _keyed(keys)))
    held = _held_poses(sk)
    for name in POSES:
        pose = held[name]
        clips.append(
            _sample(f"pose_{name}", 1.5, _keyed([(0.0, REST_POSE), (0.8, pose), (1.5, pose)]))
        )
    return clips


CLIP_NAMES: tuple[str, ...] = (
    "idle",
    *(f"gesture_{g}" for g in GESTURES),
    *(f"pose_{p}" for p in POSES),
)
