"""``persona``: the embedded default provider, a local, deterministic responder.

No network and no key. It reads the last user message, picks a reply for one
of a few situations (greeting, question, thanks, sad news, happy news, a
request for a story, anything else) and streams it with emotion, gesture and
tone markers, so the whole pipeline (marker parsing, speech cues, avatars) can
be exercised without a model.

Agent name convention: the first system message names the agent with
``Your name is Nova.`` (the word after "Your name is", any case, plus up to two
following capitalised words: ``Your name is Ada Lovelace and ...`` gives ``Ada
Lovelace``), or failing that, at the start of a line or sentence, ``You are``
followed by one to three capitalised words (``You are Captain Nova, a ...``
gives ``Captain Nova``; ``You are a helpful assistant`` gives no name). A name
is letters, digits, spaces, apostrophes and hyphens, or it is ignored. Without
a name, replies simply do not mention one.

Determinism: the reply, and how it is cut into deltas, depend only on the
conversation and ``seed``. The template is chosen by a hash of the whole
conversation and never repeats the previous agent reply's template, so
consecutive turns differ. Deltas are a few characters long and cut at arbitrary
points, markers included, which is what real models do to downstream parsers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Literal

from services.llm.base import ChatMessage

Category = Literal["greeting", "question", "thanks", "sad", "happy", "story", "default"]

# A segment is one sentence with its markers. A tuple lists alternatives: the
# first one whose placeholders ({name}, {echo}) are all available is used; a
# segment with none available is left out.
Segment = str | tuple[str, ...]

_TEMPLATES: dict[Category, tuple[tuple[Segment, ...], ...]] = {
    "greeting": (
        (
            "[emotion:happy,gesture:wave] Hello there!",
            (
                "[tone:friendly] I'm {name}, and it's lovely to see you.",
                "[tone:friendly] It's lovely to see you.",
            ),
            "[emotion:excited:0.6] What would you like to talk about today?",
        ),
        (
            "[emotion:happy:0.8,gesture:wave] Hi!",
            (
                "[tone:friendly] {name} here, ready when you are.",
                "[tone:friendly] I'm right here and ready when you are.",
            ),
            "[gesture:nod] How has your day been so far?",
        ),
        (
            "[emotion:excited,gesture:hand_raise] Hey, welcome back!",
            "[tone:playful] I was hoping you'd drop by.",
            ("[emotion:happy] It's {name}, at your service.",),
            "[tone:friendly,gesture:point] Tell me what's on your mind.",
        ),
    ),
    "question": (
        (
            "[emotion:thoughtful,gesture:hand_raise] That's a good question.",
            (
                '[tone:calm] You asked "{echo}", so let me think about it for a moment.',
                "[tone:calm] Let me think about it for a moment.",
            ),
            "[gesture:nod] I'd start with what matters most to you here.",
            "[emotion:happy,tone:friendly] Want me to go into more detail?",
        ),
        (
            "[emotion:thoughtful] Hmm, let me think.",
            ('[tone:serious] "{echo}" deserves a careful answer.',),
            "[gesture:shrug,tone:calm] I don't know everything, but my best guess is that it "
            "depends on the details.",
            "[emotion:calm,gesture:point] Tell me a bit more and I can be more precise.",
        ),
        (
            "[emotion:surprised:0.5] Oh, interesting question!",
            "[emotion:thoughtful,tone:calm] There are a few ways to look at it.",
            (
                "[gesture:nod] If you ask {name}, the simplest answer is the best place to start.",
                "[gesture:nod] The simplest answer is usually the best place to start.",
            ),
            "[tone:friendly] Shall we go through it together?",
        ),
    ),
    "thanks": (
        (
            "[emotion:happy,gesture:thumbs_up] You're very welcome!",
            "[tone:friendly] I'm glad I could help.",
            "[gesture:nod] Is there anything else you'd like to talk about?",
        ),
        (
            "[emotion:happy:0.7,gesture:nod] Anytime!",
            ("[tone:friendly] {name} is always happy to help.",),
            "[emotion:calm] Thank you for being so kind about it.",
        ),
        (
            "[emotion:excited,gesture:thumbs_up] My pleasure!",
            "[tone:playful] Helping you is the best part of my day.",
            "[tone:friendly] Just say the word if you need anything else.",
        ),
    ),
    "sad": (
        (
            "[emotion:concerned,tone:concerned] I'm sorry you're going through that.",
            (
                '[gesture:nod] When you say "{echo}", I can tell it\'s weighing on you.',
                "[gesture:nod] I can tell it's weighing on you.",
            ),
            "[emotion:calm,tone:calm] Take your time; I'm here to listen.",
            "[emotion:concerned:0.6] Would it help to talk about what happened?",
        ),
        (
            "[emotion:sad:0.6,gesture:hand_raise] Oh no, that sounds really hard.",
            "[tone:calm] It's okay to feel this way.",
            "[emotion:calm,gesture:nod] Let's take it one small step at a time.",
        ),
        (
            "[emotion:concerned,tone:calm] That sounds heavy.",
            (
                "[tone:friendly] {name} is right here with you.",
                "[tone:friendly] I'm right here with you.",
            ),
            "[emotion:thoughtful] Sometimes just saying it out loud helps a little.",
            "[emotion:calm,gesture:nod] What would feel good right now?",
        ),
    ),
    "happy": (
        (
            "[emotion:happy,gesture:thumbs_up] That's wonderful news!",
            ('[tone:excited] "{echo}" sounds fantastic.',),
            "[emotion:excited:0.8] I love hearing things like that.",
            "[tone:friendly] Tell me everything!",
        ),
        (
            "[emotion:excited,gesture:hand_raise] Yes!",
            "[tone:excited] That made me smile.",
            "[emotion:happy,tone:friendly] You deserve good days like this.",
        ),
        (
            "[emotion:happy:0.9,gesture:wave] How great is that!",
            "[tone:playful] I'm doing a little happy dance over here.",
            "[emotion:happy,gesture:nod] What's the best part of it for you?",
        ),
    ),
    "story": (
        (
            "[emotion:excited,gesture:hand_raise] Oh, I love stories!",
            "[tone:calm,emotion:thoughtful] Once upon a time, a little lighthouse stood alone "
            "on a rocky shore.",
            "[emotion:sad:0.4] Every night it shone, but no ship ever came.",
            "[emotion:surprised,gesture:point] Then one stormy evening, a tiny boat followed "
            "its light home.",
            "[emotion:happy,tone:friendly] From then on, the lighthouse never felt lonely again.",
        ),
        (
            "[emotion:happy,tone:playful] Gather round!",
            ("[tone:friendly] {name} knows just the tale.",),
            "[tone:calm] Long ago, a fox found a map drawn on a fallen leaf.",
            "[emotion:surprised:0.7,gesture:point] It led to a garden where the moon came down "
            "to rest.",
            "[emotion:calm,gesture:nod] The fox kept the secret, and visits the garden to this "
            "day.",
        ),
        (
            "[emotion:thoughtful,gesture:hand_raise] Here's one I like.",
            "[tone:calm] A clockmaker built a clock that ran backwards by one minute a day.",
            "[emotion:surprised] She used each spare minute to thank someone.",
            "[emotion:happy,tone:friendly] By the end of her life, she had thanked the whole town.",
        ),
    ),
    "default": (
        (
            "[emotion:thoughtful,gesture:nod] I see.",
            (
                '[tone:calm] You said "{echo}", and that\'s worth thinking about.',
                "[tone:calm] That's worth thinking about.",
            ),
            "[emotion:calm,tone:friendly] Tell me more about it.",
        ),
        (
            "[emotion:neutral,gesture:nod] Got it.",
            "[tone:friendly] I'm following along.",
            "[emotion:thoughtful,gesture:hand_raise] What made you think of that?",
        ),
        (
            "[emotion:happy:0.5,tone:friendly] That's interesting.",
            ("[gesture:point] {name} would love to hear where you're going with this.",),
            "[emotion:thoughtful,tone:calm] I have a few thoughts, but I'd like to understand "
            "you first.",
            "[gesture:shrug,tone:playful] Or we can just chat, whatever you prefer.",
        ),
    ),
}

_STORY = re.compile(r"\b(story|stories|tale|fairy ?tale|once upon)\b")
_SAD = re.compile(
    r"\b(sad|unhappy|depressed|lonely|alone|upset|cry|crying|cried|hurt|miss|lost|tired|"
    r"worried|anxious|stressed|scared|afraid|angry|frustrated|awful|terrible|bad day|died|"
    r"passed away|"
    r"not (?:good|great|well|happy|okay|ok))\b"
)
_THANKS = re.compile(r"\b(thanks?|thank you|thx|ty|appreciate|grateful)\b")
_HAPPY = re.compile(
    r"\b(happy|glad|great|awesome|amazing|wonderful|fantastic|excited|love|yay|"
    r"good news|promoted|won)\b"
)
_GREETING = re.compile(
    r"^\W*(hi|hello|hey|hiya|howdy|greetings|yo|good (?:morning|afternoon|evening))\b"
    r"|\bhow are you\b|\bhow's it going\b"
)
_QUESTION_START = re.compile(
    r"^\W*(who|what|when|where|why|how|which|can|could|would|should|will|do|does|did|"
    r"is|are|am|was)\b"
)
_NAME_IS = re.compile(r"\byour name is\s+([^\n.!?,;:]{1,40})", re.IGNORECASE)
_YOU_ARE = re.compile(r"(?:^|[.!?\n]\s*)You are\s+([A-Z][\w'-]*(?: [A-Z][\w'-]*){0,2})")
_NOT_NAMES = frozenset({"A", "An", "The", "This", "That", "Not", "Now", "Here", "Always"})
_NAME = re.compile(r"\w[\w' -]*")
_BRACKETED = re.compile(r"\[[^\]]*\]")
_UNSAFE = re.compile(r"[\[\]{}\"\n\r]")
_MARKER = re.compile(r"\[[^\]]*\]\s*")
_CHARS_PER_TOKEN = 4


def agent_name(messages: Sequence[ChatMessage]) -> str | None:
    """The agent's name from the first system message, by the convention in this module."""
    system = next((m.content for m in messages if m.role == "system"), "")
    match = _NAME_IS.search(system)
    if match is None:
        match = _YOU_ARE.search(system)
        if match is not None and match.group(1).split()[0] in _NOT_NAMES:
            match = None
    if match is None:
        return None
    first, *rest = match.group(1).split() or [""]
    words = [first]
    for word in rest[:2]:
        if not word[:1].isupper():
            break
        words.append(word)
    name = " ".join(words)
    return name if _NAME.fullmatch(name) else None


