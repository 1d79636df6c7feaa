"""Style tables and the proportions derived from a spec (style, body type, seed)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .spec import ProceduralSpec

# Per style: relative sizes and shapes. Lengths are multiples of a realistic adult head.
# fmt: off
_STYLE_TABLE: dict[str, dict[str, float]] = {
    "realistic": {
        "head": 1.0, "rx": 1.0, "ry": 1.0, "rz": 1.0, "boxy": 0.0, "jaw": 0.3, "chin": 0.1,
        "eye_u": 0.4, "eye_v": 0.02, "eye_size": 1.0, "eye_tall": 1.0, "eye_flat": 1.0,
        "iris": 0.42, "pupil": 0.18, "protrude": 0.42, "socket": 0.006, "nose": 1.0,
        "nose_w": 1.0, "nose_v": -0.3, "mouth_v": -0.53, "mouth_w": 1.0, "lips": 1.0, "brow": 1.0,
        "ear": 1.0, "neck": 1.0, "neck_r": 1.0, "body": 1.0, "rough": 0.55, "metal": 0.0,
        "bangs": 0.0,
    },
    "anime": {
        "head": 1.08, "rx": 0.98, "ry": 0.98, "rz": 0.96, "boxy": 0.0, "jaw": 0.55, "chin": 0.16,
        "eye_u": 0.43, "eye_v": -0.14, "eye_size": 1.75, "eye_tall": 1.3, "eye_flat": 0.55,
        "iris": 0.62, "pupil": 0.3, "protrude": 0.32, "socket": 0.004, "nose": 0.35,
        "nose_w": 0.6, "nose_v": -0.33, "mouth_v": -0.56, "mouth_w": 0.7, "lips": 0.3,
        "brow": 0.7, "ear": 0.9, "neck": 0.95, "neck_r": 0.82, "body": 0.92, "rough": 0.75,
        "metal": 0.0, "bangs": 1.0,
    },
    "cartoon": {
        "head": 1.28, "rx": 1.12, "ry": 0.96, "rz": 1.02, "boxy": 0.0, "jaw": 0.12, "chin": 0.05,
        "eye_u": 0.36, "eye_v": 0.0, "eye_size": 1.55, "eye_tall": 1.15, "eye_flat": 0.9,
        "iris": 0.45, "pupil": 0.26, "protrude": 0.48, "socket": 0.003, "nose": 1.7,
        "nose_w": 1.9, "nose_v": -0.26, "mouth_v": -0.52, "mouth_w": 1.3, "lips": 0.7,
        "brow": 1.5, "ear": 1.15, "neck": 0.8, "neck_r": 0.9, "body": 0.9, "rough": 0.7,
        "metal": 0.0, "bangs": 0.5,
    },
    "chibi": {
        "head": 1.8, "rx": 1.12, "ry": 0.92, "rz": 1.0, "boxy": 0.0, "jaw": 0.1, "chin": 0.04,
        "eye_u": 0.42, "eye_v": -0.22, "eye_size": 2.0, "eye_tall": 1.3, "eye_flat": 0.55,
        "iris": 0.64, "pupil": 0.32, "protrude": 0.3, "socket": 0.003, "nose": 0.25,
        "nose_w": 0.7, "nose_v": -0.38, "mouth_v": -0.58, "mouth_w": 0.62, "lips": 0.2,
        "brow": 0.8, "ear": 0.85, "neck": 0.4, "neck_r": 0.8, "body": 0.66, "rough": 0.8,
        "metal": 0.0, "bangs": 1.0,
    },
    "robot": {
        "head": 1.05, "rx": 1.02, "ry": 0.96, "rz": 0.98, "boxy": 5.0, "jaw": 0.0, "chin": 0.0,
        "eye_u": 0.4, "eye_v": 0.02, "eye_size": 1.25, "eye_tall": 1.0, "eye_flat": 0.6,
        "iris": 0.72, "pupil": 0.22, "protrude": 0.45, "socket": 0.006, "nose": 0.0,
        "nose_w": 1.0, "nose_v": -0.3, "mouth_v": -0.52, "mouth_w": 1.1, "lips": 0.0, "brow": 1.1,
        "ear": 1.0, "neck": 0.9, "neck_r": 1.1, "body": 1.05, "rough": 0.32, "metal": 0.85,
        "bangs": 0.0,
    },
    "fantasy": {
        "head": 1.02, "rx": 0.95, "ry": 1.06, "rz": 0.98, "boxy": 0.0, "jaw": 0.42, "chin": 0.12,
        "eye_u": 0.41, "eye_v": 0.0, "eye_size": 1.2, "eye_tall": 1.05, "eye_flat": 0.85,
        "iris": 0.48, "pupil": 0.2, "protrude": 0.4, "socket": 0.006, "nose": 0.85, "nose_w": 0.8,
        "nose_v": -0.3, "mouth_v": -0.54, "mouth_w": 0.9, "lips": 0.8, "brow": 0.8, "ear": 1.0,
        "neck": 1.15, "neck_r": 0.9, "body": 0.95, "rough": 0.5, "metal": 0.0, "bangs": 0.3,
    },
}
# fmt: on

_EAR_TYPE = {
    "realistic": "human",
    "anime": "human",
    "cartoon": "round",
    "chibi": "round",
    "robot": "bolt",
    "fantasy": "elf",
}

_BODY_TYPE = {"slim": (0.86, 0.9), "average": (1.0, 1.0), "broad": (1.17, 1.12)}

# A realistic adult head: half width, half height, half depth (metres).
_HEAD_RX, _HEAD_RY, _HEAD_RZ = 0.074, 0.104, 0.093
_SHOULDER_Y = 1.40
# Standing height (metres) when the description gives none, before the body type and seed.
_STATURE = {
    "realistic": 1.72, "anime": 1.66, "cartoon": 1.62, "chibi": 1.52, "robot": 1.8, "fantasy": 1.76,
}  # fmt: skip
_STATURE_BODY = {"slim": -0.02, "average": 0.0, "broad": 0.03}


@dataclass(frozen=True, slots=True)
class Proportions:
    """Every size and position the builders need, in metres (world space)."""

    style: str
    k: float  # feature scale: sizes of facial features relative to a realistic head
    head_center: tuple[float, float, float]
    rx: float
    ry: float
    rz: float
    boxy: float
    jaw: float
    chin: float
    eye_x: float
    eye_y: float  # relative to the head centre
    eye_r: float
    eye_tall: float
    eye_flat: float
    iris: float
    pupil: float
    protrude: float
    socket: float
    nose_h: float
    nose_w: float
    nose_tip_y: float
    nose_bridge_y: float
    mouth_y: float
    mouth_w: float
    lips: float
    brow_thick: float
    brow_arch: float
    brow_gap: float
    ear_type: str
    ear_size: float
    neck_r: float
    neck_bottom_y: float
    neck_top_y: float
    torso_top_y: float
    shoulder_y: float
    shoulder_w: float
    chest_d: float
    bust_bottom_y: float
    hair_thick: float
    hair_volume: float
    bangs: float
    rough: float
    metal: float
    flat: bool
    hair_rng_seed: int
    body: float  # the style's body scale (limb lengths and girths)
    width: float  # the body type's width factor
    height: float  # standing height in metres, soles to crown


def _jitter(rng: random.Random, amount: float) -> float:
    return 1.0 + rng.uniform(-amount, amount)


def proportions(spec: ProceduralSpec) -> Proportions:
    """Derive sizes from the style table, the body type and the seed."""
    t = _STYLE_TABLE[spec.style]
    # Mix the sign into the seed: random.Random(n) treats n and -n alike.
    rng = random.Random(spec.seed * 2 if spec.seed >= 0 else -spec.seed * 2 - 1)
    # Draw in a fixed order so every value depends on the seed the same way.
    j_width = _jitter(rng, 0.035)
    j_height = _jitter(rng, 0.025)
    j_eye_sep = _jitter(rng, 0.04)
    j_eye_size = _jitter(rng, 0.05)
    j_nose = _jitter(rng, 0.15)
    j_mouth = _jitter(rng, 0.08)
    j_brow = _jitter(rng, 0.2)
    j_brow_thick = _jitter(rng, 0.15)
    j_hair = _jitter(rng, 0.1)
    j_jaw = _jitter(rng, 0.15)
    j_shoulders = _jitter(rng, 0.04)
    hair_seed = rng.randrange(1 << 30)
    j_stature = _jitter(rng, 0.02)

    width, depth = _BODY_TYPE[spec.body_type]
    if spec.height_m > 0.0:
        height = spec.height_m
    else:
        height = (_STATURE[spec.style] + _STATURE_BODY[spec.body_type]) * j_stature
        height = min(2.0, max(1.5, height))
    body = t["body"] * j_shoulders
    head = t["head"]
    k = head
    rx = _HEAD_RX * head * t["rx"] * j_width
    ry = _HEAD_RY * head * t["ry"] * j_height
    rz = _HEAD_RZ * head * t["rz"]

    shoulder_y = _SHOULDER_Y
    shoulder_w = 0.205 * body * width
    chest_d = 0.105 * body * depth
    neck_r = 0.056 * t["neck_r"] * (0.92 + 0.08 * width) * max(body, 0.8)
    torso_top_y = shoulder_y + 0.10 * body
    neck_len = 0.05 * t["neck"]
    head_center_y = torso_top_y + neck_len + 0.78 * ry
    head_center = (0.0, head_center_y, 0.0)

    eye_r = 0.0118 * k * t["eye_size"] * j_eye_size
    eye_x = rx * t["eye_u"] * j_eye_sep
    eye_x = max(eye_x, eye_r * 1.22)
    eye_y = ry * t["eye_v"]

    return Proportions(
        style=spec.style,
        k=k,
        head_center=head_center,
        rx=rx,
        ry=ry,
        rz=rz,
        boxy=t["boxy"],
        jaw=t["jaw"] * j_jaw,
        chin=t["chin"],
        eye_x=eye_x,
        eye_y=eye_y,
        eye_r=eye_r,
        eye_tall=t["eye_tall"],
        eye_flat=t["eye_flat"],
        iris=t["iris"],
        pupil=t["pupil"],
        protrude=t["protrude"],
        socket=t["socket"] * k,
        nose_h=0.017 * k * t["nose"] * j_nose,
        nose_w=0.0105 * k * t["nose_w"],
        nose_tip_y=ry * t["nose_v"],
        nose_bridge_y=eye_y - 0.004 * k,
        mouth_y=ry * t["mouth_v"],
        mouth_w=0.023 * k * t["mouth_w"] * j_mouth,
        lips=t["lips"],
        brow_thick=0.0022 * k * t["brow"] * j_brow_thick,
        brow_arch=0.003 * k * j_brow,
        brow_gap=eye_r * t["eye_tall"] * 1.05 + 0.006 * k,
        ear_type=_EAR_TYPE[spec.style],
        ear_size=0.030 * k * t["ear"],
        neck_r=neck_r,
        neck_bottom_y=torso_top_y - 0.03,
        neck_top_y=head_center_y - 0.35 * ry,
        torso_top_y=torso_top_y,
        shoulder_y=shoulder_y,
        shoulder_w=shoulder_w,
        chest_d=chest_d,
        bust_bottom_y=shoulder_y - 0.30 * max(body, 0.8),
        hair_thick=0.007 * k * j_hair,
        hair_volume=j_hair,
        bangs=t["bangs"],
        rough=t["rough"],
        metal=t["metal"],
        flat=spec.style == "robot",
        hair_rng_seed=hair_seed,
        body=body,
        width=width,
        height=height,
    )
