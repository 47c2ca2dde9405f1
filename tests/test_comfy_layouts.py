"""nodes/comfy_layouts.py: ComfyUI IMAGE / AUDIO / LATENT values <-> core tensors, and the shape errors
that tell the user which socket to connect (pure torch, no ComfyUI needed)."""
from __future__ import annotations

import pytest
import torch

from pack_import import pack_module

layouts = pack_module("nodes.comfy_layouts")


def test_image_frames_round_trip():
    image = torch.rand(5, 6, 8, 3)                         # [T, H, W, 3]
    frames = layouts.image_to_frames(image)
    assert frames.shape == (1, 3, 5, 6, 8)
    assert torch.equal(frames[0, :, 2], image[2].permute(2, 0, 1))
    assert torch.equal(layouts.frames_to_image(frames), image)


def test_frames_to_image_clamps_and_accepts_unbatched():
    frames = torch.tensor([-0.5, 0.25, 1.5]).reshape(3, 1, 1, 1)   # [3, T=1, 1, 1]
    assert layouts.frames_to_image(frames).flatten().tolist() == [0.0, 0.25, 1.0]


@pytest.mark.badinput
@pytest.mark.parametrize("bad", [torch.rand(5, 6, 8), torch.rand(5, 6, 8, 4)])
def test_image_to_frames_rejects_non_rgb(bad):
    with pytest.raises(ValueError, match=r"IMAGE must be \[frames, height, width, 3\]"):
        layouts.image_to_frames(bad)


def test_audio_round_trip():
    wav = torch.randn(2, 100)
    audio = layouts.waveform_to_audio(wav, 44100)
    assert audio["waveform"].shape == (1, 2, 100) and audio["sample_rate"] == 44100
    back, sr = layouts.audio_to_waveform(audio)
    assert torch.equal(back, wav) and sr == 44100


@pytest.mark.badinput
def test_audio_batch_rejected():
    with pytest.raises(ValueError, match="pass one clip"):
        layouts.audio_to_waveform({"waveform": torch.zeros(2, 2, 10), "sample_rate": 44100})
    with pytest.raises(ValueError, match="'waveform' and 'sample_rate'"):
        layouts.audio_to_waveform({"waveform": torch.zeros(1, 2, 10)})


def test_latent_helpers():
    v = torch.zeros(1, 48, 3, 4, 4)
    a = torch.zeros(2, 64, 7)
    assert layouts.latent_samples(layouts.video_latent(v), "video") is v
    lat = layouts.audio_latent(a)
    assert lat["type"] == "audio" and layouts.latent_samples(lat, "audio") is a


@pytest.mark.badinput
def test_latent_shape_errors():
    with pytest.raises(ValueError, match=r"video latent must be \[B, 48, T, h, w\]"):
        layouts.video_latent(torch.zeros(1, 16, 3, 4, 4))
    with pytest.raises(ValueError, match=r"audio latent must be \[B, 64, F\]"):
        layouts.latent_samples({"samples": torch.zeros(1, 48, 3, 4, 4)}, "audio")
    with pytest.raises(ValueError, match="kind must be"):
        layouts.latent_samples({"samples": torch.zeros(1, 64, 3)}, "image")