def classify(text: str) -> Category:
    """The situation a user message is in, in order of precedence."""
    lowered = " ".join(text.lower().replace("\u2019", "'").split())
    if _STORY.search(lowered):
        return "story"
    if _SAD.search(lowered):
        return "sad"
    if _THANKS.search(lowered):
        return "thanks"
    if _HAPPY.search(lowered):
        return "happy"
    if _GREETING.search(lowered):
        return "greeting"
    if lowered.endswith("?") or _QUESTION_START.search(lowered):
        return "question"
    return "default"


def _echo(text: str, max_words: int = 6) -> str:
    words = _UNSAFE.sub(" ", _BRACKETED.sub(" ", text)).split()
    fragment = " ".join(words[:max_words]).rstrip(".,;:!?")
    if len(words) > max_words:
        fragment += "..."
    return fragment


def _render(segment: Segment, values: dict[str, str]) -> str | None:
    options = (segment,) if isinstance(segment, str) else segment
    for option in options:
        needed = re.findall(r"\{(\w+)\}", option)
        if all(values.get(key) for key in needed):
            return option.format(**values)
    return None


class PersonaProvider:
    """The embedded, deterministic, marker-rich provider (see the module docstring).

    ``pacing_s`` is the pause between deltas (a longer one before the first, as
    a model "thinks"); with 0 it still yields control to the event loop after
    every delta. ``seed`` varies all replies at once. ``complete`` returns the
    same reply in one piece; with ``json_object`` it returns a short JSON object
    ``{"provider": "persona", "name": ..., "category": ..., "text": ...}``
    (``text`` without markers), valid but not meant to satisfy any schema.
    """

    def __init__(self, pacing_s: float = 0.0, seed: int = 0) -> None:
        if pacing_s < 0:
            raise ValueError("pacing_s must not be negative")
        self.name = "persona"
        self._pacing_s = pacing_s
        self._seed = seed

    def reply(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None) -> str:
        """The whole reply to ``messages``, markers included."""
        return self._compose(messages, max_tokens=max_tokens)[1]

    def _digest(self, messages: Sequence[ChatMessage]) -> int:
        hasher = hashlib.sha256(str(self._seed).encode())
        for message in messages:
            hasher.update(b"\x00" + message.role.encode() + b"\x00" + message.content.encode())
        return int.from_bytes(hasher.digest()[:8], "big")

    def _compose(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None
    ) -> tuple[Category, str]:
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        category: Category = classify(last_user) if last_user.strip() else "greeting"
        previous = next(
            (m.content.strip() for m in reversed(messages) if m.role == "assistant"), ""
        )
        values = {"name": agent_name(messages) or "", "echo": _echo(last_user)}
        templates = _TEMPLATES[category]
        index = self._digest(messages) % len(templates)
        for step in range(len(templates)):
            template = templates[(index + step) % len(templates)]
            segments = [s for s in (_render(seg, values) for seg in template) if s]
            if not previous or not (
                previous.startswith(segments[0]) or segments[0].startswith(previous)
            ):
                break
        if max_tokens is not None:
            budget = max(1, max_tokens) * _CHARS_PER_TOKEN
            kept = segments[:1]
            for segment in segments[1:]:
                if sum(len(s) + 1 for s in kept) + len(segment) > budget:
                    break
                kept.append(segment)
            segments = kept
        return category, " ".join(segments)

    def _deltas(self, messages: Sequence[ChatMessage], text: str) -> list[str]:
        rng = random.Random(self._digest(messages))
        deltas: list[str] = []
        position = 0
        while position < len(text):
            size = rng.randint(1, 7)
            deltas.append(text[position : position + size])
            position += size
        return deltas

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield the reply in deltas of 1 to 7 characters; ``model`` is ignored."""
        text = self.reply(messages, max_tokens=max_tokens)
        for index, delta in enumerate(self._deltas(messages, text)):
            await asyncio.sleep(self._pacing_s * (3 if index == 0 else 1))
            yield delta

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = None,
        json_object: bool = False,
    ) -> str:
        category, text = self._compose(messages, max_tokens=None)
        if not json_object:
            return text
        return json.dumps(
            {
                "provider": "persona",
                "name": agent_name(messages) or "",
                "category": category,
                "text": _MARKER.sub("", text).strip(),
            }
        )

    async def aclose(self) -> None:
        return None
