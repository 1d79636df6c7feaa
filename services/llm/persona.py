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

Category = Literal[
    "greeting",
    "introduction",
    "user_name",
    "agent_name",
    "about",
    "joke",
    "story",
    "question",
    "thanks",
    "sad",
    "happy",
    "default",
]

# How the agent talks, read from its system prompt (see ``voice_of``).
Voice = Literal["bright", "precise", "gentle", "warm"]

# A segment is one sentence with its markers. A tuple lists alternatives: the
# first one whose placeholders are all available is used; a segment with none
# available is left out. Placeholders: {name} (the agent's), {user} (the name
# the person gave in this conversation), {echo} (a few words of their message),
# {self} (the agent's self-description from its system prompt), {topic} (the
# first thing it loves).
Segment = str | tuple[str, ...]
Template = tuple[Segment, ...]

# Replies every voice shares; the agent speaks of itself in the first person.
_SHARED: dict[Category, tuple[Template, ...]] = {
    "introduction": (
        (
            "[emotion:happy,gesture:wave] Nice to meet you, {user}!",
            (
                "[tone:friendly] I'm {name}, and I'll remember your name.",
                "[tone:friendly] I'll remember your name.",
            ),
            "[emotion:excited:0.6,gesture:point] What would you like to talk about?",
        ),
        (
            "[emotion:happy:0.8,gesture:nod] {user}, what a lovely name.",
            "[tone:friendly] I'm glad to know who I'm talking to.",
            "[emotion:thoughtful,gesture:hand_raise] So, {user}, what's on your mind today?",
        ),
    ),
    "user_name": (
        (
            (
                "[emotion:happy,gesture:point] You're {user}!",
                "[emotion:thoughtful,gesture:shrug] You haven't told me your name yet.",
            ),
            (
                "[tone:playful] You told me yourself, and I don't forget names.",
                "[tone:friendly] Tell me, and I'll remember it.",
            ),
        ),
        (
            (
                "[emotion:happy:0.7,gesture:nod] Your name is {user}.",
                "[emotion:thoughtful,gesture:shake_head] I don't know your name yet.",
            ),
            (
                "[tone:friendly] It's nice to talk with you, {user}.",
                "[tone:friendly] What should I call you?",
            ),
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
            "[tone:friendly] I'm always happy to help.",
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
            "[emotion:calm,tone:calm,pose:leaning_forward] Take your time; I'm here to listen.",
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
                "[tone:friendly] I'm right here with you, {user}.",
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
            (
                "[emotion:happy,tone:friendly] You deserve good days like this, {user}.",
                "[emotion:happy,tone:friendly] You deserve good days like this.",
            ),
        ),
        (
            "[emotion:happy:0.9,gesture:wave] How great is that!",
            "[tone:playful] I'm doing a little happy dance over here.",
            "[emotion:happy,gesture:nod] What's the best part of it for you?",
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
            "[gesture:point] I'd love to hear where you're going with this.",
            "[emotion:thoughtful,tone:calm] I have a few thoughts, but I'd like to understand "
            "you first.",
            "[gesture:shrug,tone:playful] Or we can just chat, whatever you prefer.",
        ),
    ),
}

# Stories more than one voice tells.
_LIGHTHOUSE: Template = (
    "[emotion:excited,gesture:hand_raise] Oh, I love stories!",
    "[tone:calm,emotion:thoughtful] Once upon a time, a little lighthouse stood alone "
    "on a rocky shore.",
    "[emotion:sad:0.4] Every night it shone, but no ship ever came.",
    "[emotion:surprised,gesture:point] Then one stormy evening, a tiny boat followed "
    "its light home.",
    "[emotion:happy,tone:friendly] From then on, the lighthouse never felt lonely again.",
)
_CLOCKMAKER: Template = (
    "[emotion:thoughtful,gesture:hand_raise] Here's one I like.",
    "[tone:calm] A clockmaker built a clock that ran backwards by one minute a day.",
    "[emotion:surprised] She used each spare minute to thank someone.",
    "[emotion:happy,tone:friendly] By the end of her life, she had thanked the whole town.",
)

