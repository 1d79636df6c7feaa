"""Meshy's asynchronous task APIs (https://docs.meshy.ai), over httpx: text-to-3D, then rigging.

1. POST /openapi/v2/text-to-3d {"mode": "preview", "prompt", "art_style", ...} → {"result": id};
   GET /openapi/v2/text-to-3d/{id} → {"status": PENDING|IN_PROGRESS|SUCCEEDED|FAILED|CANCELED,
   "progress": 0..100, "model_urls": {"glb": url}, "task_error": {"message"}}.
2. With rigging on, the mesh is textured first (Meshy rigs textured models only): POST
   /openapi/v2/text-to-3d {"mode": "refine", "preview_task_id": id}, polled the same way.
3. Rigging: POST /openapi/v1/rigging {"input_task_id": refined id} → {"result": rig id};
   GET /openapi/v1/rigging/{rig id} → the same status fields and, once SUCCEEDED,
   "result": {"rigged_character_glb_url", "rigged_character_fbx_url", "basic_animations":
   {"walking_glb_url", "running_glb_url", ...}}. The rigged character GLB is downloaded and
   must really be skinned (a glTF skin its mesh is bound to). Meshy's basic walking and
   running animations are separate files of their own and are not merged into the model.

`rigging` says what a failed rigging step means: "required" (the default) fails the provider,
so the chain fails over to `procedural`, which is always rigged and animated: a client always
gets an avatar that can play gestures. "optional" keeps Meshy's unrigged mesh instead (the
avatar's capabilities then say rigged: false and list no clips), and "off" never asks for
rigging (no refine step either, as before rigging existed).

A Meshy model is one mesh without viseme or expression morph targets and without LODs: it is
returned as LOD 0 only, and the avatar reports what the file has (`Avatar.capabilities`).
Every failure (HTTP error, task FAILED or CANCELED, timeout, malformed answer, oversized or
invalid GLB) is a ProviderFailure, so the chain fails over to `procedural` and the provider's
circuit breaker counts it, rigging failures included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Iterator
from typing import Any

import httpx

from services.avatar.capabilities import read_capabilities
from services.avatar.description import CharacterDescription
from services.avatar.providers.base import ProgressFn, ProviderFailure
from services.avatar.providers.glb import InvalidGlb

log = logging.getLogger("arconv.avatar.providers.meshy")

NAME = "meshy"
TASKS = "/openapi/v2/text-to-3d"
RIGGING = "/openapi/v1/rigging"
RIGGING_MODES = ("required", "optional", "off")
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
    """The text-to-3D prompt: the whole standing character (the rigger needs clear limbs),
    within Meshy's 600 characters."""
    style = _STYLE_WORDS.get(d.style, "")
    prompt = f"{d.summary} {style}, full body standing character, facing forward, neutral A-pose"
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
        rigging: str = "required",
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if rigging not in RIGGING_MODES:
            raise ValueError(f"rigging must be one of {', '.join(RIGGING_MODES)}")
        self.name = NAME
        self._rigging = rigging
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
                return [await self._model(description, progress)]
        except TimeoutError as exc:
            raise ProviderFailure(NAME, f"task did not finish within {self._timeout:g} s") from exc

    async def _model(self, description: CharacterDescription, progress: ProgressFn) -> bytes:
        def span(start: float, end: float) -> ProgressFn:
            return lambda f: progress(start + (end - start) * f)

        task_id = await self._create(description)
        if self._rigging == "off":
            return await self._download(await self._wait(TASKS, task_id, span(0.0, 0.9)))
        url = await self._wait(TASKS, task_id, span(0.0, 0.4))
        try:
            return await self._rig(task_id, span(0.4, 0.9))
        except ProviderFailure as exc:
            if self._rigging == "required":
                raise
            log.warning(
                "meshy rigging failed; keeping the unrigged model",
                extra={"fields": {"failure": str(exc)}},
            )
            return await self._download(url)

    async def _rig(self, preview_id: str, progress: ProgressFn) -> bytes:
        """Textures the preview (refine), rigs it, downloads the rigged GLB and checks its skin."""
        refined = await self._post(TASKS, {"mode": "refine", "preview_task_id": preview_id})
        await self._wait(TASKS, refined, lambda f: progress(f * 0.5))
        try:
            rig_id = await self._post(RIGGING, {"input_task_id": refined})
            url = await self._wait(RIGGING, rig_id, lambda f: progress(0.5 + f * 0.5))
        except ProviderFailure as exc:
            raise ProviderFailure(NAME, f"rigging failed: {exc.message}") from exc
        data = await self._download(url)
        try:
            caps = await asyncio.to_thread(read_capabilities, data)
        except InvalidGlb as exc:
            raise ProviderFailure(NAME, f"rigging failed: the rigged model: {exc}") from exc
        if not caps.rigged:
            raise ProviderFailure(NAME, "rigging failed: the rigged model has no skin")
        return data

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
        return await self._post(TASKS, body)

    async def _post(self, path: str, body: dict[str, Any]) -> str:
        """Creates a task; its id."""
        with _translate():
            resp = await self._http.post(path, json=body, headers=self._auth)
            resp.raise_for_status()
            data = resp.json()
        task_id = data.get("result") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
            raise ProviderFailure(NAME, "task creation returned no valid task id")
        return task_id

    async def _wait(self, path: str, task_id: str, progress: ProgressFn) -> str:
        """Polls the task until it ends; the URL of its GLB once SUCCEEDED."""
        while True:
            with _translate():
                resp = await self._http.get(f"{path}/{task_id}", headers=self._auth)
                resp.raise_for_status()
                task: Any = resp.json()
            if not isinstance(task, dict):
                raise ProviderFailure(NAME, "task status is not a JSON object")
            status = task.get("status")
            pct = task.get("progress")
            # JSON from the provider may hold NaN or Infinity; only a finite number is progress.
            if isinstance(pct, int | float) and not isinstance(pct, bool) and math.isfinite(pct):
                progress(min(max(float(pct), 0.0), 100.0) / 100.0)
            if status == "SUCCEEDED":
                url = _glb_url(task)
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


def _glb_url(task: dict[str, Any]) -> object:
    """A text-to-3D task's `model_urls.glb`, or a rigging task's rigged character GLB."""
    urls = task.get("model_urls")
    if isinstance(urls, dict) and "glb" in urls:
        return urls.get("glb")
    result = task.get("result")
    return result.get("rigged_character_glb_url") if isinstance(result, dict) else None
