"""The embedded engine: espeak-ng, loaded at run time from the PyPI package espeakng-loader.

espeak-ng is GPL-3.0-or-later. This module is the only code that touches it: it loads the
shared library through ctypes (nothing is compiled against it) and speaks through the Engine
interface, so a deployment that must not ship GPL code leaves the package out and configures
`openai` alone (see the README).

espeak-ng's C API keeps global state and is not re-entrant: one synthesis at a time per
process. Every call runs on one dedicated worker thread, so the event loop never blocks and
calls never overlap. espeak-ng speaks far faster than real time (a 200-character sentence in
about 10 ms of CPU), so the service synthesizes one segment per call: concurrent requests
interleave segment by segment instead of queueing behind a whole long text.

Timing is exact: espeak-ng reports each phoneme (in IPA) and each word with its position in
the audio it produced, in the same callback that hands over the samples.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from services.voice.engines.base import (
    SAMPLE_WIDTH,
    Audio,
    EngineFailure,
    Mouth,
    Piece,
    Prosody,
    VoiceInfo,
    Word,
)
from services.voice.ipa import first_viseme, ipa_visemes

NAME = "espeak"
DEFAULT_VOICE = "en-us"
DEFAULT_RATE_WPM = 175
DEFAULT_PITCH = 50
CHUNK_MS = 200
"""Audio is handed to the service in pieces of this length."""

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass
class _Take:
    """What one synthesis collects inside the callback."""

    pcm: list[bytes] = field(default_factory=list)
    phonemes: list[tuple[int, str]] = field(default_factory=list)  # (ms, ipa)
    words: list[tuple[int, int, int]] = field(default_factory=list)  # (ms, offset, length)
    abort: threading.Event = field(default_factory=threading.Event)


class _Library:
    """The loaded library, initialised once; used only from the worker thread."""

    def __init__(self, lib_path: str, data_path: str) -> None:
        lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, CHUNK_MS, data_path.encode(), options
        )
        if rate <= 0:
            raise EngineFailure(NAME, f"espeak_Initialize failed ({rate}); data at {data_path}")
        self.sample_rate = rate
        self._lib = lib
        self._take: _Take | None = None
        self._callback = _SynthCallback(self._on_synth)  # kept alive as long as the library
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: Any, samples: int, events: Any) -> int:
        take = self._take
        if take is None:
            return 1
        if samples > 0:
            take.pcm.append(ctypes.string_at(wav, samples * SAMPLE_WIDTH))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                take.phonemes.append((ev.audio_position, ev.id.string.decode("utf-8", "replace")))
            elif ev.type == _EVENT_WORD:
                take.words.append((ev.audio_position, ev.text_position - 1, ev.length))
            i += 1
        return 1 if take.abort.is_set() else 0

    def set_voice(self, voice: str) -> bool:
        return bool(self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK)

    def synth(self, text: str, voice: str, prosody: Prosody, take: _Take) -> None:
        if not self.set_voice(voice):
            raise EngineFailure(NAME, f"unknown voice {voice!r}")
        rate = round(min(450, max(80, DEFAULT_RATE_WPM * prosody.rate)))
        pitch = round(min(100, max(0, DEFAULT_PITCH * prosody.pitch)))
        self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        data = text.encode("utf-8")
        self._take = take
        try:
            rc = self._lib.espeak_Synth(
                data, len(data) + 1, 0, 0, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
        finally:
            self._take = None
        if rc != _EE_OK and not take.abort.is_set():
            raise EngineFailure(NAME, f"espeak_Synth failed ({rc})")

    def voices(self) -> list[VoiceInfo]:
        out: list[VoiceInfo] = []
        listed = self._lib.espeak_ListVoices(None)
        i = 0
        while listed[i]:
            v = listed[i].contents
            names = _languages(v.languages)
            gender = {1: "male", 2: "female"}.get(v.gender, "")
            out.append(
                VoiceInfo(
                    engine=NAME,
                    voice_id=names[0] if names else v.name.decode(),
                    name=v.name.decode(),
                    languages=names,
                    gender=gender,
                )
            )
            i += 1
        return out


def _languages(addr: int | None) -> tuple[str, ...]:
    """espeak_VOICE.languages: (a priority byte, a NUL-terminated name) pairs, then a 0 byte."""
    out: list[str] = []
    while addr is not None and ctypes.string_at(addr, 1) != b"\x00":
        name = ctypes.string_at(addr + 1)
        out.append(name.decode("utf-8", "replace"))
        addr += len(name) + 2
    return tuple(out)


_library: _Library | None = None
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")


def _load(lib_path: str | None, data_path: str | None) -> _Library:
    global _library
    if _library is None:
        try:
            import espeakng_loader  # type: ignore[import-untyped]
        except ImportError as exc:  # the GPL part is optional
            raise EngineFailure(NAME, "the espeakng-loader package is not installed") from exc
        _library = _Library(
            lib_path or espeakng_loader.get_library_path(),
            data_path or espeakng_loader.get_data_path(),
        )
    return _library


def timeline(take: _Take, total_ms: float) -> tuple[list[Mouth], list[Word]]:
    """Mouth keys and word marks from one synthesis's events (times in ms of its audio)."""
    mouths: list[Mouth] = []
    phonemes = take.phonemes
    for n, (start, ipa) in enumerate(phonemes):
        end = phonemes[n + 1][0] if n + 1 < len(phonemes) else total_ms
        nxt = first_viseme(phonemes[n + 1][1]) if n + 1 < len(phonemes) else ""
        for share, viseme, weight in ipa_visemes(ipa, nxt):
            t = start + share * max(0.0, end - start)
            if mouths and mouths[-1].viseme == viseme:
                continue
            if mouths and t <= mouths[-1].time_ms:
                mouths[-1] = Mouth(mouths[-1].time_ms, viseme, weight)
                continue
            mouths.append(Mouth(float(t), viseme, weight))
    if mouths and mouths[-1].viseme != "sil":
        mouths.append(Mouth(float(total_ms), "sil", 1.0))
    words: list[Word] = []
    for n, (start, offset, length) in enumerate(take.words):
        limit = float(take.words[n + 1][0]) if n + 1 < len(take.words) else total_ms
        # The word ends when its last sound does: where the event after that sound starts.
        end = limit
        spoken = [
            i for i, (t, ipa) in enumerate(phonemes) if start <= t < limit and ipa.strip("_ ")
        ]
        if spoken and spoken[-1] + 1 < len(phonemes):
            end = min(limit, float(phonemes[spoken[-1] + 1][0]))
        words.append(Word(offset, length, float(start), max(float(start), end)))
    return mouths, words


