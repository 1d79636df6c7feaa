"""Morph targets for the face: the 15 Oculus visemes and the marker emotions.

Every target is a weighted sum of a few smooth deformation fields (jaw, lips,
mouth corners, brows). A field is a function of a vertex's rest position and
its tag, so vertices that coincide (the two sides of the lip line, the rim of
the mouth cavity) move together wherever they should, and apart where the
mouth opens. Only vertices that actually move are stored (sparse accessors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from services.common.vocabulary import EMOTIONS
from services.speech.visemes import VISEMES

from .geometry import (
    TAG_BROW,
    TAG_FIELD,
    TAG_LID_LOWER,
    TAG_LID_UPPER,
    TAG_LOWER,
    TAG_TEETH_LOWER,
    TAG_TEETH_UPPER,
    TAG_UPPER,
    Geometry,
    Vec3,
    clamp,
    rotate_x,
    smoothstep,
)
from .head import LID_EDGES, LID_SPREAD, LID_TOP, FaceLandmarks

VISEME_NAMES: tuple[str, ...] = tuple(f"viseme_{v}" for v in VISEMES)
EMOTION_NAMES: tuple[str, ...] = tuple(f"emotion_{e}" for e in EMOTIONS)
BLINK_NAMES: tuple[str, ...] = ("blink_left", "blink_right")  # the avatar's left (+X) first
MORPH_TARGET_NAMES: tuple[str, ...] = VISEME_NAMES + EMOTION_NAMES + BLINK_NAMES

# Deformation fields.
JAW, APART, PUCKER, WIDE, PRESS, TUCK = "jaw", "apart", "pucker", "wide", "press", "tuck"
CORNER_L, CORNER_R = "corner_l", "corner_r"
BROW_IN_L, BROW_IN_R, BROW_OUT_L, BROW_OUT_R = "brow_in_l", "brow_in_r", "brow_out_l", "brow_out_r"
SQUEEZE_L, SQUEEZE_R = "squeeze_l", "squeeze_r"
LID_UPPER, LID_LOWER = "lid_upper", "lid_lower"  # close the upper lid / raise the lower one
CLOSE_L, CLOSE_R = "close_l", "close_r"  # the upper lid all the way down, per eye
FIELDS = (
    JAW, APART, PUCKER, WIDE, PRESS, TUCK, CORNER_L, CORNER_R,
    BROW_IN_L, BROW_IN_R, BROW_OUT_L, BROW_OUT_R, SQUEEZE_L, SQUEEZE_R, LID_UPPER, LID_LOWER,
    CLOSE_L, CLOSE_R,
)  # fmt: skip


def _both(left: str, right: str, w: float) -> dict[str, float]:
    return {left: w, right: w}


SMILE = _both(CORNER_L, CORNER_R, 1.0)

# Recipes: field -> weight. Silence and neutral are the rest pose (all zero).
RECIPES: dict[str, dict[str, float]] = {
    "viseme_sil": {},
    "viseme_PP": {PRESS: 1.0},
    "viseme_FF": {TUCK: 1.0, JAW: 0.08},
    "viseme_TH": {JAW: 0.18, APART: 0.6},
    "viseme_DD": {JAW: 0.26, APART: 0.5, WIDE: 0.2},
    "viseme_kk": {JAW: 0.34, APART: 0.5, WIDE: 0.15},
    "viseme_CH": {JAW: 0.14, APART: 0.7, PUCKER: 0.6},
    "viseme_SS": {JAW: 0.07, APART: 0.5, WIDE: 0.5},
    "viseme_nn": {JAW: 0.2, APART: 0.35},
    "viseme_RR": {JAW: 0.2, APART: 0.4, PUCKER: 0.5},
    "viseme_aa": {JAW: 1.0, APART: 0.6},
    "viseme_E": {JAW: 0.45, APART: 0.5, WIDE: 0.6},
    "viseme_I": {JAW: 0.24, APART: 0.5, WIDE: 0.9},
    "viseme_O": {JAW: 0.62, APART: 0.4, PUCKER: 0.7},
    "viseme_U": {JAW: 0.24, APART: 0.2, PUCKER: 1.0},
    "emotion_neutral": {},
    "emotion_happy": {
        **SMILE, WIDE: 0.25, LID_LOWER: 0.6,
        **_both(BROW_IN_L, BROW_IN_R, 0.2), **_both(BROW_OUT_L, BROW_OUT_R, 0.3),
    },
    "emotion_sad": {
        **_both(CORNER_L, CORNER_R, -0.8), PRESS: 0.2,
        **_both(BROW_IN_L, BROW_IN_R, 1.0), **_both(BROW_OUT_L, BROW_OUT_R, -0.3), LID_UPPER: 0.3,
    },
    "emotion_angry": {
        **_both(BROW_IN_L, BROW_IN_R, -1.0), **_both(SQUEEZE_L, SQUEEZE_R, 1.0),
        **_both(CORNER_L, CORNER_R, -0.4), PRESS: 0.5, LID_UPPER: 0.3, LID_LOWER: 0.35,
    },
    "emotion_surprised": {
        **_both(BROW_IN_L, BROW_IN_R, 1.0), **_both(BROW_OUT_L, BROW_OUT_R, 1.0),
        JAW: 0.45, APART: 0.5, PUCKER: 0.2, LID_UPPER: -0.5,
    },
    "emotion_calm": {
        **_both(CORNER_L, CORNER_R, 0.3), **_both(BROW_IN_L, BROW_IN_R, -0.1),
        **_both(BROW_OUT_L, BROW_OUT_R, -0.1), LID_UPPER: 0.25,
    },
    "emotion_excited": {
        **SMILE, JAW: 0.35, APART: 0.6, WIDE: 0.4,
        **_both(BROW_IN_L, BROW_IN_R, 0.7), **_both(BROW_OUT_L, BROW_OUT_R, 0.7),
        LID_UPPER: -0.3, LID_LOWER: 0.3,
    },
    "emotion_thoughtful": {
        BROW_OUT_L: 0.9, BROW_IN_L: 0.5, BROW_IN_R: -0.4, SQUEEZE_R: 0.4,
        CORNER_L: -0.2, CORNER_R: 0.25, PRESS: 0.5, LID_UPPER: 0.2, LID_LOWER: 0.3,
    },
    "emotion_concerned": {
        **_both(BROW_IN_L, BROW_IN_R, 0.8), **_both(SQUEEZE_L, SQUEEZE_R, 0.5),
        **_both(BROW_OUT_L, BROW_OUT_R, -0.2), **_both(CORNER_L, CORNER_R, -0.35), PRESS: 0.3,
        LID_UPPER: 0.15,
    },
    "blink_left": {CLOSE_L: 1.0},
    "blink_right": {CLOSE_R: 1.0},
}  # fmt: skip

JAW_ANGLE = 0.2  # radians at full opening (viseme_aa)
LID_ANGLES = {LID_UPPER: 0.55, LID_LOWER: -0.3}  # rotation of a lid edge about its eye

SparseDeltas = list[tuple[int, Vec3]]


def _g(d: float, sigma: float) -> float:
    q = d / sigma
    return math.exp(-q * q)


class _Fields:
    def __init__(self, lm: FaceLandmarks, k: float) -> None:
        self.lm = lm
        self.k = k

    def evaluate(self, q: Vec3, tag: int, aux: float) -> dict[str, Vec3]:
        """Field displacements of one vertex (head-local rest position ``q``)."""
        lm = self.lm
        k = self.k
        x, y, z = q
        out: dict[str, Vec3] = {}
        if tag == TAG_BROW:
            self._brows(out, x, 1.0)
            return out
        if tag in (TAG_LID_UPPER, TAG_LID_LOWER):
            name = LID_UPPER if tag == TAG_LID_UPPER else LID_LOWER
            c = lm.eye_centers[0] if x >= 0.0 else lm.eye_centers[1]
            rel = (x - c[0], y - c[1], z - c[2])
            moved = rotate_x(rel, LID_ANGLES[name] * aux)
            out[name] = (0.0, moved[1] - rel[1], moved[2] - rel[2])
            if tag == TAG_LID_UPPER:
                out[CLOSE_L if x >= 0.0 else CLOSE_R] = self._close(rel)
            return out
        if tag not in (TAG_FIELD, TAG_UPPER, TAG_LOWER, TAG_TEETH_UPPER, TAG_TEETH_LOWER):
            return out

        dym = y - lm.mouth_y
        mw = lm.mouth_w
        opening = clamp(1.0 - (x / lm.slit_w) ** 2)
        hz = lm.hinge[2]
        front_jaw = smoothstep(hz - 0.01 * k, hz + 0.05 * k, z)
        tagged = tag != TAG_FIELD

        # Jaw: rotation about a hinge near the ears.
        if tag == TAG_UPPER:
            w = 0.5 * (1.0 - opening)
        elif tag == TAG_LOWER:
            w = 0.5 * (1.0 + opening)
        elif tag == TAG_TEETH_UPPER:
            w = 0.0
        elif tag == TAG_TEETH_LOWER:
            w = 1.0
        else:
            band = 0.002 * k + 0.03 * k * smoothstep(0.5 * mw, 1.5 * mw, abs(x))
            g = smoothstep(0.0, band, abs(dym))
            w = 0.5 - 0.5 * g if dym > 0.0 else 0.5 + 0.5 * g
        w *= front_jaw
        if w > 0.0:
            rel = (x - lm.hinge[0], y - lm.hinge[1], z - hz)
            moved = rotate_x(rel, JAW_ANGLE * w)
            out[JAW] = (0.0, moved[1] - rel[1], moved[2] - rel[2])

        if tag in (TAG_TEETH_UPPER, TAG_TEETH_LOWER):
            return out

        # Lips.
        front_mouth = (
            1.0 if tagged else smoothstep(lm.mouth_z - 0.035 * k, lm.mouth_z - 0.01 * k, z)
        )
        inside = 1.0 - aux
        across = math.exp(-((x / (1.15 * mw)) ** 4))
        if tagged:
            side = 1.0 if tag == TAG_UPPER else -1.0
            lip = inside * across
            lip_line = lip
            part = opening
        else:
            side = clamp(dym / (0.003 * k), -1.0, 1.0)
            lip = across * _g(dym, 0.011 * k) * front_mouth * inside
            lip_line = lip * _g(dym, 0.006 * k)
            part = _g(x, mw)
        if lip > 0.0:
            up = 0.0015 * k if side > 0.0 else 0.0025 * k
            out[APART] = (0.0, side * up * part * lip, 0.0)
            out[PUCKER] = (
                -0.38 * x * lip,
                (0.0 if tagged else -0.15 * dym * lip),
                0.0065 * k * lip,
            )
            out[WIDE] = (0.25 * x * lip, 0.0, -0.0025 * k * (x / mw) ** 2 * lip)
            out[PRESS] = (0.0, -side * 0.0012 * k * lip_line, -0.0012 * k * lip_line)
            lower = max(0.0, -side) * (lip if tagged else lip * _g(dym + 0.005 * k, 0.006 * k))
            if lower > 0.0:
                out[TUCK] = (0.0, 0.0022 * k * lower, -0.0042 * k * lower)

        # Mouth corners, with the cheeks above them.
        front = 1.0 if tagged else front_mouth
        for name, sign in ((CORNER_L, 1.0), (CORNER_R, -1.0)):
            pull = _g(x - sign * mw, 0.55 * mw) * front * inside
            if not tagged:
                pull *= _g(dym, 0.011 * k)
            cheek = 0.0
            if not tagged:
                cheek = (
                    _g(x - sign * 1.5 * mw, 0.8 * mw) * _g(dym - 0.022 * k, 0.014 * k) * front_mouth
                )
            if pull > 0.0 or cheek > 0.0:
                out[name] = (
                    sign * 0.0018 * k * pull,
                    0.0042 * k * pull + 0.002 * k * cheek,
                    -0.0012 * k * pull + 0.0012 * k * cheek,
                )

        if not tagged:
            front_brow = smoothstep(lm.brow_z - 0.03 * k, lm.brow_z - 0.008 * k, z)
            weight = _g(y - lm.brow_y, 0.011 * k) * front_brow
            ax = abs(x)
            weight *= smoothstep(lm.brow_inner - 0.016 * k, lm.brow_inner + 0.002 * k, ax)
            weight *= 1.0 - smoothstep(lm.brow_outer, lm.brow_outer + 0.015 * k, ax)
            if weight > 0.0:
                self._brows(out, x, weight)
        return out

    def _close(self, rel: Vec3) -> Vec3:
        """Slide an upper-lid vertex down its shell until the lid edge meets the lower lid.

        Rows keep their share of the lid between its top and its edge, so a closed lid
        stays a smooth shell in front of the eye at any tessellation.
        """
        tall, flat = self.lm.eye_shape
        u = (rel[0], rel[1] / tall, rel[2] / flat)
        r = math.sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2])
        theta = math.acos(max(-1.0, min(1.0, u[1] / r)))
        psi = math.atan2(u[0], u[2])
        upper, lower = LID_EDGES[tall > 1.1]
        s = min(1.0, abs(psi) / LID_SPREAD)
        edge = math.pi * (upper + (0.5 - upper) * s * s)
        share = clamp((theta - LID_TOP) / max(1e-6, edge - LID_TOP))
        gap = math.pi * (1.0 - upper - lower) * (1.0 - s * s)
        t = theta + gap * share
        moved = (
            r * math.sin(t) * math.sin(psi),
            r * math.cos(t) * tall,
            r * math.sin(t) * math.cos(psi) * flat,
        )
        return (moved[0] - rel[0], moved[1] - rel[1], moved[2] - rel[2])

    def _brows(self, out: dict[str, Vec3], x: float, weight: float) -> None:
        lm = self.lm
        k = self.k
        t = clamp((abs(x) - lm.brow_inner) / (lm.brow_outer - lm.brow_inner))
        left = x >= 0.0
        sign = 1.0 if left else -1.0
        inner = weight * (1.0 - t)
        outer = weight * t
        out[BROW_IN_L if left else BROW_IN_R] = (0.0, 0.0048 * k * inner, 0.0006 * k * inner)
        out[BROW_OUT_L if left else BROW_OUT_R] = (0.0, 0.0045 * k * outer, 0.0)
        out[SQUEEZE_L if left else SQUEEZE_R] = (
            -sign * 0.0028 * k * inner,
            -0.0012 * k * inner,
            0.0008 * k * inner,
        )


def build_morph_targets(
    parts: Mapping[str, Geometry],
    landmarks: FaceLandmarks,
    center: Vec3,
    k: float,
) -> dict[str, dict[str, SparseDeltas]]:
    """For every target name, the sparse deltas of every face part.

    Deltas are rounded to a micrometre; anything smaller than 10 micrometres
    (times the feature scale) counts as "does not move" and is left out.
    """
    fields = _Fields(landmarks, k)
    threshold = 1e-5 * k
    per_part: dict[str, list[dict[str, Vec3]]] = {}
    for key, geom in parts.items():
        values = []
        for pos, tag, aux in zip(geom.positions, geom.tags, geom.aux, strict=True):
            q = (pos[0] - center[0], pos[1] - center[1], pos[2] - center[2])
            values.append(fields.evaluate(q, tag, aux))
        per_part[key] = values

    # Per part and field: the vertices that field moves, in ascending order.
    by_field: dict[str, dict[str, list[tuple[int, Vec3]]]] = {}
    for key, values in per_part.items():
        lists: dict[str, list[tuple[int, Vec3]]] = {name: [] for name in FIELDS}
        for index, contributions in enumerate(values):
            for field_name, d in contributions.items():
                lists[field_name].append((index, d))
        by_field[key] = lists

    targets: dict[str, dict[str, SparseDeltas]] = {}
    for name in MORPH_TARGET_NAMES:
        recipe = RECIPES[name]
        target: dict[str, SparseDeltas] = {}
        for key, lists in by_field.items():
            acc: dict[int, list[float]] = {}
            for field_name in FIELDS:  # fixed order: the float sums are reproducible
                weight = recipe.get(field_name)
                if weight is None:
                    continue
                for index, d in lists[field_name]:
                    s = acc.get(index)
                    if s is None:
                        acc[index] = [weight * d[0], weight * d[1], weight * d[2]]
                    else:
                        s[0] += weight * d[0]
                        s[1] += weight * d[1]
                        s[2] += weight * d[2]
            deltas: SparseDeltas = []
            for index in sorted(acc):
                dx, dy, dz = acc[index]
                if abs(dx) < threshold and abs(dy) < threshold and abs(dz) < threshold:
                    continue
                deltas.append((index, (round(dx, 6), round(dy, 6), round(dz, 6))))
            target[key] = deltas
        targets[name] = target
    return targets