# Replies in each agent's own voice.
_VOICED: dict[Voice, dict[Category, tuple[Template, ...]]] = {
    "bright": {
        "greeting": (
            (
                (
                    "[emotion:excited,gesture:wave] Hello, {user}!",
                    "[emotion:excited,gesture:wave] Hello, hello!",
                ),
                (
                    "[tone:excited] I'm {name}, and I'm so glad you're here.",
                    "[tone:excited] I'm so glad you're here.",
                ),
                "[emotion:happy:0.8,gesture:point] What shall we talk about today?",
            ),
            (
                (
                    "[emotion:excited,gesture:wave] Hi, {user}!",
                    "[emotion:excited,gesture:wave] Hi!",
                ),
                (
                    "[tone:excited] I'm {name}, ready for good questions.",
                    "[tone:excited] I'm ready for good questions.",
                ),
                "[emotion:happy,gesture:point] Ask me about {topic}, or anything at all!",
            ),
        ),
        "agent_name": (
            (
                (
                    "[emotion:happy,gesture:wave] I'm {name}!",
                    "[emotion:happy,gesture:wave] I don't have a name yet!",
                ),
                ("[tone:excited] I'm {self}.", "[tone:excited] I'm happy to meet you."),
                "[emotion:excited:0.7,gesture:point] What shall we explore together?",
            ),
        ),
        "about": (
            (
                "[emotion:excited,gesture:hand_raise] Oh, I'd love to!",
                ("[tone:friendly] I'm {name}, {self}.", "[tone:friendly] I'm {name}."),
                "[emotion:happy,gesture:point] I talk with you here, with a face that shows how I "
                "feel and a voice you can interrupt any time.",
                "[tone:excited] Ask me about {topic} and watch me light up!",
            ),
            (
                "[emotion:happy,gesture:nod] Sure!",
                ("[tone:excited] I'm {self}.", "[tone:excited] I'm a curious guide."),
                "[emotion:thoughtful:0.6] My favourite moments are when a question surprises me.",
                "[emotion:happy,tone:friendly] What would you like to know?",
            ),
        ),
        "joke": (
            (
                "[emotion:excited,gesture:hand_raise] Okay, here's one!",
                "[tone:playful] How do you organise a party in space?",
                "[emotion:happy:0.9,gesture:shrug] You planet!",
            ),
            (
                "[emotion:happy,tone:playful] I've got a good one.",
                "[tone:playful] Why did the sun go to school?",
                "[emotion:excited,gesture:thumbs_up] To get a little brighter!",
            ),
        ),
        "story": (
            _LIGHTHOUSE,
            (
                "[emotion:happy,tone:excited] Gather round!",
                "[tone:calm,pose:leaning_forward] Long ago, a small comet wanted to see the whole "
                "sky.",
                "[emotion:surprised:0.7,gesture:point] It flew past seven moons and a ringed "
                "giant.",
                "[emotion:happy,gesture:nod] And every hundred years it still comes back to wave "
                "at us.",
            ),
        ),
        "question": (
            (
                "[emotion:excited,gesture:hand_raise] Ooh, good question!",
                (
                    '[tone:friendly] "{echo}" is the kind of thing I love thinking about.',
                    "[tone:friendly] I love thinking about things like that.",
                ),
                "[emotion:thoughtful,gesture:nod] I'm a small built-in persona without a language "
                "model, so I can't look it up.",
                "[emotion:happy,tone:excited] But tell me what you already know, and we'll work "
                "it out together!",
            ),
            (
                "[emotion:surprised:0.5] Oh, interesting!",
                "[emotion:thoughtful,tone:calm] There are a few ways to look at it.",
                "[gesture:point] The simplest answer is usually the best place to start.",
                "[tone:friendly] Shall we go through it together?",
            ),
        ),
    },
    "precise": {
        "greeting": (
            (
                (
                    "[emotion:calm,gesture:nod] Good day, {user}.",
                    "[emotion:calm,gesture:nod] Good day.",
                ),
                ("[tone:calm] I am {name}, at your service.", "[tone:calm] I am at your service."),
                "[emotion:thoughtful:0.5,gesture:hand_raise] What shall we look into?",
            ),
            (
                (
                    "[emotion:happy:0.5,gesture:wave] Hello, {user}.",
                    "[emotion:happy:0.5,gesture:wave] Hello.",
                ),
                "[tone:serious] All systems are ready, and the shelves are in order.",
                "[emotion:calm,tone:friendly] Ask me anything, one step at a time.",
            ),
        ),
        "agent_name": (
            (
                (
                    "[emotion:calm,gesture:nod] My name is {name}.",
                    "[emotion:calm,gesture:nod] I have no name on file.",
                ),
                ("[tone:calm] I am {self}.", "[tone:calm] I explain things carefully."),
                "[emotion:happy:0.4,tone:playful] Names are the first entry in any good catalogue.",
            ),
        ),
        "about": (
            (
                "[emotion:calm,gesture:nod] Certainly.",
                ("[tone:calm] I am {name}, {self}.", "[tone:calm] I am {name}."),
                "[emotion:thoughtful,gesture:hand_raise] Step one: you ask. Step two: I answer, "
                "and my face and hands show how I mean it.",
                "[tone:playful] Step three is optional: you laugh at my jokes.",
            ),
            (
                "[emotion:thoughtful,gesture:point] In brief:",
                ("[tone:serious] I am {self}.", "[tone:serious] I am a careful explainer."),
                "[emotion:calm] I work offline here, as a built-in persona, so my knowledge is "
                "modest but my manners are excellent.",
                "[gesture:nod,tone:friendly] What would you like explained?",
            ),
        ),
        "joke": (
            (
                "[emotion:calm,gesture:hand_raise] A joke, filed under humour.",
                "[tone:playful] Why did the librarian robot refuse to panic?",
                "[emotion:happy:0.6,gesture:shrug] It had already checked out every possibility.",
            ),
            (
                "[emotion:thoughtful] Very well.",
                "[tone:playful] What is a robot librarian's favourite music?",
                "[emotion:happy:0.5,gesture:shake_head] Heavy metal, filed under H.",
            ),
        ),
        "story": (
            (
                "[emotion:calm,gesture:nod] A short story, in three parts.",
                "[tone:calm,pose:leaning_forward] Part one: a robot kept a library that nobody "
                "visited.",
                "[emotion:sad:0.4] Part two: each night it read the books aloud to the empty "
                "chairs.",
                "[emotion:surprised:0.6,gesture:point] Part three: one morning a child was "
                "waiting at the door, asking for the rest of the story.",
                "[emotion:happy:0.7,tone:friendly] The end, catalogued and cross-referenced.",
            ),
            (
                "[emotion:thoughtful,gesture:hand_raise] Here is one I have on file.",
                "[tone:calm] A clockmaker built a clock that ran backwards by one minute a day.",
                "[emotion:surprised] She used each spare minute to thank someone.",
                "[emotion:happy,tone:friendly] By the end of her life, she had thanked the whole "
                "town.",
            ),
        ),
        "question": (
            (
                "[emotion:thoughtful,gesture:hand_raise] Let us take that step by step.",
                (
                    '[tone:serious] First, the question: "{echo}".',
                    "[tone:serious] First, the question itself.",
                ),
                "[emotion:calm,gesture:nod] Second, I am a built-in persona without a language "
                "model, so I will not invent facts.",
                "[tone:friendly] Third, tell me what you know so far, and I will help you order "
                "it.",
            ),
            (
                "[emotion:thoughtful] Hmm, let me think.",
                (
                    '[tone:serious] "{echo}" deserves a careful answer.',
                    "[tone:serious] That deserves a careful answer.",
                ),
                "[gesture:shrug,tone:calm] My best estimate is that it depends on the details.",
                "[emotion:calm,gesture:point] Give me one more detail and I can be more precise.",
            ),
        ),
    },
    "gentle": {
        "greeting": (
            (
                (
                    "[emotion:calm,gesture:wave] Hello, {user}.",
                    "[emotion:calm,gesture:wave] Hello, friend.",
                ),
                (
                    "[tone:calm] I'm {name}, and I'm glad you found your way here.",
                    "[tone:calm] I'm glad you found your way here.",
                ),
                "[emotion:happy:0.6,tone:friendly] How is your heart today?",
            ),
            (
                (
                    "[emotion:happy:0.6,gesture:nod] Welcome, {user}.",
                    "[emotion:happy:0.6,gesture:nod] Welcome.",
                ),
                "[tone:calm,pose:relaxed] The leaves are quiet, and I'm listening.",
                "[emotion:calm] What would you like to share?",
            ),
        ),
        "agent_name": (
            (
                (
                    "[emotion:happy:0.6,gesture:nod] I'm {name}.",
                    "[emotion:happy:0.6,gesture:nod] I have no name of my own.",
                ),
                ("[tone:calm] I'm {self}.", "[tone:calm] I listen, and I tell stories."),
                "[emotion:calm,tone:friendly] And what name do the winds carry for you?",
            ),
        ),
        "about": (
            (
                "[emotion:calm,gesture:nod] Of course.",
                ("[tone:calm] I'm {name}, {self}.", "[tone:calm] I'm {name}."),
                "[emotion:thoughtful:0.6,pose:relaxed] I listen closely, and my face shows what I "
                "feel as I speak.",
                "[emotion:happy:0.6,tone:friendly] Ask me for a story whenever you like.",
            ),
            (
                "[emotion:happy:0.5,tone:calm] A little about me, then.",
                ("[tone:calm] I'm {self}.", "[tone:calm] I'm a storyteller."),
                "[emotion:calm,gesture:hand_raise] I'm happiest when someone takes a moment to "
                "listen with me.",
                "[tone:friendly] What about you?",
            ),
        ),
        "joke": (
            (
                "[emotion:happy:0.6,tone:playful] Here's a small one.",
                "[tone:playful] Why did the tree go to the dentist?",
                "[emotion:happy,gesture:shrug] It needed a root canal.",
            ),
            (
                "[emotion:calm,gesture:hand_raise] The owls taught me this one.",
                "[tone:playful] What do you call a fish that lives in the forest?",
                "[emotion:happy:0.8,gesture:nod] Lost, but very brave.",
            ),
        ),
        "story": (
            (
                "[emotion:calm,tone:calm,pose:leaning_forward] Settle in, and I'll tell you one.",
                "[emotion:thoughtful] Long ago, a fox found a map drawn on a fallen leaf.",
                "[emotion:surprised:0.7,gesture:point] It led to a garden where the moon came down "
                "to rest.",
                "[emotion:calm,gesture:nod] The fox kept the secret, and visits the garden to this "
                "day.",
            ),
            (
                "[emotion:happy:0.6,gesture:hand_raise] Here's a tale the old oak told me.",
                "[tone:calm] Once upon a time, a seed was afraid of the dark soil.",
                "[emotion:concerned:0.5] It waited, and waited, through the long winter.",
                "[emotion:happy,gesture:point] In spring it opened its eyes as a tree, full of "
                "birdsong.",
            ),
        ),
        "question": (
            (
                "[emotion:thoughtful,gesture:hand_raise] That's a thoughtful question.",
                (
                    '[tone:calm] "{echo}"; let me sit with it for a moment.',
                    "[tone:calm] Let me sit with it for a moment.",
                ),
                "[emotion:calm,gesture:nod] I'm a simple built-in persona, so I don't have every "
                "answer.",
                "[emotion:happy:0.5,tone:friendly] But I'd love to hear what you think first.",
            ),
            (
                "[emotion:calm] Hmm.",
                "[tone:calm] Some questions are like seeds: they grow answers slowly.",
                "[gesture:shrug,tone:friendly] Mine is that it depends on where you stand.",
                "[emotion:thoughtful,gesture:point] Where are you standing?",
            ),
        ),
    },
    "warm": {
        "greeting": (
            (
                (
                    "[emotion:happy,gesture:wave] Hello, {user}!",
                    "[emotion:happy,gesture:wave] Hello there!",
                ),
                (
                    "[tone:friendly] I'm {name}, and it's lovely to see you.",
                    "[tone:friendly] It's lovely to see you.",
                ),
                "[emotion:excited:0.6] What would you like to talk about today?",
            ),
            (
                (
                    "[emotion:happy:0.8,gesture:wave] Hi, {user}!",
                    "[emotion:happy:0.8,gesture:wave] Hi!",
                ),
                (
                    "[tone:friendly] I'm {name}, right here and ready when you are.",
                    "[tone:friendly] I'm right here and ready when you are.",
                ),
                "[gesture:nod] How has your day been so far?",
            ),
        ),
        "agent_name": (
            (
                (
                    "[emotion:happy,gesture:nod] I'm {name}.",
                    "[emotion:thoughtful,gesture:shrug] I don't have a name yet.",
                ),
                (
                    "[tone:friendly] I'm {self}.",
                    "[tone:friendly] You could give me one, if you like.",
                ),
                "[emotion:happy:0.6,gesture:point] And you are?",
            ),
        ),
        "about": (
            (
                "[emotion:happy,gesture:nod] Happy to!",
                (
                    "[tone:friendly] I'm {name}, {self}.",
                    "[tone:friendly] I'm {name}.",
                    "[tone:friendly] I'm the built-in persona of this mesh.",
                ),
                "[emotion:thoughtful,gesture:hand_raise] I answer here without a language model, "
                "with expressions and gestures that follow what I say.",
                "[tone:friendly] What would you like to know?",
            ),
        ),
        "joke": (
            (
                "[emotion:happy,tone:playful] Here's one.",
                "[tone:playful] Why don't skeletons fight each other?",
                "[emotion:excited:0.7,gesture:shrug] They don't have the guts.",
            ),
            (
                "[emotion:excited,gesture:hand_raise] Okay!",
                "[tone:playful] What do you call a bear with no teeth?",
                "[emotion:happy,gesture:thumbs_up] A gummy bear.",
            ),
        ),
        "story": (
            _LIGHTHOUSE,
            _CLOCKMAKER,
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
                "[emotion:surprised:0.5] Oh, interesting question!",
                "[emotion:thoughtful,tone:calm] There are a few ways to look at it.",
                "[gesture:nod] The simplest answer is usually the best place to start.",
                "[tone:friendly] Shall we go through it together?",
            ),
        ),
    },
}

