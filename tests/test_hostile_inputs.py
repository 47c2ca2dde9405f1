"""Hostile and huge inputs (issue 13): bounded work before the encoder, Cancel between layers, broken links,
early image shrink, batches in sync. Messages are checked in the bad-input table (test_bad_inputs.py);
this file checks the mechanics behind them, including the peak RSS of child processes.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from happyhorse_core.geometry import ClipGeometry, check_batch, video_matched_samples
from happyhorse_core.media.read import center_crop_to_aspect, fit_image
from happyhorse_core.media.shrink import BAND_OUTPUT_ROWS, shrink_early, shrink_factor
from happyhorse_core.paths import broken_link_message
from happyhorse_core.text import encode_prompt, load_text_stack
from happyhorse_core.text.bounds import MAX_DIALOGUE_LINES, MAX_TOKENIZED_CHARS, prompt_tokens
from happyhorse_core.testing.tiny_text import write_tiny_text_folder
from happyhorse_core.validation import parse_dialogue

pytestmark = pytest.mark.badinput
REPO = Path(__file__).resolve().parents[1]


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("t5") / "t5tiny"
    folder.mkdir()
    write_tiny_text_folder(folder, hidden_size=64, num_layers=4)
    return folder


@pytest.fixture(scope="module")
def stack(text_folder):
    return load_text_stack(text_folder, dtype=torch.float32)


# -- prompt bound ----------------------------------------------------------------------------------------------

def test_a_50kb_prompt_reaches_the_encoder_as_640_tokens(stack):
    encoder, tokenizer = stack
    seen = []
    original = encoder.encode

    def spy(ids, device=None, interrupt=None):
        seen.append(tuple(ids.shape))
        return original(ids, device, interrupt=interrupt)

    encoder.encode = spy
    try:
        feats = encode_prompt(encoder, tokenizer, "a quiet harbour at dawn, " * 2000)  # 50 000 characters
    finally:
        del encoder.encode
    assert seen == [(1, 640)]
    assert feats.truncated and feats.features.shape == (640, 64)
    assert feats.tokens.total > 5000 and feats.tokens.exact


def test_short_prompts_are_unchanged_by_the_bound(stack):
    """Under the limit the features equal encoding the ids directly (no cut, no other change)."""
    encoder, tokenizer = stack
    text = "A woman in a red coat speaks softly."
    ids = torch.tensor([tokenizer.encode(text)])
    feats = encode_prompt(encoder, tokenizer, text)
    assert not feats.truncated and feats.tokens.total == ids.shape[1]
    assert torch.equal(feats.features, encoder.encode(ids)[0].half().float())


def test_text_beyond_the_character_bound_is_not_tokenized():
    calls = []

    class CountingTokenizer:
        def encode(self, text):
            calls.append(len(text))
            return list(range(len(text) // 4))

    counted = prompt_tokens(CountingTokenizer(), "x" * (MAX_TOKENIZED_CHARS * 3), 640)
    assert calls == [MAX_TOKENIZED_CHARS]
    assert not counted.exact and counted.truncated and len(counted.ids) == 640
    assert counted.count_text() == f"more than {MAX_TOKENIZED_CHARS // 4} tokens"


def test_dialogue_is_capped_and_split_at_newlines_only():
    more = "\n".join(f"Man {i} | English | line {i}" for i in range(5000))
    said = []
    lines = parse_dialogue("A woman", "English", "Hello.", more, warn=said.append)
    assert len(lines) == MAX_DIALOGUE_LINES and lines[1].text == "line 0"
    assert len(said) == 1 and "5001 lines" in said[0] and f"first {MAX_DIALOGUE_LINES}" in said[0]
    crlf = parse_dialogue("A", "English", "", "Bob | English | hi\r\nAnn | French | salut\rEve | German | hallo")
    assert [d.speaker for d in crlf] == ["Bob", "Ann", "Eve"]


# -- peak memory, measured in child processes -------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    from happyhorse_core.text import build_prompt, encode_prompt, load_text_stack
    from happyhorse_core.validation import parse_dialogue
    torch.set_num_threads(1)
    folder, scene_repeat, lines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    encoder, tokenizer = load_text_stack(folder, dtype=torch.float32)
    more = "\\n".join(f"Man {i} in a grey suit | English | I will say this once more, line {i}." for i in range(lines))
    dialogue = parse_dialogue("A woman", "English", "Hello there.", more)
    prompt = build_prompt("A woman in a red coat speaks on a quiet harbour at dawn. " * scene_repeat, dialogue)
    feats = encode_prompt(encoder, tokenizer, prompt)
    neg = encode_prompt(encoder, tokenizer, "blurry, " * scene_repeat * 8, what="negative prompt")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # this child's own peak (KiB on Linux)
    print(json.dumps({"peak_kib": peak_kib, "rows": feats.length, "prompt_chars": len(prompt),
                      "tokens": feats.tokens.total, "neg_rows": neg.length}))
""")


