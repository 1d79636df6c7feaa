"""What the LLM is given for one reply: persona, marker instructions, recent history."""

from __future__ import annotations

from collections.abc import Sequence

from services.llm import ChatMessage
from services.markers import EMOTIONS, GESTURES, POSES, TONES
from services.stream.ports import Persona, Sender, StoredMessage

MARKER_INSTRUCTIONS = f"""\
You are shown as an animated 3D avatar and your replies are spoken aloud.
Add avatar markers inline, in square brackets, right before the words they apply to:
[emotion:VALUE] sets your facial expression, optionally with an intensity from 0 to 1 \
([emotion:happy:0.8]); [gesture:VALUE] plays a gesture once; [tone:VALUE] sets how your \
voice sounds; [pose:VALUE] changes your posture. Several may share one bracket, separated \
by commas: [emotion:happy,gesture:wave].
Emotions: {", ".join(EMOTIONS)}.
Gestures: {", ".join(GESTURES)}.
Tones: {", ".join(TONES)}.
Poses: {", ".join(POSES)}.
Use only these values. Start the reply with an emotion marker, change markers when your mood \
or tone changes, and keep replies short and conversational: a few spoken sentences, no \
lists, no headings, no code."""


def build_messages(
    persona: Persona, history: Sequence[StoredMessage], answering: StoredMessage
) -> list[ChatMessage]:
    """The system prompt (persona, then marker instructions), the history, then `answering`.

    `history` is oldest first. The message being answered always comes last, wherever the
    history has it (an interrupted reply is stored after the message that interrupted it).
    """
    system = persona.system_prompt.strip()
    if persona.name and persona.name.lower() not in system.lower():
        system = f"Your name is {persona.name}.\n{system}"
    out = [ChatMessage("system", f"{system}\n\n{MARKER_INSTRUCTIONS}")]
    for m in history:
        if m.message_id == answering.message_id:
            continue
        if m.sender is Sender.HUMAN:
            out.append(ChatMessage("user", m.content))
        elif m.content:
            # The agent's own words with their markers, cut where the person stopped listening.
            out.append(ChatMessage("assistant", m.content))
    out.append(ChatMessage("user", answering.content))
    return out
