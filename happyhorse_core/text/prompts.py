"""Structured prompts in the format the model was trained on (MODEL_SPEC §6.2).

The reference passes the prompt string to the tokenizer verbatim; the model learned from "enhanced
prompts" (the reference's `prompts/enhanced_prompt_design.md`) laid out as: an English scene
paragraph in which every spoken line appears in quotation marks at the moment it is said, a
`Dialogue:` paragraph with one `<speaker description, Language>: "line"` per utterance, and a
`Background Sound:` paragraph. Language exists only as the word after the comma in the speaker
tag. Chinese, Japanese and Korean text is written with a space between characters ("你 好"),
while punctuation stays attached as written ("子，还").

`raw=True` takes a prompt that is already in that format and passes it through unchanged.
`python -m happyhorse_core.text.prompts --scene TEXT [--dialogue "SPEAKER|LANGUAGE|LINE" ...]
[--background TEXT] [--raw]` prints the exact text the encoder will see.
"""
from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

from .negative import (DEFAULT_NEGATIVE_PROMPT, NEGATIVE_AUDIO, NEGATIVE_SPEECH, NEGATIVE_VISUAL,  # noqa: F401
                       negative_or_default)

LANGUAGES = ("Mandarin", "Cantonese", "English", "Japanese", "Korean", "German", "French")
CJK_LANGUAGES = frozenset({"Mandarin", "Cantonese", "Japanese", "Korean"})
NO_BACKGROUND_SOUND = "No prominent background sound"

_CANONICAL = {name.lower(): name for name in LANGUAGES}
# Runs of ASCII letters/digits stay whole inside CJK lines ("iPhone", "2024"); everything else that
# is not whitespace (ideographs, kana, hangul, punctuation) is its own unit.
_CJK_UNITS = re.compile(r"[A-Za-z0-9]+|\S")
_ATTACHED_SYMBOLS = frozenset("～〜・·…")  # not Unicode punctuation (P*) but written attached like it
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


def _is_punct(unit: str) -> bool:
    return len(unit) == 1 and (unicodedata.category(unit).startswith("P") or unit in _ATTACHED_SYMBOLS)


def space_cjk(text: str) -> str:
    """'有的人，还在' -> '有 的 人，还 在': one space between characters and words, while
    punctuation keeps the spacing it was written with (none between CJK characters)."""
    out: list[str] = []
    prev_end, prev_unit = 0, ""
    for m in _CJK_UNITS.finditer(text):
        unit = m.group()
        if out:
            gap = m.start() > prev_end  # there was whitespace between the two units
            if gap or not (_is_punct(unit) or _is_punct(prev_unit)):
                out.append(" ")
        out.append(unit)
        prev_end, prev_unit = m.end(), unit
    return "".join(out)


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


@dataclass(frozen=True)
class _CleanLine:
    speaker: str
    language: str
    raw: str  # the words as the user wrote them (outer quotes removed)
    text: str  # the words as the model reads them (CJK spaced)


def _clean_line(line: DialogueLine, number: int) -> _CleanLine:
    where = f"dialogue line {number} ({line.speaker!r})"
    bad = _control_chars(line.text)
    if bad:
        raise ValueError(f"{where} contains control characters {', '.join(bad)}; "
                         f"write each utterance as one line of plain text")
    speaker = line.speaker.strip()
    if not speaker or _control_chars(speaker) or any(c in speaker for c in "<>"):
        raise ValueError(f"{where}: the speaker description must be non-empty plain text without '<' or '>'")
    language = normalize_language(line.language)
    raw = _strip_outer_quotes(line.text.strip())
    if not raw:
        raise ValueError(f"{where} has no text; remove the line or write what is said")
    text = space_cjk(raw) if language in CJK_LANGUAGES else raw
    return _CleanLine(speaker, language, raw, text)


def _bare_pattern(words: str) -> re.Pattern:
    """`words` as a whole phrase (not inside a longer word) and not already inside quotes."""
    return re.compile(r'(?<![\w"\u201c])' + re.escape(words) + r'(?![\w"\u201d])')


