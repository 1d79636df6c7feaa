"""The embedded default provider: the procedural generator, three rigged, animated LODs."""

from __future__ import annotations

import asyncio
import hashlib

from services.avatar.description import CharacterDescription
from services.avatar.procedural import ProceduralSpec, generate_glb
from services.avatar.providers.base import ProgressFn, ProviderFailure

LOD_COUNT = 3


def _spec(description: CharacterDescription) -> ProceduralSpec:

    seed = int.from_bytes(hashlib.sha256(description.agent_id.encode()).digest()[:4], "big")
    try:
        return ProceduralSpec(
            style=description.style or "realistic",
            skin_color=description.skin_color,
            hair_color=description.hair_color,
            eye_color=description.eye_color,
            clothing_color=description.clothing_color,
            accent_color=description.accent_color,
            hair_style=description.hair_style,
            body_type=description.body_type,
            accessories=description.accessories,
            seed=seed,
            height_m=description.height_cm / 100.0,
        )
    except ValueError as exc:
        raise ProviderFailure("procedural", f"invalid description: {exc}") from exc


class ProceduralProvider:
    """Generates each LOD in a worker thread (the generator is CPU-bound, pure Python)."""

    name = "procedural"

    async def generate(
        self, description: CharacterDescription, progress: ProgressFn
    ) -> list[bytes]:
        spec = _spec(description)
        out: list[bytes] = []
        for lod in range(LOD_COUNT):

            def report(_stage: str, fraction: float, lod: int = lod) -> None:
                progress((lod + min(max(fraction, 0.0), 1.0)) / LOD_COUNT)

            out.append(await asyncio.to_thread(generate_glb, spec, lod, report))
            progress((lod + 1) / LOD_COUNT)
        return out

    async def aclose(self) -> None:
        return None
