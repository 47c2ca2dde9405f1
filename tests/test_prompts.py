"""Structured prompt builder (MODEL_SPEC §6.2) and the default negative prompt (§6.3)."""
from __future__ import annotations

import pytest

from happyhorse_core.text.prompts import (CJK_LANGUAGES, DEFAULT_NEGATIVE_PROMPT, LANGUAGES, NEGATIVE_AUDIO,
                                          NEGATIVE_SPEECH, NEGATIVE_VISUAL, DialogueLine, build_prompt,
                                          normalize_language, space_cjk)

SCENE = "A man in a green shirt stands behind a counter and speaks to the camera."


def test_full_prompt_layout():
    prompt = build_prompt(
        SCENE,
        [DialogueLine("Man in green shirt", "german", "Das ist ein bisschen scharf."),
         ("Woman with microphone", "MANDARIN", "你好，世界")],
        background_sound="Light wind and distant seagulls",
    )
    assert prompt == (
        f"{SCENE}\n\n"
        "Dialogue:\n"
        '<Man in green shirt, German>: "Das ist ein bisschen scharf."\n'
        '<Woman with microphone, Mandarin>: "你 好 ， 世 界"\n\n'
        "Background Sound:\n"
        "<Light wind and distant seagulls>"
    )


def test_no_dialogue_and_no_background_sound():
    prompt = build_prompt(f"  {SCENE}  ", [], background_sound="   ")
    assert prompt == f"{SCENE}\n\nBackground Sound:\n<No prominent background sound>"
    assert "Dialogue:" not in prompt
    assert build_prompt(SCENE).endswith("Background Sound:\n<No prominent background sound>")


@pytest.mark.parametrize("language, text, expected", [
    ("Mandarin", "今天天气很好。", "今 天 天 气 很 好 。"),
    ("Cantonese", "唔該你 幫我", "唔 該 你 幫 我"),
    ("Japanese", "おはようございます", "お は よ う ご ざ い ま す"),
    ("Korean", "안녕하세요 여러분", "안 녕 하 세 요 여 러 분"),
    ("Japanese", "iPhoneを2台", "iPhone を 2 台"),
    ("English", "Hello there, friend.", "Hello there, friend."),
    ("German", "Grüß Gott!", "Grüß Gott!"),
    ("French", "Ça va très bien.", "Ça va très bien."),
])
def test_cjk_lines_are_spaced_others_verbatim(language, text, expected):
    prompt = build_prompt(SCENE, [DialogueLine("Speaker", language, text)])
    assert f'<Speaker, {language}>: "{expected}"' in prompt


def test_space_cjk_is_idempotent_and_collapses_whitespace():
    once = space_cjk("你好，  世界")
    assert once == "你 好 ， 世 界"
    assert space_cjk(once) == once


def test_cjk_set_is_the_four_cjk_languages():
    assert CJK_LANGUAGES == {"Mandarin", "Cantonese", "Japanese", "Korean"}


def test_languages_case_insensitive_and_canonical():
    assert LANGUAGES == ("Mandarin", "Cantonese", "English", "Japanese", "Korean", "German", "French")
    for name in LANGUAGES:
        assert normalize_language(name.upper()) == name
        assert normalize_language(f" {name.lower()} ") == name


@pytest.mark.badinput
@pytest.mark.parametrize("bad", ["Spanish", "Chinese", "", "en"])
def test_unknown_language_lists_the_seven(bad):
    with pytest.raises(ValueError) as err:
        build_prompt(SCENE, [DialogueLine("Man", bad, "Hola")])
    for name in LANGUAGES:
        assert name in str(err.value)


@pytest.mark.badinput
@pytest.mark.parametrize("bad_text", ["first\nsecond", "tab\there", "bell\x07", "nul\x00"])
def test_control_characters_in_a_line_name_the_line(bad_text):
    lines = [DialogueLine("Man", "English", "Fine."), DialogueLine("Woman", "English", bad_text)]
    with pytest.raises(ValueError, match=r"dialogue line 2 \('Woman'\).*control characters"):
        build_prompt(SCENE, lines)


@pytest.mark.badinput
@pytest.mark.parametrize("scene", ["", "   ", "\n\t", None])
def test_empty_prompt_rejected(scene):
    with pytest.raises(ValueError, match="prompt is empty"):
        build_prompt(scene, [DialogueLine("Man", "English", "Hi")])


@pytest.mark.badinput
def test_other_bad_inputs():
    with pytest.raises(ValueError, match="dialogue line 1.*no text"):
        build_prompt(SCENE, [DialogueLine("Man", "English", '  ""  ')])
    with pytest.raises(ValueError, match="speaker description"):
        build_prompt(SCENE, [DialogueLine("<Man>", "English", "Hi")])
    with pytest.raises(ValueError, match="speaker description"):
        build_prompt(SCENE, [DialogueLine("  ", "English", "Hi")])
    with pytest.raises(ValueError, match="background sound"):
        build_prompt(SCENE, background_sound="rain <loud>")
    with pytest.raises(ValueError, match="scene description contains control characters"):
        build_prompt("A man\x1b[31m talks.")
    with pytest.raises(ValueError, match=r"dialogue line 1 must be"):
        build_prompt(SCENE, [("Man", "English")])


def test_user_quotes_are_not_doubled():
    prompt = build_prompt(SCENE, [DialogueLine("Man", "English", '"Hello."'),
                                  DialogueLine("Woman", "English", "\u201cHi.\u201d")])
    assert '<Man, English>: "Hello."' in prompt
    assert '<Woman, English>: "Hi."' in prompt


def test_default_negative_prompt_covers_three_groups():
    parts = DEFAULT_NEGATIVE_PROMPT.split(", ")
    assert parts == list(NEGATIVE_VISUAL + NEGATIVE_AUDIO + NEGATIVE_SPEECH)
    assert len(set(parts)) == len(parts), "duplicate keywords"
    assert min(len(NEGATIVE_VISUAL), len(NEGATIVE_AUDIO), len(NEGATIVE_SPEECH)) >= 10
    assert all(p and p == p.strip() and "," not in p for p in parts)
