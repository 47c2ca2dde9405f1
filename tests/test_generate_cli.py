"""The `python -m happyhorse_core.generate` CLI with --tiny weights: mp4 structure, modes, inputs, SR, bad input.

CLI runs pass `--threads 1` (also the --tiny default): on a shared 2-core machine one torch thread is
several times faster than two contending ones.
"""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from happyhorse_core.cli import generate as cli
from happyhorse_core.testing import tiny_codecs
from happyhorse_core.cli import components as cli_components
from happyhorse_core.cli.runner import ClipRequest, ClipResult, ClipRunner, voice_latent
from happyhorse_core.cli.components import tiny_components
from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig
from happyhorse_core.cli.generate import main, output_paths, parse_dialogue, write_outputs
from happyhorse_core.geometry import FPS, ClipGeometry
from happyhorse_core.media.mux import probe_mp4
from happyhorse_core.media.read import fit_image, read_audio, read_image
from happyhorse_core.sampling.pipeline import SamplingOptions, TextConditioning
from happyhorse_core.cli.progress import TextProgress
from happyhorse_core.testing.tiny_text import write_tiny_text_folder
from happyhorse_core.testing.tiny_dit import tiny_dit

REPO = Path(__file__).resolve().parents[1]
PROMPT = "A man in a grey coat looks into the camera and speaks calmly."


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "happyhorse_core.cli.generate", "--tiny", "--threads", "1",
                           "--prompt", PROMPT, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def expected_frames(seconds: int) -> int:
    latent_frames = (FPS * seconds) // 4 + 1  # T for 25·s + 1 pixel frames
    return 4 * (latent_frames - 1) + 1


def check_mp4(path: Path, seconds: int, width: int, height: int) -> dict:
    info = probe_mp4(path)
    assert info["video_codec"] == "h264" and info["fps"] == FPS
    assert info["frames"] == expected_frames(seconds)
    assert (info["width"], info["height"]) == (width, height)
    assert info["audio_codec"] == "aac" and info["sample_rate"] == 44100 and info["audio_channels"] == 2
    assert abs(info["audio_duration_s"] - info["frames"] / FPS) <= 1 / FPS
    return info


