"""Meshy's asynchronous text-to-3D task API (https://docs.meshy.ai), over httpx.

POST /openapi/v2/text-to-3d {"mode": "preview", "prompt", "art_style", ...} → {"result": id};
GET /openapi/v2/text-to-3d/{id} → {"status": PENDING|IN_PROGRESS|SUCCEEDED|FAILED|CANCELED,
"progress": 0..100, "model_urls": {"glb": url}, "task_error": {"message"}}; then the GLB is
downloaded from `model_urls.glb`.

A Meshy model is one mesh without viseme or expression morph targets and without LODs: it is
returned as LOD 0 only, and the avatar reports whatever morph targets the file has (usually
none). Every failure (HTTP error, task FAILED or CANCELED, timeout, malformed answer, oversized
or invalid GLB) is a ProviderFailure, so the chain fails over to `procedural`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

import httpx

from services.avatar.description import CharacterDescription
from services.avatar.providers.base import ProgressFn, ProviderFailure

NAME = "meshy"
TASKS = "/openapi/v2/text-to-3d"
MAX_PROMPT = 600
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_ART_STYLE = {"realistic": "realistic", "fantasy": "realistic"}  # others: "sculpture"
_STYLE_WORDS = {
    "anime": "anime style, cel shaded, large expressive eyes",
    "cartoon": "cartoon style, exaggerated proportions",
    "chibi": "chibi style, big head, small body",
    "robot": "hard-surface robot",
    "fantasy": "fantasy character",
    "realistic": "realistic proportions",
}


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    try:
        yield
    except ProviderFailure:
        raise
    except httpx.TimeoutException as exc:
        raise ProviderFailure(NAME, f"request timed out ({type(exc).__name__})") from exc
    except httpx.HTTPStatusError as exc:
        raise ProviderFailure(
            NAME, f"HTTP {exc.response.status_code} from {exc.request.url.path}"
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderFailure(NAME, f"{type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # JSON decoding
        raise ProviderFailure(NAME, f"malformed response: {exc}") from exc


def build_prompt(d: CharacterDescription) -> str:
    """The text-to-3D prompt: a bust of the character, within Meshy's 600 characters."""
    style = _STYLE_WORDS.get(d.style, "")
    prompt = f"{d.summary} {style}, head and shoulders bust, facing forward, neutral A-pose"
    return " ".join(prompt.split())[:MAX_PROMPT]


class MeshyProvider:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        poll_interval_s: float = 5.0,
        timeout_s: float = 600.0,
        max_bytes: int = 64 * 1024 * 1024,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = NAME
        self._poll = poll_interval_s
        self._timeout = timeout_s
        self._max_bytes = max_bytes
        # The key goes only to the API, never to the host the model is downloaded from.
        self._auth = {"authorization": f"Bearer {api_key}"}
        self._http = http or httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True
        )

    async def generate(
        self, description: CharacterDescription, progress: ProgressFn
    ) -> list[bytes]:
        try:
            async with asyncio.timeout(self._timeout):
                task_id = await self._create(description)
                url = await self._wait(task_id, progress)
                return [await self._download(url)]
        except TimeoutError as exc:
            raise ProviderFailure(NAME, f"task did not finish within {self._timeout:g} s") from exc

    async def _create(self, d: CharacterDescription) -> str:
        body = {
            "mode": "preview",
            "prompt": build_prompt(d),
            "art_style": _ART_STYLE.get(d.style, "sculpture"),
            "negative_prompt": "low quality, blurry, text, watermark",
            "topology": "triangle",
            "target_polycount": 30000,
            "should_remesh": True,
        }
        with _translate():
            resp = await self._http.post(TASKS, json=body, headers=self._auth)
            resp.raise_for_status()
            data = resp.json()
        task_id = data.get("result") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
            raise ProviderFailure(NAME, "task creation returned no valid task id")
        return task_id

    async def _wait(self, task_id: str, progress: ProgressFn) -> str:
        while True:
            with _translate():
                resp = await self._http.get(f"{TASKS}/{task_id}", headers=self._auth)
                resp.raise_for_status()
                task: Any = resp.json()
            if not isinstance(task, dict):
                raise ProviderFailure(NAME, "task status is not a JSON object")
            status = task.get("status")
            pct = task.get("progress")
            # JSON from the provider may hold NaN or Infinity; only a finite number is progress.
            if isinstance(pct, int | float) and not isinstance(pct, bool) and math.isfinite(pct):
                progress(min(max(float(pct), 0.0), 100.0) / 100.0 * 0.9)
            if status == "SUCCEEDED":
                urls = task.get("model_urls")
                url = urls.get("glb") if isinstance(urls, dict) else None
                if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                    raise ProviderFailure(NAME, "task succeeded without a GLB URL")
                return url
            if status in ("FAILED", "CANCELED", "EXPIRED"):
                err = task.get("task_error")
                msg = err.get("message") if isinstance(err, dict) else None
                # The reason ends up in the avatar's stored error: no NUL or other controls.
                detail = _CONTROL.sub(" ", str(msg)[:300]) if msg else "no reason given"
                raise ProviderFailure(NAME, f"task {status.lower()}: {detail}")
            if status not in ("PENDING", "IN_PROGRESS"):
                raise ProviderFailure(NAME, f"unknown task status {str(status)[:40]!r}")
            await asyncio.sleep(self._poll)

    async def _download(self, url: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        with _translate():
            # The URL is absolute (a signed asset URL); it carries its own authorisation.
            async with self._http.stream("GET", url) as resp:
                resp.raise_for_status()
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise ProviderFailure(
                            NAME, f"model is larger than the limit of {self._max_bytes} bytes"
                        )
                    chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._http.aclose()