def _child_peak(folder: Path, scene_repeat: int, lines: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(scene_repeat), str(lines)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux")
def test_peak_rss_does_not_depend_on_prompt_or_dialogue_size(text_folder):
    """A 50 KB prompt and 5 000 dialogue lines peak within a small margin of a one-line prompt.

    Without the bound the n x n attention of this 2-head stand-in alone would need
    2 heads x n^2 x 4 bytes: > 3 GB at the ~20 000 tokens of the 50 KB prompt. The margin (48 MiB)
    covers the tokenizer's own bookkeeping of the long text and allocator noise.
    """
    normal = _child_peak(text_folder, 1, 0)
    huge_prompt = _child_peak(text_folder, 900, 0)  # ~51 000 characters
    many_lines = _child_peak(text_folder, 1, 5000)
    print(f"peak RSS MiB: normal {normal['peak_kib'] / 1024:.1f}, 50 KB prompt {huge_prompt['peak_kib'] / 1024:.1f}, "
          f"5000 dialogue lines {many_lines['peak_kib'] / 1024:.1f}")
    assert huge_prompt["prompt_chars"] > 50_000 and huge_prompt["tokens"] > 5000
    assert huge_prompt["rows"] == many_lines["rows"] == 640 and normal["rows"] < 640
    for run in (huge_prompt, many_lines):
        grew = (run["peak_kib"] - normal["peak_kib"]) / 1024
        assert grew < 48, f"peak grew by {grew:.1f} MiB ({run})"


# -- Cancel between encoder layers ----------------------------------------------------------------------------

def test_cancel_stops_the_text_encoder_between_layers(stack):
    encoder, tokenizer = stack
    ran = []
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, layer in enumerate(encoder.layers)]
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:  # Cancel pressed while layer 0 runs
            raise Interrupted

    try:
        with pytest.raises(Interrupted):
            encode_prompt(encoder, tokenizer, "A woman speaks.", interrupt=interrupt)
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0]


# -- broken links -------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_broken_and_looping_links_are_named(tmp_path):
    dangling = tmp_path / "dit.safetensors"
    dangling.symlink_to(tmp_path / "moved_away.safetensors")
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop)
    (tmp_path / "real.safetensors").write_bytes(b"x")
    assert "broken link" in broken_link_message(dangling) and "moved_away.safetensors" in broken_link_message(dangling)
    assert "symbolic-link loop" in broken_link_message(loop)
    assert broken_link_message(tmp_path / "real.safetensors") is None
    assert broken_link_message(tmp_path / "absent.safetensors") is None


# -- start image: work proportional to the clip -----------------------------------------------------------------

def test_huge_images_are_box_shrunk_in_bands_before_the_resize():
    assert shrink_factor(1020, 1790, 256, 448) == 1  # under 4x: untouched
    assert shrink_factor(1024, 1792, 256, 448) == 2  # 4x: averaged down to 2x
    assert shrink_factor(4096, 7168, 256, 448) == 8
    img = torch.rand(3, 2048, 3584)
    out = shrink_early(img, 448, 256)
    assert out.shape == (3, 512, 896)
    assert torch.allclose(out[:, 0, 0], img[:, :4, :4].mean(dim=(1, 2)), atol=1e-6)
    seen = []
    shrink_early(img, 448, 256, interrupt=lambda: seen.append(1))
    assert len(seen) == math.ceil(512 / BAND_OUTPUT_ROWS)  # Cancel is checked between bands


def test_fit_image_is_unchanged_for_ordinary_pictures_and_bounded_for_huge_ones():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 300, 500), dtype=torch.uint8, generator=g)
    x = center_crop_to_aspect(img.float() / 255.0, 448, 256)  # the former path: float copy, crop, resize
    direct = torch.nn.functional.interpolate(x[None], size=(256, 448), mode="bicubic", antialias=True,
                                             align_corners=False)[0].clamp(0, 1)
    assert torch.equal(fit_image(img, 448, 256)[0, :, 0], direct)
    huge = torch.randint(0, 256, (3, 4000, 7000), dtype=torch.uint8, generator=g)
    out = fit_image(huge, 448, 256)
    assert out.shape == (1, 3, 1, 256, 448) and 0 <= out.min() and out.max() <= 1


# -- batches ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", range(1, 16))
def test_each_clip_audio_is_cut_to_its_video_length(seconds):
    geo = ClipGeometry.from_preset("16:9", "256p", seconds)
    samples = video_matched_samples(geo.audio_frames)
    assert samples * 25 == geo.decoded_frames * 44_100  # exact: same duration as the decoded frames
    assert samples <= geo.audio_samples_output


def test_batch_times_seconds_is_bounded():
    check_batch(4, ClipGeometry.from_preset("16:9", "256p", 15))  # 60 s: allowed
    with pytest.raises(ValueError, match=r"batch_size 16 x 15 s .* at most 60 s"):
        check_batch(16, ClipGeometry.from_preset("16:9", "256p", 15))


def test_cli_dialogue_is_capped_and_refuses_line_separators(caplog):
    from happyhorse_core.cli.generate import parse_dialogue as cli_dialogue
    with caplog.at_level("WARNING", logger="HappyHorse"):
        lines = cli_dialogue([f"Man {i}|English|line {i}" for i in range(200)])
    assert len(lines) == MAX_DIALOGUE_LINES and "the dialogue has 200 lines" in caplog.text
    with pytest.raises(ValueError, match=r"--dialogue 1 contains a U\+2028 LINE SEPARATOR"):
        cli_dialogue(["Bob|English|hello\u2028there"])
