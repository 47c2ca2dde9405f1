"""Turbo-VAED decoder: golden parity (turbo_vaed_case1), sliding-window layout, strict loading, converter."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from happyhorse_core.errors import CheckpointError
from happyhorse_core.decoders import (
    WAN22_LATENT_MEAN,
    WAN22_LATENT_STD,
    TurboVAED,
    TurboVAEDConfig,
    plan_windows,
)
from happyhorse_core.tools.convert_ckpt import convert_checkpoint, main as convert_main
from happyhorse_core.decoders.turbo_loading import infer_config, load_turbo_vaed

CASE = "turbo_vaed_case1"


@pytest.fixture(scope="module")
def golden(golden_dir):
    tensors = load_file(str(golden_dir / f"{CASE}.safetensors"))
    meta = json.loads((golden_dir / f"{CASE}.json").read_text())
    return tensors, meta


@pytest.fixture(scope="module")
def golden_state(golden):
    return {k: v for k, v in golden[0].items() if k.startswith("decoder.")}


@pytest.fixture(scope="module")
def tiny_fp32(golden_state):
    model = TurboVAED(TurboVAEDConfig.tiny()).eval()
    model.load_state_dict(golden_state, strict=True)
    return model


@pytest.fixture(scope="module")
def manifest(golden_dir):
    return json.loads((golden_dir / "turbo_vaed_manifest_unverified.json").read_text())


def _err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    return d.max().item(), d.mean().item()


def _random_tiny(seed: int = 0) -> TurboVAED:
    torch.manual_seed(seed)
    return TurboVAED(TurboVAEDConfig.tiny()).eval()


# -- golden parity -----------------------------------------------------------------------------


@pytest.mark.parity
def test_latent_constants_equal_golden(golden):
    tensors, _ = golden
    assert torch.equal(torch.tensor(WAN22_LATENT_MEAN, dtype=torch.float32), tensors["const.latent_mean"])
    assert torch.equal(torch.tensor(WAN22_LATENT_STD, dtype=torch.float32), tensors["const.latent_std"])


@pytest.mark.parity
def test_tiny_config_equals_golden_config(golden):
    assert TurboVAEDConfig.from_dict(golden[1]["config"]) == TurboVAEDConfig.tiny()


@pytest.mark.parity
def test_fp32_windows_and_output_match_golden(golden, tiny_fp32):
    tensors, _ = golden
    seen, calls = [], []
    hook = tiny_fp32.decoder.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    try:
        video = tiny_fp32.decode(tensors["input.latent"], progress=lambda d, t: calls.append((d, t)))
    finally:
        hook.remove()
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert len(seen) == 3
    for i, (win_in, win_out) in enumerate(seen):
        torch.testing.assert_close(win_in, tensors[f"fp32.chunk{i}.decoder_in"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(win_out, tensors[f"fp32.chunk{i}.decoder_out"], atol=1e-4, rtol=1e-4)
    ref = tensors["fp32.output.video"]
    assert video.dtype == torch.float32 and video.shape == ref.shape == (1, 3, 57, 64, 64)
    torch.testing.assert_close(video, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parity
def test_bf16_output_within_readme_tolerance(golden, golden_state):
    tensors, _ = golden
    model = TurboVAED(TurboVAEDConfig.tiny()).eval()
    model.load_state_dict(golden_state, strict=True)
    model.to(torch.bfloat16)
    seen = []
    hook = model.decoder.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    try:
        video = model.decode(tensors["input.latent"].to(torch.bfloat16))
    finally:
        hook.remove()
    for i, (win_in, win_out) in enumerate(seen):
        assert torch.equal(win_in, tensors[f"bf16.chunk{i}.decoder_in"])  # de-normalisation is exact
        torch.testing.assert_close(win_out.float(), tensors[f"bf16.chunk{i}.decoder_out"].float(), atol=1e-1, rtol=5e-2)
    ref = tensors["bf16.output.video"]
    assert video.dtype == torch.bfloat16 and video.shape == ref.shape
    torch.testing.assert_close(video.float(), ref.float(), atol=1e-1, rtol=5e-2)
    assert _err(video, ref)[1] < 1e-2


@pytest.mark.parity
def test_single_call_differs_from_windows_as_recorded(golden, tiny_fp32):
    """The golden stats record how far one decoder call over all 15 frames is from the windowed decode."""
    tensors, meta = golden
    latent = tensors["input.latent"]
    one_shot = tiny_fp32.decode_one_shot(latent)
    assert one_shot.shape == tensors["fp32.output.video"].shape
    max_err, mean_err = _err(one_shot, tensors["fp32.output.video"])
    stats = meta["stats"]
    assert max_err == pytest.approx(stats["fp32_sliding_vs_single_call_full_decode_max_abs_diff"], abs=1e-3)
    assert mean_err == pytest.approx(stats["fp32_sliding_vs_single_call_full_decode_mean_abs_diff"], abs=1e-4)


@pytest.mark.parity
def test_manifest_keys_and_shapes_match_module(manifest):
    config = TurboVAEDConfig.from_dict(manifest["reconstructed_config"])
    assert config == TurboVAEDConfig()  # the dataclass default is the (reconstructed) released config
    with torch.device("meta"):
        model = TurboVAED(config)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: v["shape"] for k, v in manifest["keys"].items()}
    assert ours == theirs
    assert len(ours) == manifest["num_tensors"] == 80
    assert sum(p.numel() for p in model.parameters()) == manifest["num_elements"]


@pytest.mark.parity
def test_plan_windows_matches_golden_layout(golden):
    window_meta = golden[1]["sliding_window"]
    pad, windows = plan_windows(15, 7, 7, 4)
    assert pad == window_meta["num_padding_latent_frames"] == 6
    assert [(w.start, w.stop, w.is_first_chunk, w.drop_front, w.drop_back) for w in windows] == [
        (0, 8, True, 0, 4),
        (6, 15, False, 4, 4),
        (13, 21, False, 4, 0),
    ]
    recorded = window_meta["chunks"]["fp32"]
    assert [w.stop - w.start for w in windows] == [c["decoder_in_frames"] for c in recorded]
    assert [w.is_first_chunk for w in windows] == [c["is_first_chunk"] for c in recorded]


# -- window scheme -----------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 6, 7, 8, 13, 14, 15, 22])
def test_output_frames_follow_4t_minus_3(frames):
    model = _random_tiny()
    latent = torch.randn(1, 48, frames, 1, 2)
    calls = []
    video = model.decode(latent, progress=lambda d, t: calls.append((d, t)))
    assert video.shape == (1, 3, 4 * (frames - 1) + 1, 16, 32) == (1, 3, model.output_frames(frames), 16, 32)
    total = len(plan_windows(frames)[1])
    assert calls == [(i + 1, total) for i in range(total)]
    assert torch.isfinite(video).all()


@pytest.mark.parametrize("frames", [1, 4, 7])
def test_window_decode_equals_one_shot_when_one_window(frames):
    """T <= 7: the sliding window is one first-chunk call over the latent padded to 7 frames."""
    model = _random_tiny(1)
    latent = torch.randn(1, 48, frames, 2, 1)
    padded = torch.cat([latent, latent[:, :, -1:].repeat(1, 1, 7 - frames, 1, 1)], dim=2)
    expected = model.decode_one_shot(padded)[:, :, : 4 * (frames - 1) + 1]
    assert torch.equal(model.decode(latent), expected)
    if frames == 7:
        assert torch.equal(model.decode(latent), model.decode_one_shot(latent))


def test_window_decode_differs_from_one_shot_beyond_one_window():
    model = _random_tiny(2)
    latent = torch.randn(1, 48, 9, 1, 1)
    assert model.decode(latent).shape == model.decode_one_shot(latent).shape
    assert not torch.allclose(model.decode(latent), model.decode_one_shot(latent), atol=1e-3)


def test_interrupt_is_checked_between_windows():
    class Stop(Exception):
        pass

    model = _random_tiny()
    checks, calls = [], []

    def interrupt():
        checks.append(1)
        if len(checks) == 2:
            raise Stop("user pressed cancel")

    with pytest.raises(Stop):
        model.decode(torch.randn(1, 48, 15, 1, 1), progress=lambda d, t: calls.append(d), interrupt=interrupt)
    assert calls == [1]


def test_output_device_receives_each_window():
    model = _random_tiny()
    latent = torch.randn(1, 48, 9, 1, 1)
    on_cpu = model.decode(latent, output_device="cpu")
    assert torch.equal(on_cpu, model.decode(latent))
    moved = model.decode(latent, output_device="meta")  # every window is moved before concatenation
    assert moved.device.type == "meta" and moved.shape == on_cpu.shape


# -- config ------------------------------------------------------------------------------------


def test_from_json_drops_training_keys(tmp_path, manifest, caplog):
    raw = dict(manifest["reconstructed_config"])
    raw.update(
        {
            "_class_name": "AutoencoderKLTurboVAED",
            "_diffusers_version": "0.33.1",
            "aligned_feature_projection_mode": "linear",
            "aligned_feature_projection_dim": [[512, 1024]],
            "aligned_blks_indices": [0, 1],
        }
    )
    path = tmp_path / "TurboV3-Wan22-TinyShallow_7_7.json"
    path.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger="HappyHorse.turbo_vaed"):
        assert TurboVAEDConfig.from_json(path) == TurboVAEDConfig()
    assert not caplog.records
    raw["some_future_key"] = 3
    path.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger="HappyHorse.turbo_vaed"):
        assert TurboVAEDConfig.from_json(path) == TurboVAEDConfig()
    assert "some_future_key" in caplog.text


@pytest.mark.badinput
@pytest.mark.parametrize(
    "override, needle",
    [
        ({"decoder_is_dw_conv": [True] * 5}, "depthwise"),
        ({"decoder_causal": True}, "decoder_causal"),
        ({"use_unpatchify": False}, "use_unpatchify"),
        ({"patch_size": 4}, "patch_size"),
        ({"decoder_layers_per_block": [2, 2, 2, 3]}, "layers_per_block"),
        ({"temporal_compression_ratio": 8}, "temporal_compression_ratio"),
        ({"latent_channels": 16}, "latent_channels"),
    ],
)
def test_bad_config_values_are_named(manifest, override, needle):
    raw = {**manifest["reconstructed_config"], **override}
    with pytest.raises(ValueError, match=needle):
        TurboVAEDConfig.from_dict(raw)


@pytest.mark.badinput
def test_bad_latent_shape_is_explained():
    with pytest.raises(ValueError, match=r"\[B, 48, T>=1, h, w\]"):
        _random_tiny().decode(torch.randn(1, 16, 3, 2, 2))


# -- strict loading ----------------------------------------------------------------------------


@pytest.mark.weights
def test_infer_config_from_manifest_shapes(manifest):
    shapes = {k: v["shape"] for k, v in manifest["keys"].items()}
    assert infer_config(shapes) == TurboVAEDConfig()


@pytest.mark.weights
@pytest.mark.parametrize("prefix", ["decoder.", "", "module.decoder.", "module."])
def test_load_safetensors_with_prefixes(tmp_path, golden_state, prefix):
    path = tmp_path / "turbo.safetensors"
    save_file({prefix + k[len("decoder.") :]: v for k, v in golden_state.items()}, str(path))
    model = load_turbo_vaed(path, dtype=torch.float32)
    assert model.config == TurboVAEDConfig.tiny()  # inferred from shapes
    loaded = model.state_dict()
    assert loaded.keys() == golden_state.keys()
    assert all(torch.equal(loaded[k], golden_state[k]) for k in golden_state)
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.weights
def test_load_default_dtype_is_bf16(tmp_path, golden_state):
    path = tmp_path / "turbo.safetensors"
    save_file(golden_state, str(path))
    model = load_turbo_vaed(path, config=TurboVAEDConfig.tiny())
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.weights
@pytest.mark.badinput
def test_load_rejects_other_structure(tmp_path, golden_state):
    path = tmp_path / "turbo.safetensors"
    save_file(golden_state, str(path))
    with pytest.raises(CheckpointError, match=r"tensor\(s\) have the wrong shape, first: \['decoder\.") as info:
        load_turbo_vaed(path, config=TurboVAEDConfig())
    assert "missing key(s)" in str(info.value)  # the real structure has more resnets than the tiny one


@pytest.mark.weights
@pytest.mark.badinput
def test_load_lists_missing_and_unexpected(tmp_path, golden_state):
    state = dict(golden_state)
    del state["decoder.conv_out.conv.bias"]
    state["decoder.extra.weight"] = torch.zeros(2)
    path = tmp_path / "turbo.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_turbo_vaed(path, config=TurboVAEDConfig.tiny())
    msg = str(info.value)
    assert "1 missing key(s), first: ['decoder.conv_out.conv.bias']" in msg
    assert "1 unexpected key(s), first: ['decoder.extra.weight']" in msg


@pytest.mark.weights
@pytest.mark.badinput
def test_load_refuses_pickles_and_names_the_converter(tmp_path):
    ckpt = tmp_path / "checkpoint-340000.ckpt"
    ckpt.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="python -m happyhorse_core.tools.convert_ckpt .*checkpoint-340000.ckpt"):
        load_turbo_vaed(ckpt)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_turbo_vaed(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        load_turbo_vaed(junk)


# -- converter ---------------------------------------------------------------------------------


@pytest.mark.weights
@pytest.mark.parametrize("layout", ["ema_module", "state_dict_bare", "flat_decoder"])
def test_converter_round_trip(tmp_path, golden_state, layout):
    bare = {k[len("decoder.") :]: v for k, v in golden_state.items()}
    if layout == "ema_module":
        ckpt = {
            "ema_state_dict": {"module." + k: v for k, v in golden_state.items()},
            "state_dict": {"encoder.x": torch.zeros(1)},
            "global_step": 340000,
        }
        expect = {"kept": len(golden_state), "dropped": 0}
    elif layout == "state_dict_bare":
        ckpt = {"state_dict": bare, "epoch": 3}
        expect = {"kept": len(golden_state), "dropped": 0}
    else:
        ckpt = {**golden_state, "encoder.conv.weight": torch.ones(3)}
        expect = {"kept": len(golden_state), "dropped": 1}
    src, dst = tmp_path / "in.ckpt", tmp_path / "out" / "turbo.safetensors"
    torch.save(ckpt, src)
    assert convert_checkpoint(src, dst) == expect
    assert [p.name for p in dst.parent.iterdir()] == ["turbo.safetensors"]  # no temp file left
    model = load_turbo_vaed(dst, dtype=torch.float32)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in golden_state.items())


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.weights
@pytest.mark.badinput
def test_converter_refuses_code_in_pickle(tmp_path, golden_state, capsys):
    marker = tmp_path / "pwned"
    src, dst = tmp_path / "evil.ckpt", tmp_path / "evil.safetensors"
    torch.save({"ema_state_dict": dict(golden_state), "payload": _Evil(str(marker))}, src)
    with pytest.raises(ValueError, match="refused to read .*evil.ckpt"):
        convert_checkpoint(src, dst)
    assert convert_main([str(src), str(dst)]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists() and not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.ckpt"]
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a torch checkpoint that can be read safely"):
        convert_checkpoint(junk, dst)


@pytest.mark.weights
def test_converter_cli(tmp_path, golden_state, repo_root):
    src, dst = tmp_path / "in.pt", tmp_path / "out.safetensors"
    torch.save({"ema_state_dict": golden_state}, src)
    proc = subprocess.run(
        [sys.executable, "-m", "happyhorse_core.tools.convert_ckpt", str(src), str(dst)],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{len(golden_state)} decoder tensors" in proc.stdout
    assert load_file(str(dst)).keys() == golden_state.keys()