def weave_line(scene: str, line: _CleanLine) -> str:
    """Make sure the scene quotes the spoken words once, as the prompt guide asks.

    Already quoted (as written or CJK-spaced): the quote is normalised to `"text"`. Written
    without quotes: that first occurrence gets quoted. Absent: `Speaker says: "text"` is appended.
    """
    for words in dict.fromkeys((line.raw, line.text)):
        for left, right in _QUOTE_PAIRS:
            quoted = f"{left}{words}{right}"
            if quoted in scene:
                return scene.replace(quoted, f'"{line.text}"', 1)
    for words in dict.fromkeys((line.raw, line.text)):
        m = _bare_pattern(words).search(scene)
        if m:
            return f'{scene[:m.start()]}"{line.text}"{scene[m.end():]}'
    end = "" if scene.endswith((".", "!", "?", "\u3002", "\uff01", "\uff1f", '"')) else "."
    speaker = line.speaker[0].upper() + line.speaker[1:]
    return f'{scene}{end} {speaker} says: "{line.text}"'


def build_prompt(scene: str, dialogue: Iterable[DialogueInput] = (),
                 background_sound: str | None = None, raw: bool = False) -> str:
    """Assemble the scene paragraph, an optional `Dialogue:` block and the `Background Sound:` block.

    scene: the English description (appearance, expressions, delivery, camera, lighting); each
        spoken line is quoted in it (added at the end when the scene does not contain it).
    dialogue: utterances in speaking order; the block is omitted when there are none.
    background_sound: the most prominent background sound; empty/None -> "No prominent background sound".
    raw: the scene is already a complete enhanced prompt: returned as written (stripped); giving
        dialogue or a background sound as well is an error (they would be a second block).
    """
    scene = (scene or "").strip()
    if not scene:
        raise ValueError("the prompt is empty: describe the scene (who is on screen, how they look and "
                         "speak, camera and lighting)")
    bad = _control_chars(scene, allowed="\n\t\r")
    if bad:
        raise ValueError(f"the scene description contains control characters {', '.join(bad)}; remove them")
    lines = [_clean_line(_as_line(item, i), i) for i, item in enumerate(dialogue, start=1)]
    sound = (background_sound or "").strip()
    if raw:
        if lines or sound:
            raise ValueError("raw mode uses the prompt exactly as written (it already holds its Dialogue: and "
                             "Background Sound: paragraphs): put the lines and the sound into the prompt text, "
                             "or turn raw off")
        return scene
    for line in lines:
        scene = weave_line(scene, line)
    parts = [scene]
    if lines:
        parts.append("Dialogue:\n" + "\n".join(f'<{c.speaker}, {c.language}>: "{c.text}"' for c in lines))
    sound = sound or NO_BACKGROUND_SOUND
    if _control_chars(sound) or any(c in sound for c in "<>"):
        raise ValueError("the background sound must be one line of plain text without '<' or '>'")
    parts.append(f"Background Sound:\n<{sound}>")
    return "\n\n".join(parts)


def parse_dialogue_arg(value: str, number: int = 1) -> DialogueLine:
    """'SPEAKER|LANGUAGE|LINE' -> DialogueLine, checked now (the line itself may contain '|')."""
    parts = value.split("|", 2)
    if len(parts) != 3:
        raise ValueError(f"dialogue {value!r}: write it as 'speaker|Language|line', "
                         f"e.g. 'Woman in a red coat|English|Hello there'")
    line = DialogueLine(*(part.strip() for part in parts))
    _clean_line(line, number)  # raises on an unknown language, empty text, ...
    return line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the exact text the encoder will see for these inputs."""
    ap = argparse.ArgumentParser(prog="python -m happyhorse_core.text.prompts",
                                 description="Print the exact prompt text the T5Gemma encoder will see.")
    ap.add_argument("--scene", required=True, help="English scene description (or a whole prompt with --raw)")
    ap.add_argument("--dialogue", action="append", default=[], metavar="SPEAKER|LANGUAGE|LINE",
                    help=f"one utterance, repeatable, in speaking order; LANGUAGE: {', '.join(LANGUAGES)}")
    ap.add_argument("--background", default=None, help="most prominent background sound")
    ap.add_argument("--raw", action="store_true", help="the scene is already a complete enhanced prompt")
    args = ap.parse_args(argv)
    try:
        lines = [parse_dialogue_arg(v, n) for n, v in enumerate(args.dialogue, start=1)]
        text = build_prompt(args.scene, lines, args.background, raw=args.raw)
    except ValueError as exc:
        print(f"HappyHorse: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
