"""Structured prompt builder (MODEL_SPEC §6.2) and the default negative prompt (§6.3)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from happyhorse_core.text.prompts import (CJK_LANGUAGES, DEFAULT_NEGATIVE_PROMPT, LANGUAGES, NEGATIVE_AUDIO,
                                          NEGATIVE_SPEECH, NEGATIVE_VISUAL, DialogueLine, build_prompt,
                                          negative_or_default, normalize_language, space_cjk)

SCENE = "A man in a green shirt stands behind a counter and speaks to the camera."


def test_full_prompt_layout():
    prompt = build_prompt(
        SCENE,
        [DialogueLine("Man in green shirt", "german", "Das ist ein bisschen scharf."),
         ("Woman with microphone", "MANDARIN", "你好，世界")],
        background_sound="Light wind and distant seagulls",
    )
    assert prompt == (
        f'{SCENE} Man in green shirt says: "Das ist ein bisschen scharf." '
        'Woman with microphone says: "你 好，世 界"\n\n'
        "Dialogue:\n"
        '<Man in green shirt, German>: "Das ist ein bisschen scharf."\n'
        '<Woman with microphone, Mandarin>: "你 好，世 界"\n\n'
        "Background Sound:\n"
        "<Light wind and distant seagulls>"
    )


def test_no_dialogue_and_no_background_sound():
    prompt = build_prompt(f"  {SCENE}  ", [], background_sound="   ")
    assert prompt == f"{SCENE}\n\nBackground Sound:\n<No prominent background sound>"
    assert "Dialogue:" not in prompt
    assert build_prompt(SCENE).endswith("Background Sound:\n<No prominent background sound>")


@pytest.mark.parametrize("language, text, expected", [
    ("Mandarin", "今天天气很好。", "今 天 天 气 很 好。"),
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
    assert once == "你 好， 世 界"
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


def test_default_negative_prompt_fits_the_encoder_without_a_cut():
    # Gemma-family tokenizers gave 4.7 characters per token on this text (text/negative.py): 2600
    # characters is ~560 tokens, under the 640 the encoder reads, with room for a tokenizer difference.
    assert len(DEFAULT_NEGATIVE_PROMPT) <= 2600, len(DEFAULT_NEGATIVE_PROMPT)


# Every concept family of the reference's default negative prompt (inference/pipeline/video_generate.py),
# named by us, with a pattern our default must match. The list is the checklist for "covers the same ground".
REFERENCE_CONCEPTS = {
    "bright tones": r"bright", "overexposure": r"exposure", "static / still picture": r"still photograph|frozen",
    "blurred details": r"blurr", "subtitles": r"subtitle", "art style / paintings": r"painted|artwork",
    "overall gray": r"grey", "worst / low quality": r"lowest quality", "JPEG residue": r"JPEG", "ugly": r"ugly",
    "incomplete": r"unfinished", "extra fingers": r"extra fingers", "bad hands": r"badly drawn hands",
    "bad faces": r"badly drawn face", "deformed": r"deformed", "disfigured": r"disfigured",
    "misshapen limbs": r"misshapen limbs", "fused fingers": r"fingers fused", "messy background": r"cluttered",
    "three legs": r"third leg", "background crowd": r"crowds of people", "walking backwards": r"backwards",
    "noise": r"background noise", "hiss": r"hiss", "hum": r"hum\b", "buzz": r"buzz", "crackle": r"crackl",
    "audio static": r"radio static", "compression artifacts": r"compression artifacts", "MP3": r"MP3",
    "clipping": r"clipping", "distortion": r"distorted", "muffled / muddy": r"muffled muddy", "unclear": r"unclear",
    "echo / reverb": r"reverb", "room echo": r"room echo", "hollow / distant": r"hollow far-away",
    "washed out": r"washed-out sound", "harsh / shrill / piercing": r"shrill piercing", "grating": r"grating",
    "tinny / thin": r"tinny thin", "boomy / bass-heavy": r"bass-heavy", "flat EQ": r"EQ",
    "over-compressed": r"over-compressed", "abrupt cut": r"abrupt", "jarring transition": r"jarring",
    "sudden silence": r"silence", "looping": r"looping", "music": r"background music",
    "instruments": r"instruments", "sirens": r"sirens", "alarms": r"alarms", "crowd noise": r"crowd noise",
    "unrelated effects": r"unrelated sound effects", "chaotic / disorganised": r"chaotic disorganised",
    "cheap sound": r"cheap-sounding", "emotionless / deadpan": r"deadpan", "lifeless / apathetic": r"apathetic",
    "robotic / mechanical": r"robotic mechanical", "monotone": r"monotone", "undynamic / boring": r"unvaried",
    "reading a script": r"script", "AI voice": r"AI-generated voice", "TTS": r"TTS",
    "insincere / fake emotion": r"fake emotion", "melodramatic": r"melodramatic", "cheesy / cringey": r"cringe",
    "hesitant / unconfident": r"hesitant", "tired / weak": r"tired weak", "stutter / stammer": r"stammer",
    "mumbling": r"mumbling", "slurred": r"slurred", "mispronounced": r"mispronounced",
    "articulation": r"articulation", "lisp": r"lisp", "vocal fry": r"vocal fry", "creaky": r"creaky",
    "mouth clicks": r"mouth clicks", "lip smacks": r"lip smack", "wet mouth": r"wet mouth",
    "heavy breathing": r"heavy breathing", "inhales": r"inhales", "plosives / p-pops": r"plosives",
    "coughing": r"coughing", "throat clearing": r"throat clearing", "sneezing": r"sneezing",
    "too fast / rushed": r"too fast", "too slow / dragged": r"too slowly", "unnatural pauses": r"unnatural pauses",
    "awkward silence": r"awkward silences", "choppy / disjointed": r"choppy disjointed",
    "multiple speakers": r"several speakers", "two voices": r"second voice",
    "background talking": r"talking in the background", "off-key / out of tune": r"off-key",
    "autotune": r"auto-tune",
}


@pytest.mark.parametrize("concept", sorted(REFERENCE_CONCEPTS))
def test_default_negative_covers_each_reference_concept(concept):
    assert re.search(REFERENCE_CONCEPTS[concept], DEFAULT_NEGATIVE_PROMPT), concept


def test_empty_negative_means_the_default_for_node_and_cli():
    assert negative_or_default("") == negative_or_default("   \n") == negative_or_default(None)
    assert negative_or_default("") == DEFAULT_NEGATIVE_PROMPT
    assert negative_or_default(" blurry ") == "blurry"
    from happyhorse_core.cli.generate import build_parser, build_request
    args = build_parser().parse_args(["--tiny", "--mode", "base", "--prompt", SCENE, "--out", "x.mp4"])
    assert build_request(args).negative_prompt == DEFAULT_NEGATIVE_PROMPT
    src = (Path(__file__).resolve().parents[1] / "nodes" / "encode_nodes.py").read_text()
    assert "negative_or_default(negative_prompt)" in src  # the node encodes through the same rule


@pytest.mark.parametrize("text, expected", [
    ("有的人在一起生活一辈子，还带着假面具呢，比如说你十年了。",
     "有 的 人 在 一 起 生 活 一 辈 子，还 带 着 假 面 具 呢，比 如 说 你 十 年 了。"),
    ("「こんにちは」と言った！", "「こ ん に ち は」と 言 っ た！"),
    ("나비번알아？네、알아요.", "나 비 번 알 아？네、알 아 요."),
    ("Hello, 世界", "Hello, 世 界"),
    ("我用iPhone拍的…", "我 用 iPhone 拍 的…"),
])
def test_cjk_punctuation_stays_attached(text, expected):
    assert space_cjk(text) == expected
    assert space_cjk(expected) == expected


def test_spoken_lines_are_quoted_in_the_scene_once():
    line = DialogueLine("A man", "Mandarin", "你好，世界")
    # absent -> appended as a quoted sentence
    assert build_prompt("A man smiles.", [line]).startswith('A man smiles. A man says: "你 好，世 界"\n\n')
    # already quoted (unspaced or spaced, straight or curly quotes) -> normalised, not repeated
    for scene in ('He says "你好，世界" softly.', "He says \u201c你 好，世 界\u201d softly."):
        out = build_prompt(scene, [line])
        assert out.split("\n\n")[0] == 'He says "你 好，世 界" softly.'
    # written without quotes -> that occurrence gets quoted
    out = build_prompt("He says Hello there and waves", [DialogueLine("Man", "English", "Hello there")])
    assert out.split("\n\n")[0] == 'He says "Hello there" and waves'
    # a shorter word inside another word is not taken for the line
    out = build_prompt("Hithere is a name.", [DialogueLine("Man", "English", "Hi")])
    assert out.split("\n\n")[0] == 'Hithere is a name. Man says: "Hi"'
    assert out.count('"Hi"') == 2  # once in the scene, once in the Dialogue block


RAW = 'A woman talks.\n\nDialogue:\n<Woman, English>: "Hi"\n\nBackground Sound:\n<Rain>'


def test_raw_mode_passes_the_prompt_through():
    assert build_prompt(f"  {RAW}\n", raw=True) == RAW
    assert build_prompt(RAW, raw=True).count("Background Sound:") == 1
    with pytest.raises(ValueError, match="raw mode"):
        build_prompt(RAW, [DialogueLine("Woman", "English", "Hi")], raw=True)
    with pytest.raises(ValueError, match="raw mode"):
        build_prompt(RAW, background_sound="Rain", raw=True)


def test_prompt_command_prints_the_exact_text(capsys):
    from happyhorse_core.text.prompts import main
    argv = ["--scene", "A man smiles.", "--dialogue", "Man|Mandarin|你好，世界", "--background", "Rain"]
    assert main(argv) == 0
    expected = build_prompt("A man smiles.", [DialogueLine("Man", "Mandarin", "你好，世界")], "Rain")
    assert capsys.readouterr().out == expected + "\n"
    assert main(["--scene", RAW, "--raw"]) == 0
    assert capsys.readouterr().out == RAW + "\n"
    assert main(["--scene", "x", "--dialogue", "Man|Klingon|hi"]) == 2
    assert "unsupported language" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "happyhorse_core.text.prompts", *argv], capture_output=True,
                          text=True, encoding="utf-8", cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and proc.stdout == expected + "\n", proc.stderr