def write_png(path: Path, rgb: np.ndarray) -> None:
    h, w, _ = rgb.shape
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = w, h, "rgb24"
        for pkt in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """samples int16 [N, C]."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())


@pytest.mark.slow
@pytest.mark.parametrize("aspect,size,extra", [
    ("16:9", (448, 256), []),
    ("9:16", (256, 448), ["--mode", "base", "--steps", "3"]),
])
def test_tiny_two_seconds(tmp_path, aspect, size, extra):
    out = tmp_path / "clip.mp4"
    proc = run_cli("--aspect", aspect, "--seconds", "2", "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    check_mp4(out, 2, *size)
    assert "STAND-IN codecs" in proc.stderr and "TINY RANDOM" in proc.stderr
    assert f"wrote {out}" in proc.stdout and "sampling" in proc.stdout
    steps = extra[-1] if extra else "8"
    assert f"{steps}/{steps}" in proc.stderr  # the progress bar reached the end
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp files, no audio latent


@pytest.mark.slow
def test_tiny_image_and_voice_are_kept(tmp_path):
    """Base mode: frame 0 is the clean image latent and the voice latent is never updated."""
    g = ClipGeometry.from_preset("16:9", "256p", 1)
    rgb = np.random.default_rng(0).integers(0, 256, (g.height, g.width, 3), dtype=np.uint8)
    write_png(tmp_path / "face.png", rgb)
    pcm = np.random.default_rng(1).integers(-8000, 8000, (g.audio_samples_nominal, 2)).astype(np.int16)
    write_wav(tmp_path / "voice.wav", pcm, 51_200)  # already 51.2 kHz stereo and exactly the clip length
    out = tmp_path / "clip.mp4"
    proc = run_cli("--seconds", "1", "--mode", "base", "--steps", "2", "--image", str(tmp_path / "face.png"),
                   "--audio", str(tmp_path / "voice.wav"), "--save-latents", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    check_mp4(out, 1, g.width, g.height)
    latents = load_file(str(output_paths(out)["latents"]))
    image01 = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None, :, None]  # [1, 3, 1, H, W]
    torch.testing.assert_close(latents["video"][:, :, :1], tiny_codecs.encode_video(image01), rtol=0, atol=1e-6)
    voice = torch.from_numpy(pcm.T.astype(np.float32) / 32768)
    torch.testing.assert_close(latents["audio"], tiny_codecs.encode_audio(voice), rtol=0, atol=1e-5)
    assert "padded" not in proc.stderr and "cut to" not in proc.stderr


@pytest.mark.slow
def test_tiny_540p_runs_the_sr_stage(tmp_path):
    out = tmp_path / "clip.mp4"
    proc = run_cli("--resolution", "540p", "--aspect", "1:1", "--seconds", "1", "--steps", "2", "--save-latents",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    check_mp4(out, 1, 512, 512)
    assert "super-resolution" in proc.stdout and "256x256 -> SR 512x512" in proc.stderr
    assert "5/5" in proc.stderr  # the SR progress bar ran its 5 steps
    assert load_file(str(output_paths(out)["latents"]))["video"].shape == (1, 48, 7, 32, 32)


@pytest.mark.badinput
@pytest.mark.parametrize("args,message", [
    (["--seconds", "0"], "seconds must be between 1 and 15"),
    (["--dialogue", "Man in a grey coat|Klingon|nuqneH"], "unsupported language 'Klingon'"),
    (["--dialogue", "Man in a grey coat: hello"], "speaker|Language|line"),
    (["--width", "448"], "both --width and --height"),
    (["--steps", "0"], "steps must be at least 1"),
    (["--prompt", "   "], "the prompt is empty"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--image", "missing.png"], "image file not found"),
])
def test_bad_input_exits_nonzero_without_output(tmp_path, capsys, args, message):
    """main() is what `python -m happyhorse_core.generate` exits with (sys.exit(main()))."""
    out = tmp_path / "clip.mp4"
    assert main(["--tiny", "--prompt", PROMPT, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("HappyHorse: error: ") and message in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.badinput
def test_real_weights_refuse_image_and_audio_and_need_files(tmp_path, capsys):
    png = tmp_path / "face.png"
    write_png(png, np.zeros((64, 64, 3), np.uint8))
    out = tmp_path / "clip.mp4"
    assert main(["--prompt", PROMPT, "--image", str(png), "--out", str(out)]) == 2
    assert "use the ComfyUI nodes" in capsys.readouterr().err
    assert main(["--prompt", PROMPT, "--out", str(out)]) == 2
    assert "--dit is required" in capsys.readouterr().err
    assert main(["--prompt", PROMPT, "--dit", str(tmp_path / "nope.safetensors"), "--out", str(out)]) == 2
    assert "nope.safetensors: no such" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png"]


def test_help_labels_the_stand_ins_and_the_audio_latent(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "STAND-IN codecs" in text and "not the Wan2.2 / Stable Audio VAEs" in text
    assert "the mp4 is video-only" in text and ".audio_latent.safetensors" in text


def test_parse_dialogue_keeps_pipes_in_the_line():
    (line,) = parse_dialogue(["Old man | cantonese | a|b"])
    assert (line.speaker, line.language, line.text) == ("Old man", "cantonese", "a|b")


def test_fit_image_crops_the_center_then_resizes():
    img = torch.zeros(3, 100, 300, dtype=torch.uint8)
    img[:, :, 100:200] = 255  # white middle third, black sides
    out = fit_image(img, 64, 64)  # 1:1 -> the middle 100x100 square only
    assert out.shape == (1, 3, 1, 64, 64)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-6)
    tall = fit_image(img, 32, 96)  # 1:3 -> a 33x100 strip from the middle
    assert tall.shape == (1, 3, 1, 96, 32) and tall.min() > 0.99


def test_read_image_and_audio_with_pyav(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", rgb)
    assert torch.equal(read_image(tmp_path / "a.png"), torch.from_numpy(rgb).permute(2, 0, 1))
    pcm = np.random.default_rng(3).integers(-30000, 30000, (1600, 1)).astype(np.int16)
    write_wav(tmp_path / "a.wav", pcm, 16_000)
    wav, rate = read_audio(tmp_path / "a.wav")
    assert rate == 16_000 and wav.shape == (1, 1600)
    torch.testing.assert_close(wav, torch.from_numpy(pcm.T / 32768).float())
    with pytest.raises(ValueError, match="no audio stream"):
        read_audio(tmp_path / "a.png")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        read_image(tmp_path / "missing.png")


def test_voice_latent_warns_when_padded(caplog):
    g = ClipGeometry.from_preset("16:9", "256p", 1)
    mono = torch.sin(torch.arange(8000) * 0.05)[None] * 0.5  # 0.5 s at 16 kHz
    with caplog.at_level(logging.WARNING, logger="HappyHorse"):
        latent = voice_latent((mono, 16_000), g, tiny_codecs.encode_audio)
    assert latent.shape == g.audio_latent_shape
    assert "padded with silence" in caplog.text


def test_progress_bar_text():
    clock = iter([0.0, 2.0, 8.0]).__next__
    stream = io.StringIO()
    bar = TextProgress("sampling", stream=stream, width=10, clock=clock, in_place=False)
    bar(1, 4)
    bar(4, 4)
    first, last = stream.getvalue().splitlines()
    assert first == "  sampling [##--------] 1/4  2.00 s/step  ETA 6.0 s"
    assert last == "  sampling [##########] 4/4  2.00 s/step  done in 8.0 s"


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_run_clip_is_deterministic_and_loads_the_sr_dit_lazily(one_thread):
    """The benchmark entry point: small sizes, a lazy SR loader, the base DiT released before SR."""
    parts = tiny_components("distilled", "540p")
    sr_model, calls = parts.sr_dit, []
    parts.sr_dit = lambda: calls.append(1) or sr_model
    parts.release_between_stages = True
    parts.decode_audio = None  # as with real weights: the audio stays a latent
    text = TextConditioning(torch.randn(5, 3584, generator=torch.Generator().manual_seed(0)))
    request = ClipRequest("unused here", ClipGeometry(64, 64, 1), sr_geometry=ClipGeometry(128, 96, 1),
                          sampling=SamplingOptions(steps=1, seed=3))
    first = ClipRunner(parts).run(request, text)
    assert calls == [1] and parts.dit is None and parts.sr_dit is sr_model
    assert first.frames.shape == (25, 96, 128, 3) and first.frames.dtype == torch.uint8
    assert first.waveform is None and first.audio_latent.shape == (1, 26, 64)
    assert list(first.timings) == ["sampling", "load SR DiT", "super-resolution", "decode video"]
    again = ClipRunner(tiny_components("distilled", "540p")).run(request, text)
    assert torch.equal(first.video_latent, again.video_latent) and torch.equal(first.frames, again.frames)
    assert again.waveform is not None and again.waveform.shape == (2, 25 * 44100 // FPS)


def _result(waveform):
    frames = torch.zeros(5, 32, 32, 3, dtype=torch.uint8)
    return ClipResult(frames, waveform, torch.zeros(1, 48, 2, 2, 2), torch.ones(1, 6, 64))


def test_write_outputs_keeps_the_audio_latent_when_there_is_no_audio_decoder(tmp_path):
    out = tmp_path / "clip.mp4"
    written = write_outputs(_result(None), out, save_latents=True)
    assert [p.name for p in written] == ["clip.mp4", "clip.audio_latent.safetensors", "clip.latents.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert torch.equal(load_file(str(written[1]))["audio_latent"], torch.ones(1, 6, 64))
    info = probe_mp4(out)
    assert info["frames"] == 5 and info["audio_codec"] is None


def test_interrupt_while_writing_leaves_no_file(tmp_path, monkeypatch):
    def interrupted(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")  # as if the muxer had started, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "write_mp4", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(_result(None), tmp_path / "clip.mp4", save_latents=True)
    (tmp_path / "clip.mp4").unlink()  # the fake writer is not atomic; the staged companions must be gone
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_exits_130_with_a_message(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_encode_prompts", interrupted)
    assert main(["--tiny", "--prompt", PROMPT, "--seconds", "1", "--out", str(tmp_path / "clip.mp4")]) == 130
    assert "interrupted; no output was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_real_weight_path_writes_video_only_mp4_and_audio_latent(tmp_path, capsys, monkeypatch, one_thread):
    """Real-weight flow with small files: T5Gemma folder + Turbo-VAED file through their loaders, and a
    stand-in `happyhorse_core.weights.loading` module (the real one lives on another branch) giving a tiny DiT."""
    write_tiny_text_folder(tmp_path / "t5gemma")
    torch.manual_seed(0)
    save_file(TurboVAED(TurboVAEDConfig.tiny()).state_dict(), str(tmp_path / "turbo.safetensors"))
    (tmp_path / "dit.safetensors").write_bytes(b"")
    calls = []

    def load_dit(path, *, variant=None, weight_dtype="bf16", device="cpu", **kwargs):
        calls.append((Path(path).name, variant, weight_dtype, str(device)))
        return tiny_dit(variant).to(device)

    monkeypatch.setattr(cli_components, "load_dit", load_dit)
    out = tmp_path / "out" / "clip.mp4"
    rc = main(["--prompt", PROMPT, "--dit", str(tmp_path / "dit.safetensors"), "--text-encoder",
               str(tmp_path / "t5gemma"), "--turbo-vaed", str(tmp_path / "turbo.safetensors"), "--width", "64",
               "--height", "64", "--seconds", "1", "--steps", "1", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert calls == [("dit.safetensors", "distill", "bf16", "cpu")]
    assert "the mp4 is video-only" in captured.err and "clip.audio_latent.safetensors" in captured.err
    info = probe_mp4(out)
    assert info["frames"] == expected_frames(1) and (info["width"], info["height"]) == (64, 64)
    assert info["audio_codec"] is None
    latent = load_file(str(output_paths(out)["audio_latent"]))["audio_latent"]
    assert latent.shape == (1, FPS + 1, 64) and torch.isfinite(latent).all()
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.audio_latent.safetensors", "clip.mp4"]
