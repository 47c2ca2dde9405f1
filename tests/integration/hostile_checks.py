"""Hostile-input behaviour of the pack's nodes INSIDE ComfyUI's python (no server): run as
    COMFYUI_HOME/venv/bin/python tests/integration/hostile_checks.py COMFYUI_HOME WORKDIR
Prints one JSON object {check name: "ok" | traceback}; test_hostile_in_comfy.py asserts on it.

What is checked here needs ComfyUI's own modules (the node classes, the interrupt flag) but no
server: the negative prompt is encoded only when a consumer asks, Cancel stops Text Encode
before its next layer, truncation warnings come every run, Decode Audio cuts each clip of a batch
to its video length and refuses NaN audio, Empty Latent bounds batch_size x seconds.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

from in_comfy import check, report, start_comfy

HOME, WORK = Path(sys.argv[1]), Path(sys.argv[2])  # WORKDIR: a fresh folder from the test
start_comfy(HOME)
import torch  # noqa: E402
import comfy.model_management as mm  # noqa: E402

from pack_import import pack_module  # noqa: E402

load_text_stack = pack_module("happyhorse_core.text").load_text_stack
write_tiny_text_folder = pack_module("happyhorse_core.testing.tiny_text").write_tiny_text_folder
hh = SimpleNamespace(**{name: pack_module(f"nodes.{name}")
                        for name in ("decode_nodes", "encode_nodes", "sampler_nodes", "types")})
write_tiny_text_folder(WORK / "t5", hidden_size=64, num_layers=4)
ENCODER, TOKENIZER = load_text_stack(WORK / "t5", dtype=torch.float32)
STACK = hh.types.LoadedTextEncoder(encoder=ENCODER, tokenizer=TOKENIZER, path=str(WORK / "t5"), patcher=None)


def node(cls, node_id="7"):
    return cls.PREPARE_CLASS_CLONE({"unique_id": node_id})


def text_encode(prompt="A woman speaks on a harbour at dawn.", negative="blurry, low quality", stack=None):
    out = node(hh.encode_nodes.TextEncode).execute(stack or STACK, prompt, "A woman", "English", "Hello.", "", "",
                                                   negative)
    return out.args[0]


class LayerCounter:
    def __init__(self):
        self.ran = []
        self.hooks = [layer.register_forward_hook(lambda m, i, o, n=n: self.ran.append(n))
                      for n, layer in enumerate(ENCODER.layers)]

    def remove(self):
        for h in self.hooks:
            h.remove()


@check
def negative_prompt_is_encoded_only_when_a_consumer_needs_it():
    counter = LayerCounter()
    try:
        cond = text_encode()
        layers = len(ENCODER.layers)
        assert cond.negative is None and len(counter.ran) == layers, "only the prompt may be encoded"
        assert hh.sampler_nodes._negative(cond, False, "9") is None  # distilled: never encoded
        assert len(counter.ran) == layers
        neg = hh.sampler_nodes._negative(cond, True, "9")  # base mode: encoded now, once
        assert neg.shape[1] == 64 and len(counter.ran) == 2 * layers
        assert hh.sampler_nodes._negative(cond, True, "9") is neg and cond.negative_source is None
    finally:
        counter.remove()


@check
def negative_is_encoded_before_a_released_encoder_leaves_ram():
    """release_after_encoding: reading 18 GB again later would cost more than encoding the negative now."""
    ram_plan = pack_module("nodes.ram_plan")
    encoder, tokenizer = load_text_stack(WORK / "t5", dtype=torch.float32)
    stack = hh.types.LoadedTextEncoder(encoder=encoder, tokenizer=tokenizer, path=str(WORK / "t5"), patcher=None,
                                       release_after_encoding=True)
    ram_plan.track(stack, lambda: load_text_stack(WORK / "t5", dtype=torch.float32)[0])
    cond = text_encode(stack=stack)
    assert stack.released and cond.negative is not None and cond.negative_source is None
    assert cond.negative.shape[1] == 64 and torch.isfinite(cond.negative).all()


@check
def cancel_stops_text_encode_before_its_next_layer():
    counter = LayerCounter()
    mm.interrupt_current_processing(True)
    try:
        text_encode()
    except mm.InterruptProcessingException:
        pass
    else:
        raise AssertionError("Text Encode ignored Cancel")
    finally:
        counter.remove()
        mm.interrupt_current_processing(False)
    assert counter.ran == [], f"layers ran after Cancel: {counter.ran}"


@check
def truncation_is_warned_on_every_run():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("HappyHorse")
    log.addHandler(handler)
    try:
        for _ in range(2):
            cond = text_encode(prompt="a quiet harbour at dawn, " * 2000)
            assert cond.truncated and cond.positive.shape == (640, 64)
    finally:
        log.removeHandler(handler)
    said = [r.getMessage() for r in records if "only the first 640 are used" in r.getMessage()]
    assert len(said) == 2, said


class StubAudioVAE:
    """decode([B, 64, F]) -> [B, 2048 F, 2] like ComfyUI's Stable Audio VAE (values: `fill`, default noise)."""

    def __init__(self, fill=None):
        self.fill = fill

    def decode(self, samples):
        b, _, f = samples.shape
        if self.fill is not None:
            return torch.full((b, 2048 * f, 2), self.fill)
        return torch.randn(b, 2048 * f, 2, generator=torch.Generator().manual_seed(0)) * 0.1


@check
def decode_audio_cuts_each_clip_of_a_batch_to_its_video():
    for seconds in (1, 2, 5):
        frames = 25 * seconds + 1
        latent = {"samples": torch.zeros(4, 64, frames), "type": "audio"}
        audio = hh.decode_nodes.DecodeAudio.execute(latent, StubAudioVAE()).args[0]
        video_frames = 4 * ((frames - 1) // 4) + 1
        assert audio["waveform"].shape == (4, 2, video_frames * 44100 // 25), (seconds, audio["waveform"].shape)
        assert audio["sample_rate"] == 44100


@check
def decode_audio_refuses_nan_instead_of_a_broken_track():
    latent = {"samples": torch.zeros(1, 64, 26), "type": "audio"}
    try:
        hh.decode_nodes.DecodeAudio.execute(latent, StubAudioVAE(fill=float("nan")))
    except ValueError as e:
        assert "decoded NaN/Inf audio" in str(e) and "Stable Audio Open VAE" in str(e), str(e)
    else:
        raise AssertionError("NaN audio passed as a result")


@check
def empty_latent_bounds_batch_times_seconds():
    ok = node(hh.encode_nodes.EmptyLatent).execute("16:9", "256p", 448, 256, 15, 4).args  # 60 s: allowed
    assert ok[0]["samples"].shape[0] == 4
    try:
        node(hh.encode_nodes.EmptyLatent).execute("16:9", "256p", 448, 256, 15, 16)
    except ValueError as e:
        assert "batch_size 16 x 15 s" in str(e) and "queue several runs" in str(e), str(e)
    else:
        raise AssertionError("240 s in one batch was accepted")


if __name__ == "__main__":
    report()