class EspeakEngine:
    """espeak-ng in-process. `voices()` lists the languages of its data; a voice id is a
    language ("en-us") optionally with a variant ("en-us+f3")."""

    name = NAME

    def __init__(
        self,
        *,
        default_voice: str = DEFAULT_VOICE,
        lib_path: str | None = None,
        data_path: str | None = None,
    ) -> None:
        self._lib = _load(lib_path, data_path)
        self.sample_rate = self._lib.sample_rate
        self._default = default_voice
        self._lock = threading.Lock()

    def default_voice(self) -> str:
        return self._default

    async def voices(self) -> list[VoiceInfo]:
        voices: list[VoiceInfo] = await self._run(self._lib.voices)
        return voices

    async def has_voice(self, voice: str) -> bool:
        return bool(await self._run(lambda: self._lib.set_voice(voice)))

    async def _run(self, fn: Callable[[], Any]) -> Any:
        def locked() -> Any:
            with self._lock:
                return fn()

        return await asyncio.get_running_loop().run_in_executor(_executor, locked)

    async def synthesize(self, text: str, *, voice: str, prosody: Prosody) -> AsyncIterator[Piece]:
        take = _Take()
        try:
            await self._run(lambda: self._lib.synth(text, voice, prosody, take))
        except BaseException:
            take.abort.set()  # a cancelled wait: the worker stops at its next callback
            raise
        pcm = b"".join(take.pcm)
        total_ms = len(pcm) / SAMPLE_WIDTH * 1000 / self.sample_rate
        mouths, words = timeline(take, total_ms)
        for mouth in mouths:
            yield mouth
        for word in words:
            yield word
        step = self.sample_rate * CHUNK_MS // 1000 * SAMPLE_WIDTH
        for start in range(0, len(pcm), step):
            yield Audio(pcm[start : start + step])

    async def aclose(self) -> None:
        return None
