"""The humanoid skeleton (VRM 1.0 bone names), skin weights and rotation helpers.

The skeleton is bound in the VRM T-pose: standing along +Y, facing +Z, arms along
X with the palms down, thumbs 45 degrees forward. Every joint's rest rotation is
the identity, so a joint's local axes are the world axes in the bind pose and a
joint's inverse bind matrix is a pure translation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .geometry import Vec3, add, normalize, scale, smoothstep
from .styles import Proportions

Quat = tuple[float, float, float, float]  # x, y, z, w (glTF order)
Weights = tuple[tuple[int, float], ...]  # (joint index, weight), at most four, summing to 1

IDENTITY: Quat = (0.0, 0.0, 0.0, 1.0)
SIDES = ("left", "right")
_FINGERS = ("Thumb", "Index", "Middle")
_FINGER_SEGMENTS = {
    "Thumb": ("Metacarpal", "Proximal", "Distal"),
    "Index": ("Proximal", "Intermediate", "Distal"),
    "Middle": ("Proximal", "Intermediate", "Distal"),
}


def _bone_table() -> list[tuple[str, str | None]]:
    bones: list[tuple[str, str | None]] = [
        ("hips", None),
        ("spine", "hips"),
        ("chest", "spine"),
        ("upperChest", "chest"),
        ("neck", "upperChest"),
        ("head", "neck"),
        ("leftEye", "head"),
        ("rightEye", "head"),
    ]
    for side in SIDES:
        bones += [
            (f"{side}Shoulder", "upperChest"),
            (f"{side}UpperArm", f"{side}Shoulder"),
            (f"{side}LowerArm", f"{side}UpperArm"),
            (f"{side}Hand", f"{side}LowerArm"),
        ]
        for finger in _FINGERS:
            parent = f"{side}Hand"
            for seg in _FINGER_SEGMENTS[finger]:
                bones.append((f"{side}{finger}{seg}", parent))
                parent = f"{side}{finger}{seg}"
    for side in SIDES:
        bones += [
            (f"{side}UpperLeg", "hips"),
            (f"{side}LowerLeg", f"{side}UpperLeg"),
            (f"{side}Foot", f"{side}LowerLeg"),
            (f"{side}Toes", f"{side}Foot"),
        ]
    return bones


BONES: tuple[tuple[str, str | None], ...] = tuple(_bone_table())
BONE_NAMES: tuple[str, ...] = tuple(name for name, _ in BONES)
BONE_INDEX: dict[str, int] = {name: i for i, name in enumerate(BONE_NAMES)}
PARENT: tuple[int, ...] = tuple(-1 if p is None else BONE_INDEX[p] for _, p in BONES)


def finger_bones(side: str, finger: str) -> tuple[str, str, str]:
    a, b, c = (f"{side}{finger}{seg}" for seg in _FINGER_SEGMENTS[finger])
    return a, b, c


@dataclass(frozen=True, slots=True)
class Skeleton:
    """World positions of every joint in the bind pose (natural, unscaled units)."""

    positions: tuple[Vec3, ...]
    floor_y: float
    body: float  # body scale factor of the style
    arm_radius: float
    leg_radius: float
    hand_width: float  # half width of the palm (across the fingers, Z)
    hand_thick: float  # half thickness of the palm (Y)
    finger_radius: float

    def at(self, name: str) -> Vec3:
        return self.positions[BONE_INDEX[name]]

    def local_offset(self, name: str) -> Vec3:
        i = BONE_INDEX[name]
        p = self.positions[i]
        if PARENT[i] < 0:
            return p
        q = self.positions[PARENT[i]]
        return (p[0] - q[0], p[1] - q[1], p[2] - q[2])


def build_skeleton(p: Proportions, eye_centers: tuple[Vec3, Vec3]) -> Skeleton:
    b = p.body
    w = p.width
    s_y = p.shoulder_y
    z0 = -0.01 * p.k
    pos: dict[str, Vec3] = {
        "hips": (0.0, s_y - 0.48 * b, 0.0),
        "spine": (0.0, s_y - 0.36 * b, 0.0),
        "chest": (0.0, s_y - 0.23 * b, 0.0),
        "upperChest": (0.0, s_y - 0.11 * b, 0.0),
        "neck": (0.0, p.neck_bottom_y, z0),
        "head": (0.0, p.neck_top_y, z0),
        "leftEye": eye_centers[0],
        "rightEye": eye_centers[1],
    }
    arm_y = s_y - 0.04 * b
    arm_z = -0.005
    hand_width = 0.041 * b
    hand_thick = 0.015 * b
    finger_r = 0.0085 * b
    for side, sign in (("left", 1.0), ("right", -1.0)):
        x_arm = p.shoulder_w - 0.04 * b
        elbow = x_arm + 0.28 * b
        wrist = elbow + 0.245 * b
        knuckle = wrist + 0.092 * b
        pos[f"{side}Shoulder"] = (sign * 0.03 * b, s_y - 0.02 * b, arm_z)
        pos[f"{side}UpperArm"] = (sign * x_arm, arm_y, arm_z)
        pos[f"{side}LowerArm"] = (sign * elbow, arm_y, arm_z - 0.004)
        pos[f"{side}Hand"] = (sign * wrist, arm_y, arm_z)
        for finger, z_off, lengths in (
            ("Index", 0.62, (0.043, 0.026, 0.021)),
            ("Middle", -0.30, (0.045, 0.028, 0.022)),
        ):
            x = knuckle - (0.004 if finger == "Index" else 0.0) * b
            z = arm_z + z_off * hand_width
            for bone, length in zip(finger_bones(side, finger), (0.0, *lengths[:2]), strict=True):
                x += length * b
                pos[bone] = (sign * x, arm_y - 0.002 * b, z)
        # The thumb: from the heel of the palm, 45 degrees between the fingers and forward.
        d = normalize((1.0, 0.0, 1.0))
        start = (wrist + 0.018 * b, arm_y - 0.006 * b, arm_z + 0.55 * hand_width)
        for bone, along in zip(
            finger_bones(side, "Thumb"), (0.0, 0.036 * b, 0.066 * b), strict=True
        ):
            q = add(start, scale(d, along))
            pos[bone] = (sign * q[0], q[1], q[2])
        hip_x = 0.088 * b * w**0.5
        hip_y = s_y - 0.545 * b
        knee_y = hip_y - 0.405 * b
        ankle_y = knee_y - 0.395 * b
        pos[f"{side}UpperLeg"] = (sign * hip_x, hip_y, 0.0)
        pos[f"{side}LowerLeg"] = (sign * hip_x * 0.97, knee_y, 0.008 * b)
        pos[f"{side}Foot"] = (sign * hip_x * 0.97, ankle_y, -0.015 * b)
        pos[f"{side}Toes"] = (sign * hip_x * 0.99, ankle_y - 0.045 * b, 0.115 * b)
    floor_y = pos["leftFoot"][1] - 0.075 * b
    return Skeleton(
        positions=tuple(pos[name] for name in BONE_NAMES),
        floor_y=floor_y,
        body=b,
        arm_radius=0.043 * b * w**0.5,
        leg_radius=0.07 * b * w**0.5,
        hand_width=hand_width,
        hand_thick=hand_thick,
        finger_radius=finger_r,
    )


# --- skin weights -----------------------------------------------------------------


def normalized(pairs: Sequence[tuple[int, float]]) -> Weights:
    """Merge duplicates, keep the four strongest, make them sum to one."""
    acc: dict[int, float] = {}
    for j, w in pairs:
        if w > 0.0:
            acc[j] = acc.get(j, 0.0) + w
    best = sorted(acc.items(), key=lambda jw: (-jw[1], jw[0]))[:4]
    total = sum(w for _, w in best)
    if total <= 0.0:
        raise ValueError("a vertex has no joint weight")
    return tuple(sorted((j, w / total) for j, w in best))


def chain(t: float, joints: Sequence[str], bounds: Sequence[float], width: float) -> Weights:
    """Weights along a chain of joints; joint ``i`` owns ``bounds[i-1] <= t < bounds[i]``.

    ``bounds`` ascend; within ``width`` of a bound the two neighbours blend smoothly.
    """
    out: list[tuple[int, float]] = []
    seg = 0
    while seg < len(bounds) and t >= bounds[seg]:
        seg += 1
    out.append((BONE_INDEX[joints[seg]], 1.0))
    # Blend towards the neighbour across the nearest bound.
    if seg < len(bounds) and bounds[seg] - t < width:
        f = smoothstep(bounds[seg] - width, bounds[seg] + width, t)
        out = [(BONE_INDEX[joints[seg]], 1.0 - f), (BONE_INDEX[joints[seg + 1]], f)]
    elif seg > 0 and t - bounds[seg - 1] < width:
        f = smoothstep(bounds[seg - 1] - width, bounds[seg - 1] + width, t)
        out = [(BONE_INDEX[joints[seg - 1]], 1.0 - f), (BONE_INDEX[joints[seg]], f)]
    return normalized(out)


def rigid(name: str) -> Weights:
    return ((BONE_INDEX[name], 1.0),)


class Weigher:
    """Skin weights by region, from a vertex's bind-pose position."""

    def __init__(self, sk: Skeleton, p: Proportions) -> None:
        self.sk = sk
        self.p = p
        self._spine_joints = ("hips", "spine", "chest", "upperChest", "neck", "head")
        ys = [sk.at(j)[1] for j in self._spine_joints[1:]]
        self._spine_bounds = ys

    def spine(self, q: Vec3) -> Weights:
        return chain(q[1], self._spine_joints, self._spine_bounds, 0.045 * self.sk.body)

    def torso(self, q: Vec3) -> Weights:
        """Shirt and neck: the spine, the shoulders near the arms, the legs near the hips."""
        sk = self.sk
        base = list(self.spine(q))
        side = "left" if q[0] >= 0.0 else "right"
        ax = abs(q[0])
        arm = sk.at(f"{side}UpperArm")
        sh = sk.at(f"{side}Shoulder")
        # Shoulder: the dome over the arm follows the clavicle, its tip follows the arm.
        near_arm = smoothstep(abs(sh[0]) + 0.04 * sk.body, abs(arm[0]), ax) * smoothstep(
            arm[1] - 0.16 * sk.body, arm[1] - 0.02 * sk.body, q[1]
        )
        tip = smoothstep(abs(arm[0]) - 0.08 * sk.body, abs(arm[0]) - 0.01 * sk.body, ax)
        out = [(j, w * (1.0 - near_arm)) for j, w in base]
        out.append((BONE_INDEX[f"{side}Shoulder"], near_arm * (1.0 - 0.6 * tip)))
        out.append((BONE_INDEX[f"{side}UpperArm"], near_arm * 0.6 * tip))
        # Hips: the seat and the tops of the thighs follow the legs a little.
        leg = sk.at(f"{side}UpperLeg")
        low = 1.0 - smoothstep(leg[1] - 0.04 * sk.body, leg[1] + 0.08 * sk.body, q[1])
        lateral = smoothstep(0.2 * abs(leg[0]), abs(leg[0]), ax)
        thigh = 0.6 * low * lateral
        if thigh > 0.0:
            out = [(j, w * (1.0 - thigh)) for j, w in out]
            out.append((BONE_INDEX[f"{side}UpperLeg"], thigh))
        return normalized(out)

    def arm(self, side: str, q: Vec3) -> Weights:
        sk = self.sk
        sign = 1.0 if side == "left" else -1.0
        t = sign * q[0]
        joints = (f"{side}Shoulder", f"{side}UpperArm", f"{side}LowerArm", f"{side}Hand")
        bounds = [sign * sk.at(j)[0] for j in joints[1:]]
        bounds[0] -= 0.03 * sk.body  # the whole sleeve follows the upper arm
        return chain(t, joints, bounds, 0.03 * sk.body)

    def finger(self, side: str, finger: str, q: Vec3) -> Weights:
        sk = self.sk
        bones = finger_bones(side, finger)
        start = sk.at(bones[0])
        end = sk.at(bones[2])
        d = normalize((end[0] - start[0], end[1] - start[1], end[2] - start[2]))
        rel = (q[0] - start[0], q[1] - start[1], q[2] - start[2])
        t = rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2]
        bounds = []
        for bone in bones:
            b = sk.at(bone)
            bounds.append(
                (b[0] - start[0]) * d[0] + (b[1] - start[1]) * d[1] + (b[2] - start[2]) * d[2]
            )
        joints = (f"{side}Hand", *bones)
        return chain(t, joints, bounds, 0.008 * sk.body)

    def leg(self, side: str, q: Vec3) -> Weights:
        sk = self.sk
        joints = ("hips", f"{side}UpperLeg", f"{side}LowerLeg", f"{side}Foot")
        ys = [sk.at(j)[1] for j in joints[1:]]
        # chain() wants ascending bounds: walk down the leg as t = -y.
        bounds = [-y for y in ys]
        bounds[0] -= 0.03 * sk.body
        return chain(-q[1], joints, bounds, 0.05 * sk.body)

    def foot(self, side: str, q: Vec3) -> Weights:
        sk = self.sk
        toes = sk.at(f"{side}Toes")
        joints = (f"{side}Foot", f"{side}Toes")
        w = chain(q[2], joints, [toes[2] - 0.01 * sk.body], 0.02 * sk.body)
        ankle = sk.at(f"{side}Foot")
        up = smoothstep(ankle[1] - 0.01 * sk.body, ankle[1] + 0.04 * sk.body, q[1])
        if up <= 0.0:
            return w
        out = [(j, v * (1.0 - up)) for j, v in w]
        out.append((BONE_INDEX[f"{side}LowerLeg"], up))
        return normalized(out)