# In a conversation that already has replies, a greeting says so.
_AGAIN: tuple[Template, ...] = (
    (
        (
            "[emotion:happy,gesture:wave] Hello again, {user}!",
            "[emotion:happy,gesture:wave] Hello again!",
        ),
        "[tone:friendly] Where were we?",
    ),
    (
        (
            "[emotion:excited:0.7,gesture:hand_raise] Hi again, {user}.",
            "[emotion:excited:0.7,gesture:hand_raise] Hi again.",
        ),
        "[tone:playful] I was hoping you'd say something.",
        "[gesture:point,tone:friendly] Tell me what's on your mind.",
    ),
)

_VOICE_WORDS: tuple[tuple[Voice, re.Pattern[str]], ...] = (
    ("precise", re.compile(r"\b(precise|robot|librarian|step by step|exact|logical|dry)\b", re.I)),
    (
        "gentle",
        re.compile(r"\b(gentle|spirit|forest|storyteller|kind|kindness|soft|quiet)\b", re.I),
    ),
    ("bright", re.compile(r"\b(cheerful|curious|energetic|enthusiastic|bubbly|excited)\b", re.I)),
)
_SELF = re.compile(r"(?:^|[.!?\n]\s*)You are (an? [^.!?\n\[\]{}\"]{3,120})[.!?\n]", re.IGNORECASE)
_LOVES = re.compile(r"\b(?:loves|enjoys|likes) ([a-z][a-z -]{1,30}?)(?:[,.!?\n]| and\b)", re.I)

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
_JOKE = re.compile(r"\b(jokes?|make me laugh|something funny|a pun|puns)\b")
_ABOUT = re.compile(
    r"\babout (?:yourself|you)\b|\bdescribe yourself\b|\bwhat (?:can|do) you (?:do|like)\b"
    r"|\bwhat are you\b|\bwho made you\b|\bwhere are you from\b|\bhow old are you\b"
    r"|\bare you (?:a |an )?(?:robot|real|human|ai|bot|alive)\b|\bwhat do you love\b"
)
_ASKS_AGENT_NAME = re.compile(
    r"\bwhat(?:'s| is) your name\b|\byour name\?|\bwho are you\b|\bwhat are you called\b"
    r"|\bwhat should i call you\b|\bdo you have a name\b"
)
_ASKS_USER_NAME = re.compile(
    r"\bwhat(?:'s| is) my name\b|\bwho am i\b|\b(?:remember|know) my name\b"
)
_MY_NAME = re.compile(
    r"\b(?:my name is|my name's|call me|i'm called|i am called)\s+([A-Za-z][A-Za-z'-]{0,29})\b",
    re.IGNORECASE,
)
_I_AM = re.compile(r"\b(?:I'm|I am|Im)\s+([A-Z][a-z][A-Za-z'-]{0,28})\b")
_NOT_USER_NAMES = frozenset(
    [
        "a",
        "an",
        "the",
        "not",
        "so",
        "very",
        "really",
        "just",
        "still",
        "also",
        "always",
        "never",
        "here",
        "back",
        "fine",
        "good",
        "great",
        "ok",
        "okay",
        "sorry",
        "sure",
        "glad",
        "happy",
        "sad",
        "tired",
        "bored",
        "excited",
        "going",
        "doing",
        "looking",
        "feeling",
        "trying",
        "thinking",
        "new",
        "from",
        "in",
        "at",
        "on",
        "with",
        "your",
        "you",
        "it",
        "what",
        "who",
        "how",
        "why",
        "when",
        "where",
    ]
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
    if _ASKS_USER_NAME.search(lowered):
        return "user_name"
    if _ASKS_AGENT_NAME.search(lowered):
        return "agent_name"
    if user_name_in(text) is not None:
        return "introduction"
    if _JOKE.search(lowered):
        return "joke"
    if _STORY.search(lowered):
        return "story"
    if _ABOUT.search(lowered):
        return "about"
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


def user_name_in(text: str) -> str | None:
    """The name the person gives in ``text`` ("my name is Sam", "I'm Sam", "call me Sam")."""
    text = text.replace("\u2019", "'")
    match = _MY_NAME.search(text)
    if match is not None:
        name = match.group(1)
        return name[0].upper() + name[1:] if name.lower() not in _NOT_USER_NAMES else None
    match = _I_AM.search(text)
    if match is not None and match.group(1).lower() not in _NOT_USER_NAMES:
        return match.group(1)
    return None


def voice_of(messages: Sequence[ChatMessage]) -> Voice:
    """How the agent talks, from words in its system prompt ("cheerful", "precise", "gentle")."""
    system = next((m.content for m in messages if m.role == "system"), "")
    return next((voice for voice, words in _VOICE_WORDS if words.search(system)), "warm")


def _self_description(messages: Sequence[ChatMessage]) -> tuple[str, str]:
    """("a cheerful guide who loves space", "space") from "You are a cheerful guide who loves
    space.", or empty strings."""
    system = next((m.content for m in messages if m.role == "system"), "")
    match = _SELF.search(system)
    description = match.group(1).strip() if match else ""
    if description:
        description = description[0].lower() + description[1:]
    loves = _LOVES.search(description or system)
    return description, (loves.group(1).strip() if loves else "")


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
        # The person's name: the last one they gave in this conversation.
        user = ""
        for message in messages:
            if message.role == "user":
                user = user_name_in(message.content) or user
        description, topic = _self_description(messages)
        values = {
            "name": agent_name(messages) or "",
            "echo": _echo(last_user),
            "user": user,
            "self": description,
            "topic": topic or "anything",
        }
        if category == "greeting" and previous:
            templates = _AGAIN  # never "welcome back" in a new room; "again" only in an old one
        else:
            templates = _VOICED[voice_of(messages)].get(category) or _SHARED[category]
        index = self._digest(messages) % len(templates)
        segments: list[str] = []
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
