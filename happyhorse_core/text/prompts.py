"""Structured prompts in the format the model was trained on (MODEL_SPEC §6.2).

The reference passes the prompt string to the tokenizer verbatim; the model learned from "enhanced
prompts" laid out as: an English scene paragraph, a `Dialogue:` paragraph with one
`<speaker description, Language>: "line"` per utterance, and a `Background Sound:` paragraph.
Language exists only as the word after the comma in the speaker tag. Chinese, Japanese and Korean
lines are written with a space between every character ("你 好").
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

LANGUAGES = ("Mandarin", "Cantonese", "English", "Japanese", "Korean", "German", "French")
CJK_LANGUAGES = frozenset({"Mandarin", "Cantonese", "Japanese", "Korean"})
NO_BACKGROUND_SOUND = "No prominent background sound"

# Our own negative keyword lists, one per failure family (§6.3); the node lets users edit them.
NEGATIVE_VISUAL = (
    "washed-out colors", "oversaturated", "overexposed", "underexposed", "blurry", "out of focus",
    "smeared details", "blocky compression", "grainy noise", "flickering", "jittery motion",
    "frozen frame", "still image", "watermark", "logo", "captions", "on-screen text",
    "deformed face", "distorted features", "mismatched eyes", "extra or missing fingers", "malformed hands",
    "fused limbs", "unnatural proportions", "duplicated people", "cluttered background",
    "reversed motion", "poorly lit", "low resolution",
)
NEGATIVE_AUDIO = (
    "muffled audio", "tinny sound", "distorted audio", "clipping", "crackling", "static",
    "hiss", "electrical hum", "buzzing", "echoey room", "excessive reverb", "audio dropouts",
    "glitchy audio", "low-bitrate sound", "metallic artifacts", "uneven volume",
)
NEGATIVE_SPEECH = (
    "monotone voice", "lifeless delivery", "robotic speech", "synthetic-sounding voice",
    "slurred words", "mumbling", "mispronounced words", "awkward gaps between words", "rushed speech",
    "stuttering glitches", "overlapping voices", "an extra speaker", "crowd chatter",
    "off-pitch", "warbling pitch correction", "lips out of sync with speech",
)
DEFAULT_NEGATIVE_PROMPT = ", ".join(NEGATIVE_VISUAL + NEGATIVE_AUDIO + NEGATIVE_SPEECH)

_CANONICAL = {name.lower(): name for name in LANGUAGES}
# Runs of ASCII letters/digits stay whole inside CJK lines ("iPhone", "2024"); everything else that
# is not whitespace (ideographs, kana, hangul, punctuation) becomes its own space-separated unit.
_CJK_UNITS = re.compile(r"[A-Za-z0-9]+|\S")
_QUOTE_PAIRS = (('"', '"'), ("\u201c", "\u201d"))


@dataclass(frozen=True)
class DialogueLine:
    speaker: str  # short description of who speaks, e.g. "Man in green shirt"
    language: str  # one of LANGUAGES (any letter case)
    text: str  # the words spoken, in that language


DialogueInput = Union[DialogueLine, Sequence[str]]


def normalize_language(name: str) -> str:
    """Canonical spelling of one of the seven supported languages; ValueError otherwise."""
    canonical = _CANONICAL.get(str(name).strip().lower())
    if canonical is None:
        raise ValueError(f"unsupported language {name!r}; choose one of: {', '.join(LANGUAGES)}")
    return canonical


def space_cjk(text: str) -> str:
    """'你好，世界' -> '你 好 ， 世 界' (one space between characters; ASCII words kept whole)."""
    return " ".join(_CJK_UNITS.findall(text))


def _control_chars(text: str, allowed: str = "") -> list[str]:
    return [repr(c) for c in text if unicodedata.category(c) == "Cc" and c not in allowed]


def _strip_outer_quotes(text: str) -> str:
    for left, right in _QUOTE_PAIRS:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            return text[1:-1].strip()
    return text


def _as_line(item: DialogueInput, number: int) -> DialogueLine:
    if isinstance(item, DialogueLine):
        return item
    if isinstance(item, (list, tuple)) and len(item) == 3:
        return DialogueLine(*item)
    raise ValueError(f"dialogue line {number} must be a DialogueLine or (speaker, language, text), got {item!r}")


def format_dialogue_line(line: DialogueLine, number: int = 1) -> str:
    """One `<speaker, Language>: "text"` row; `number` (1-based) only appears in error messages."""
    where = f"dialogue line {number} ({line.speaker!r})"
    bad = _control_chars(line.text)
    if bad:
        raise ValueError(f"{where} contains control characters {', '.join(bad)}; "
                         f"write each utterance as one line of plain text")
    speaker = line.speaker.strip()
    if not speaker or _control_chars(speaker) or any(c in speaker for c in "<>"):
        raise ValueError(f"{where}: the speaker description must be non-empty plain text without '<' or '>'")
    language = normalize_language(line.language)
    text = _strip_outer_quotes(line.text.strip())
    if not text:
        raise ValueError(f"{where} has no text; remove the line or write what is said")
    if language in CJK_LANGUAGES:
        text = space_cjk(text)
    return f'<{speaker}, {language}>: "{text}"'


def build_prompt(scene: str, dialogue: Iterable[DialogueInput] = (),
                 background_sound: str | None = None) -> str:
    """Assemble scene paragraph, optional `Dialogue:` block and `Background Sound:` block.

    scene: the English description (appearance, expressions, delivery, camera, lighting).
    dialogue: utterances in speaking order; the block is omitted when there are none.
    background_sound: the most prominent background sound; empty/None -> "No prominent background sound".
    """
    scene = (scene or "").strip()
    if not scene:
        raise ValueError("the prompt is empty: describe the scene (who is on screen, how they look and "
                         "speak, camera and lighting)")
    bad = _control_chars(scene, allowed="\n\t\r")
    if bad:
        raise ValueError(f"the scene description contains control characters {', '.join(bad)}; remove them")
    parts = [scene]
    rows = [format_dialogue_line(_as_line(item, i), i) for i, item in enumerate(dialogue, start=1)]
    if rows:
        parts.append("Dialogue:\n" + "\n".join(rows))
    sound = (background_sound or "").strip() or NO_BACKGROUND_SOUND
    if _control_chars(sound) or any(c in sound for c in "<>"):
        raise ValueError("the background sound must be one line of plain text without '<' or '>'")
    parts.append(f"Background Sound:\n<{sound}>")
    return "\n\n".join(parts)
