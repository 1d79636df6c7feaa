"""PersonaProvider: the embedded, deterministic, marker-rich responder."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from services.llm import ChatMessage, LLMProvider, PersonaProvider
from services.llm.persona import agent_name, classify

EMOTIONS = {
    "neutral",
    "happy",
    "sad",
    "angry",
    "surprised",
    "calm",
    "excited",
    "thoughtful",
    "concerned",
}
GESTURES = {"wave", "nod", "shake_head", "point", "hand_raise", "thumbs_up", "shrug"}
TONES = {"neutral", "excited", "calm", "serious", "friendly", "concerned", "playful"}
POSES = {"standing", "sitting", "leaning_forward", "arms_crossed", "hands_on_hips", "relaxed"}
MARKER = re.compile(r"\[([^\]]*)\]")
SYSTEM = ChatMessage("system", "Your name is Nova.\nYou are warm, curious and brief.")


def turn(text: str, *, system: ChatMessage | None = SYSTEM) -> list[ChatMessage]:
    return [*([system] if system else []), ChatMessage("user", text)]


def markers(reply: str) -> list[tuple[str, str]]:
    """(key, value) pairs of every marker in ``reply``, checked against the grammar."""
    found = []
    for body in MARKER.findall(reply):
        for item in body.split(","):
            key, value, *intensity = item.split(":")
            assert key in {"emotion", "gesture", "tone", "pose"}, item
            vocabulary = {"emotion": EMOTIONS, "gesture": GESTURES, "tone": TONES, "pose": POSES}
            assert value in vocabulary[key], item
            if intensity:
                assert len(intensity) == 1 and 0.0 <= float(intensity[0]) <= 1.0, item
            found.append((key, value))
    return found


def spoken(reply: str) -> str:
    return " ".join(MARKER.sub(" ", reply).split())


def sentences(reply: str) -> int:
    return len(re.findall(r"[.!?]+(?:\s|$)", spoken(reply)))


async def deltas_of(provider: PersonaProvider, messages: list[ChatMessage]) -> list[str]:
    return [delta async for delta in provider.stream(messages)]


CATEGORIES = {
    "greeting": ("Hello!", {"happy", "excited", "calm"}, ("Hello", "Hi", "Good day", "Welcome")),
    "question": (
        "What is the tallest mountain in the world?",
        {"thoughtful", "surprised", "excited", "calm"},
        ("question", "think", "interesting", "step by step", "Hmm"),
    ),
    "thanks": (
        "Thank you so much for the help",
        {"happy", "excited"},
        ("welcome", "Anytime", "pleasure"),
    ),
    "sad": ("I feel so lonely today", {"concerned", "sad"}, ("sorry", "hard", "heavy")),
    "happy": ("I got the job, I'm so happy", {"happy", "excited"}, ("wonderful", "Yes!", "great")),
    "story": (
        "Could you tell me a story",
        {"excited", "happy", "thoughtful", "calm"},
        ("Once upon", "Long ago", "clockmaker", "Part one"),
    ),
    "joke": ("Tell me a joke", {"excited", "happy", "calm", "thoughtful"}, ("?",)),
    "about": (
        "Tell me about yourself",
        {"excited", "happy", "calm", "thoughtful"},
        ("I'm", "I am"),
    ),
    "agent_name": ("What's your name?", {"happy", "calm"}, ("Nova",)),
    "introduction": ("My name is Sam", {"happy"}, ("Sam",)),
    "user_name": ("What's my name?", {"thoughtful"}, ("name",)),
    "default": (
        "The train was late again",
        {"thoughtful", "neutral", "happy"},
        ("I see", "Got it", "interesting"),
    ),
}


@pytest.mark.parametrize("category", sorted(CATEGORIES))
@pytest.mark.parametrize("seed", range(6))
def test_reacts_to_each_category(category: str, seed: int) -> None:
    text, first_emotions, keywords = CATEGORIES[category]
    assert classify(text) == category

    reply = PersonaProvider(seed=seed).reply(turn(text))

    found = markers(reply)
    assert reply.startswith("[")
    first_emotion = next(value for key, value in found if key == "emotion")
    assert first_emotion in first_emotions
    assert {key for key, _ in found} >= {"emotion", "tone"}
    assert any(keyword in reply for keyword in keywords), reply
    assert 2 <= sentences(reply) <= 6, reply
    assert "{" not in reply and "}" not in reply


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("hi, can you tell me a fairy tale?", "story"),
        ("Hey, I'm not happy at all", "sad"),
        ("Thanks, that was awesome", "thanks"),
        ("good morning", "greeting"),
        ("So, how are you today?", "greeting"),
        ("How does a rainbow form", "question"),
        ("this is fine?", "question"),
        ("which way", "question"),
        ("My grandmother passed away", "sad"),
        ("ok", "default"),
        ("Hi! What's your name?", "agent_name"),
        ("who are you", "agent_name"),
        ("Hello, I'm Sam", "introduction"),
        ("call me ishmael", "introduction"),
        ("I'm tired", "sad"),
        ("I'm going home", "default"),
        ("do you remember my name?", "user_name"),
        ("tell me a funny joke", "joke"),
        ("Hello! Tell me about yourself.", "about"),
        ("What can you do?", "about"),
        ("Are you a robot?", "about"),
    ],
)
def test_classification_precedence(text: str, category: str) -> None:
    assert classify(text) == category


DEMO_SYSTEMS = {
    "Nova": "Your name is Nova. You are a cheerful, curious guide who loves space, science and "
    "good questions. You keep answers short and warm.",
    "Atlas": "Your name is Atlas. You are a calm, precise robot librarian who explains things "
    "step by step and enjoys a dry joke.",
    "Willow": "Your name is Willow. You are a gentle forest spirit and storyteller who listens "
    "closely and answers with kindness.",
}


def converse(system: str, texts: list[str], seed: int = 0) -> list[str]:
    """The replies of a whole conversation in one room, each turn seeing the ones before."""
    provider = PersonaProvider(seed=seed)
    messages = [ChatMessage("system", system)]
    replies = []
    for text in texts:
        messages.append(ChatMessage("user", text))
        replies.append(provider.reply(messages))
        messages.append(ChatMessage("assistant", replies[-1]))
    return replies


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("agent", sorted(DEMO_SYSTEMS))
def test_a_new_room_is_never_welcomed_back(agent: str, seed: int) -> None:
    for text in ("Hello!", "Hi there", "hey", "Good morning", ""):
        reply = PersonaProvider(seed=seed).reply(
            [ChatMessage("system", DEMO_SYSTEMS[agent])]
            + ([ChatMessage("user", text)] * bool(text))
        )
        assert "back" not in reply.lower() and "again" not in reply.lower(), reply
    # In a room with replies already, a greeting may say "again".
    later = converse(DEMO_SYSTEMS[agent], ["Hello!", "Tell me a joke", "Hello!"], seed)[-1]
    assert "again" in later.lower() and "welcome back" not in later.lower()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("agent", sorted(DEMO_SYSTEMS))
def test_speaks_of_itself_in_the_first_person(agent: str, seed: int) -> None:
    texts = ["Hello!", "What's your name?", "Tell me about yourself", "Tell me a story"]
    for reply in converse(DEMO_SYSTEMS[agent], texts, seed):
        said = spoken(reply)
        # Its own name only after "I'm" / "I am" / "My name is", never "Nova is" or "Nova here".
        for match in re.finditer(agent, said):
            before = said[: match.start()].rstrip()
            assert before.endswith(("I'm", "I am", "My name is")), said
    name, about = converse(DEMO_SYSTEMS[agent], texts[1:3], seed)
    assert f"I'm {agent}" in name or f"My name is {agent}" in name
    assert re.search(r"\bI(?:'m| am) (?:" + agent + r", )?an? ", spoken(about)), about


@pytest.mark.parametrize("seed", range(6))
def test_remembers_the_name_the_user_gives_in_the_room(seed: int) -> None:
    replies = converse(
        DEMO_SYSTEMS["Nova"],
        ["Hello!", "I'm Sam, by the way.", "Tell me a joke", "What's my name?", "hello"],
        seed,
    )
    assert "Sam" in replies[1]
    assert "Sam" in replies[3] and "haven't told me" not in replies[3]
    assert "Sam" in replies[4]
    # In another room (a new conversation) the name is not known.
    fresh = converse(DEMO_SYSTEMS["Nova"], ["What's my name?"], seed)[0]
    assert "Sam" not in fresh and ("told me your name" in fresh or "know your name" in fresh)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("Hello!", r"\b(Hello|Hi|Good day|Welcome)\b"),
        ("What's your name?", r"\b(I'm|My name is) (Nova|Atlas|Willow)\b"),
        ("Tell me a joke", r"\?.*\S"),
        ("Tell me a story", r"Once upon|Long ago|Part one|clockmaker"),
        ("Tell me about yourself", r"\b(I'm|I am) ((Nova|Atlas|Willow), )?an? "),
        ("Why is the sky blue?", r"question|think|interesting|Hmm|careful|seeds"),
    ],
)
@pytest.mark.parametrize("agent", sorted(DEMO_SYSTEMS))
def test_answers_on_topic_in_each_voice(agent: str, text: str, expect: str) -> None:
    replies = {converse(DEMO_SYSTEMS[agent], [text], seed)[0] for seed in range(6)}
    for reply in replies:
        assert re.search(expect, spoken(reply)), reply
        markers(reply)


def test_each_agent_has_its_own_voice() -> None:
    texts = ["Hello!", "Tell me a joke", "Tell me a story", "Tell me about yourself"]
    by_agent = {a: converse(s, texts) for a, s in DEMO_SYSTEMS.items()}
    for i in range(len(texts)):
        bodies = {a: spoken(replies[i]).replace(a, "NAME") for a, replies in by_agent.items()}
        assert len(set(bodies.values())) == 3, bodies


def test_markers_vary_across_a_conversation() -> None:
    texts = ["Hello!", "What's your name?", "Tell me a joke", "Tell me a story", "I'm Sam"]
    texts += ["Tell me about yourself", "Why is the sky blue?", "Thanks!", "I feel sad"]
    for system in DEMO_SYSTEMS.values():
        found = [m for reply in converse(system, texts) for m in markers(reply)]
        assert len({v for k, v in found if k == "gesture"}) >= 5, found
        assert len({v for k, v in found if k == "emotion"}) >= 5, found
        assert len({v for k, v in found if k == "tone"}) >= 3, found


def test_a_conversation_is_deterministic() -> None:
    texts = ["Hello!", "I'm Sam", "Tell me a story", "What's my name?"]
    for system in DEMO_SYSTEMS.values():
        assert converse(system, texts) == converse(system, texts)


def test_is_deterministic() -> None:
    messages = turn("Tell me a story about the sea")
    first, second = PersonaProvider(), PersonaProvider()
    assert first.reply(messages) == second.reply(messages)


async def test_stream_is_deterministic_and_joins_to_the_reply() -> None:
    messages = turn("What should I cook tonight?")
    provider = PersonaProvider()

    first = await deltas_of(provider, messages)
    second = await deltas_of(PersonaProvider(), messages)

    assert first == second
    assert "".join(first) == provider.reply(messages)
    assert all(1 <= len(delta) <= 7 for delta in first)


async def test_markers_are_split_across_deltas() -> None:
    provider = PersonaProvider()
    split_markers = 0
    for text in ["Hello!", "Why is the sky blue?", "I'm sad", "Tell me a story", "ok"]:
        for delta in await deltas_of(provider, turn(text)):
            if delta.count("[") != delta.count("]"):
                split_markers += 1
    assert split_markers > 0


def test_uses_the_agent_name_from_the_system_prompt() -> None:
    for seed in range(6):
        assert "Nova" in PersonaProvider(seed=seed).reply(turn("Hello!"))
    captain = ChatMessage("system", "You are Captain Nova, a friendly guide.")
    assert "Captain Nova" in PersonaProvider().reply(turn("Hi there", system=captain))


def test_without_a_name_nothing_is_left_dangling() -> None:
    for seed in range(6):
        for text, _, _ in CATEGORIES.values():
            reply = PersonaProvider(seed=seed).reply(turn(text, system=None))
            assert "{" not in reply and "  " not in reply and '""' not in reply
            assert 2 <= sentences(reply) <= 6


@pytest.mark.parametrize(
    ("system", "name"),
    [
        ("Your name is Nova. You help with AR.", "Nova"),
        ("You love puzzles.\nyour name is Ada Lovelace\nBe brief.", "Ada Lovelace"),
        ("You are Captain Nova, a friendly guide.", "Captain Nova"),
        ("Be kind. You are Milo.", "Milo"),
        ("You are a helpful assistant.", None),
        ("You are The Oracle.", None),
        ("Answer briefly.", None),
        ("Your name is [emotion:angry] Zed.", None),
        ("Your name is Nova and you love cats.", "Nova"),
        ("your name is nova", "nova"),
        ("Your name is Jean-Luc O'Hara Smith Jones.", "Jean-Luc O'Hara Smith"),
    ],
)
def test_agent_name_convention(system: str, name: str | None) -> None:
    assert agent_name([ChatMessage("system", system), ChatMessage("user", "hi")]) == name


def test_no_system_prompt_means_no_name() -> None:
    assert agent_name([ChatMessage("user", "Your name is Bob.")]) is None


def test_echoes_a_fragment_of_the_user_message_in_some_replies() -> None:
    replies = [PersonaProvider(seed=s).reply(turn("Why do cats purr so loudly?")) for s in range(8)]
    assert any('"Why do cats purr so loudly"' in reply for reply in replies)


def test_user_text_cannot_inject_markers() -> None:
    text = 'I feel sad [emotion:angry,gesture:point] "quoted" {name}'
    for seed in range(6):
        reply = PersonaProvider(seed=seed).reply(turn(text))
        assert "angry" not in reply
        assert "{name}" not in reply
        markers(reply)


def test_consecutive_turns_differ() -> None:
    provider = PersonaProvider()
    messages = [SYSTEM]
    previous = None
    for _ in range(8):
        messages.append(ChatMessage("user", "Hello!"))
        reply = provider.reply(messages)
        assert reply != previous
        previous = reply
        messages.append(ChatMessage("assistant", reply))


def test_seed_varies_replies() -> None:
    messages = turn("Tell me something")
    assert len({PersonaProvider(seed=s).reply(messages) for s in range(10)}) > 1


def test_empty_conversation_is_greeted() -> None:
    assert classify("hello") == "greeting"
    reply = PersonaProvider().reply([])
    assert markers(reply)
    assert any(word in reply for word in ("Hello", "Hi", "Hey"))


def test_max_tokens_shortens_the_reply_at_a_sentence() -> None:
    provider = PersonaProvider()
    messages = turn("Tell me a story")
    full = provider.reply(messages)
    short = provider.reply(messages, max_tokens=20)
    assert len(short) < len(full)
    assert full.startswith(short)
    assert sentences(short) >= 1


async def test_aclose_stops_the_stream() -> None:
    stream = PersonaProvider().stream(turn("Tell me a long story"))
    assert [await anext(stream) for _ in range(3)]

    await stream.aclose()

    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_yields_control_between_deltas_even_without_pacing() -> None:
    provider = PersonaProvider(pacing_s=0.0)
    order: list[str] = []

    async def run(label: str, text: str) -> None:
        async for _ in provider.stream(turn(text)):
            order.append(label)

    await asyncio.gather(run("a", "Hello!"), run("b", "Tell me a story"))

    first_b = order.index("b")
    assert "a" in order[first_b:], "the two streams should interleave"


async def test_pacing_spaces_the_deltas() -> None:
    provider = PersonaProvider(pacing_s=0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    deltas = await deltas_of(provider, turn("ok"))
    assert loop.time() - started >= 0.01 * (len(deltas) - 1)


async def test_complete_returns_the_reply_and_valid_json() -> None:
    provider = PersonaProvider()
    messages = turn("Hello!")

    assert await provider.complete(messages) == provider.reply(messages)
    data = json.loads(await provider.complete(messages, json_object=True))
    assert isinstance(data, dict)
    assert data["name"] == "Nova"
    assert data["provider"] == "persona"
    assert "[" not in data["text"]
    assert await provider.complete(messages, json_object=True) == json.dumps(data)


async def test_satisfies_the_provider_protocol() -> None:
    provider = PersonaProvider()
    assert isinstance(provider, LLMProvider)
    assert provider.name == "persona"
    await provider.aclose()


def test_negative_pacing_is_refused() -> None:
    with pytest.raises(ValueError):
        PersonaProvider(pacing_s=-1)
