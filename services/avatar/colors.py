"""Colour names → "#rrggbb": the small vocabulary profiles and LLM output may use."""

from __future__ import annotations

import re

HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")

COLOR_NAMES: dict[str, str] = {
    "black": "#1a1a1a",
    "white": "#f5f5f5",
    "gray": "#808080",
    "grey": "#808080",
    "silver": "#c0c0c0",
    "red": "#c0392b",
    "crimson": "#b0172f",
    "pink": "#f4a6c0",
    "orange": "#e67e22",
    "yellow": "#f1c40f",
    "gold": "#d4a84b",
    "golden": "#d4a84b",
    "blonde": "#e6c97a",
    "blond": "#e6c97a",
    "platinum": "#e5e4e2",
    "platinum blonde": "#ede3c8",
    "auburn": "#7b3f26",
    "ginger": "#b06500",
    "copper": "#b87333",
    "brown": "#6b4423",
    "dark brown": "#3b2a20",
    "light brown": "#a67b5b",
    "chestnut": "#954535",
    "hazel": "#8e7618",
    "amber": "#ffbf00",
    "beige": "#d9c5a0",
    "tan": "#d2b48c",
    "green": "#2e8b57",
    "dark green": "#1e5631",
    "emerald": "#50c878",
    "olive": "#708238",
    "moss": "#8a9a5b",
    "teal": "#008080",
    "turquoise": "#40e0d0",
    "cyan": "#00bcd4",
    "blue": "#2f6fb0",
    "light blue": "#8ec5ea",
    "dark blue": "#1f3a60",
    "navy": "#1f2f4f",
    "sky blue": "#87ceeb",
    "ice blue": "#a5d8ff",
    "purple": "#7d3c98",
    "violet": "#8f5fd0",
    "lavender": "#b57edc",
    "indigo": "#4b0082",
    "magenta": "#c2185b",
    "steel": "#708090",
}

# Plausible skin tones, chosen deterministically when a profile says nothing about skin.
SKIN_TONES: tuple[str, ...] = ("#f1c7a5", "#e0ac8a", "#c68863", "#a5694f", "#7c4a32", "#5a3825")


def normalize_name(value: str) -> str:
    return " ".join(value.strip().lower().replace("-", " ").replace("_", " ").split())


def to_hex(value: str) -> str | None:
    """A colour as lower-case "#rrggbb", from a hex value or a known name; None otherwise."""
    text = value.strip()
    if HEX_COLOR.fullmatch(text):
        return text.lower()
    return COLOR_NAMES.get(normalize_name(text))


def find_color_word(text: str) -> str | None:
    """The first known colour named inside free text ("moss green cloak" → moss), or None."""
    words = normalize_name(text).split()
    for size in (2, 1):
        for i in range(len(words) - size + 1):
            hit = COLOR_NAMES.get(" ".join(words[i : i + size]))
            if hit:
                return hit
    return None