# --- rotations --------------------------------------------------------------------


def axis_angle(axis: Vec3, degrees: float) -> Quat:
    a = math.radians(degrees) / 2.0
    s = math.sin(a)
    n = normalize(axis)
    return (n[0] * s, n[1] * s, n[2] * s, math.cos(a))


def rx(degrees: float) -> Quat:
    return axis_angle((1.0, 0.0, 0.0), degrees)


def ry(degrees: float) -> Quat:
    return axis_angle((0.0, 1.0, 0.0), degrees)


def rz(degrees: float) -> Quat:
    return axis_angle((0.0, 0.0, 1.0), degrees)


def qmul(*qs: Quat) -> Quat:
    """Hamilton product, left to right: ``qmul(a, b)`` rotates by ``b`` first."""
    x, y, z, w = IDENTITY
    for q in qs:
        bx, by, bz, bw = q
        x, y, z, w = (
            w * bx + x * bw + y * bz - z * by,
            w * by - x * bz + y * bw + z * bx,
            w * bz + x * by - y * bx + z * bw,
            w * bw - x * bx - y * by - z * bz,
        )
    return (x, y, z, w)


def rotate(q: Quat, v: Vec3) -> Vec3:
    x, y, z, w = q
    # v + 2w(u x v) + 2u x (u x v)
    cx = y * v[2] - z * v[1]
    cy = z * v[0] - x * v[2]
    cz = x * v[1] - y * v[0]
    return (
        v[0] + 2.0 * (w * cx + y * cz - z * cy),
        v[1] + 2.0 * (w * cy + z * cx - x * cz),
        v[2] + 2.0 * (w * cz + x * cy - y * cx),
    )


def slerp(a: Quat, b: Quat, t: float) -> Quat:
    d = a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3]
    if d < 0.0:
        b = (-b[0], -b[1], -b[2], -b[3])
        d = -d
    if d > 0.9995:
        out = tuple(a[i] + (b[i] - a[i]) * t for i in range(4))
    else:
        theta = math.acos(d)
        s = math.sin(theta)
        wa = math.sin((1.0 - t) * theta) / s
        wb = math.sin(t * theta) / s
        out = tuple(wa * a[i] + wb * b[i] for i in range(4))
    n = math.sqrt(sum(c * c for c in out))
    return (out[0] / n, out[1] / n, out[2] / n, out[3] / n)


def mirror(q: Quat) -> Quat:
    """The same rotation reflected through the YZ plane (left side to right side)."""
    return (q[0], -q[1], -q[2], q[3])


def canonical(q: Quat) -> Quat:
    """``q`` or ``-q``, whichever has w >= 0 (the same rotation)."""
    return q if q[3] >= 0.0 else (-q[0], -q[1], -q[2], -q[3])
