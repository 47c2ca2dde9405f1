"""The bad-input table: one row per thing a stranger's workflow can get wrong, and what the user is told.

Every row names the exact exception type (or the warning / flag when we fix the input up ourselves)
and key phrases of the message: what is wrong AND what to do. The table is complete on its own;
some rows repeat checks that other files test in more depth (test_loading_badinput.py,
test_turbo_vaed.py, test_geometry.py, test_audio.py, test_prompts.py).

Not detectable, and why: base / distill / sr_540p / sr_1080p files have identical tensor shapes and
no reliable marker, so a base file *loaded as* SR cannot be refused at load time (load_dit accepts
it and runs the SR settings). What we refuse is the other direction that breaks the math: the SR
stage (super_resolve) refuses any DiT loaded as base/distill (v2 coordinates), see row
``file-base-model-as-sr``.
"""
from __future__ import annotations

import functools
import json
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import torch
from safetensors.torch import load_file, save_file

from happyhorse_core.sampling import latents
from happyhorse_core import validation
from happyhorse_core.media.audio import prepare_voice_track
from happyhorse_core.dit.config import PRESETS
from happyhorse_core.decoders.turbo_loading import load_turbo_vaed
from happyhorse_core.geometry import ClipGeometry, SizeRoundedWarning, check_batch, validate_steps
from happyhorse_core.errors import CheckpointError
from happyhorse_core.weights.loading import load_dit
from happyhorse_core.sampling.pipeline import SamplingOptions, TextConditioning, generate
from happyhorse_core.sampling.super_resolution import SROptions, sr_latent_size, super_resolve
from happyhorse_core.text import build_prompt, encode_prompt, load_text_stack
from happyhorse_core.text.bounds import MAX_DIALOGUE_LINES
from happyhorse_core.text.prompts import DialogueLine
from happyhorse_core.testing.tiny_text import write_tiny_text_folder
from happyhorse_core.testing.tiny_dit import tiny_dit, write_tiny_dit
from happyhorse_core.testing.tiny_models import write_tiny_turbo_vaed
from weight_files import save_sharded, tiny_state, to_fp8


# -- shared, lazily built material (one per module) ------------------------------------------------------------

class Shared:
    """Small models and files several rows need; each is built on first use only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @functools.cached_property
    def state(self) -> dict[str, torch.Tensor]:
        return tiny_state(PRESETS["tiny"])

    @functools.cached_property
    def good_dit(self) -> Path:
        path = self.root / "dit.safetensors"
        save_file(self.state, path)
        return path

    @functools.cached_property
    def text_folder(self) -> Path:
        folder = self.root / "t5tiny"
        folder.mkdir()
        write_tiny_text_folder(folder, hidden_size=64)
        return folder

    @functools.cached_property
    def text_stack(self):
        return load_text_stack(self.text_folder, dtype=torch.float32)

    @functools.cached_property
    def distill(self):
        return tiny_dit("distill", seed=0, compute_dtype=torch.float32)

    @functools.cached_property
    def sr(self):
        return tiny_dit("sr_540p", seed=1, compute_dtype=torch.float32)


@dataclass(frozen=True)
class Bad:
    id: str
    run: Callable[[Shared, Path], Any]  # (shared material, a fresh tmp folder) -> result
    error: Optional[type[BaseException]] = None  # the exact type raised; None = no error
    says: tuple[str, ...] = ()  # regexes the message (or warning) must contain: what is wrong, what to do
    warns: Optional[type[Warning]] = None  # the warning that must be emitted (message matched against `says`)
    check: Optional[Callable[[Any], None]] = None  # assertions on the result when the input is fixed up


def _text(rows: int = 4, width: int = 3584, seed: int = 0) -> TextConditioning:
    g = torch.Generator().manual_seed(seed)
    return TextConditioning(torch.randn(rows, width, generator=g), torch.randn(3, width, generator=g))


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# -- file writers ------------------------------------------------------------------------------------------------

def _damaged(sh: Shared, tmp: Path, how: str) -> Path:
    data = bytearray(sh.good_dit.read_bytes())
    if how == "truncate":
        data = data[: len(data) - 1000]
    elif how == "json":
        data[8:20] = b"#" * 12
    elif how == "length":
        data[:8] = struct.pack("<Q", 1 << 40)
    out = tmp / f"{how}.safetensors"
    out.write_bytes(bytes(data))
    return out


def _pickle_ckpt(tmp: Path, name: str = "happyhorse_distill.ckpt") -> Path:
    path = tmp / name
    torch.save({"state_dict": {"adapter.video_embedder.weight": torch.zeros(2, 2)}}, path)
    return path


def _foreign(tmp: Path, keys: list[str]) -> Path:
    path = tmp / "other_model.safetensors"
    save_file({k: torch.zeros(2, 2) for k in keys}, path)
    return path


WAN22_KEYS = ["model.diffusion_model.patch_embedding.weight", "model.diffusion_model.blocks.0.self_attn.q.weight",
              "model.diffusion_model.blocks.0.cross_attn.k.weight", "model.diffusion_model.head.head.weight"]
LTX_KEYS = ["model.diffusion_model.patchify_proj.weight", "model.diffusion_model.adaln_single.linear.weight",
            "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight", "vae.decoder.conv_in.conv.weight"]
SD15_KEYS = ["model.diffusion_model.input_blocks.0.0.weight",
             "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
             "first_stage_model.decoder.conv_in.weight",
             "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"]


def _missing_shard(sh: Shared, tmp: Path) -> Path:
    folder = save_sharded(sh.state, tmp / "sharded", shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    return folder


def _fp8_missing_one_scale(sh: Shared, tmp: Path) -> Path:
    file_sd, _ = to_fp8(sh.state, "sdd")
    del file_sd["block.layers.2.mlp.up_gate_proj.weight.__fp8_scale"]
    save_file(file_sd, tmp / "dit_fp8.safetensors")
    return tmp / "dit_fp8.safetensors"


def _fp8_marked_without_scales(sh: Shared, tmp: Path) -> Path:
    file_sd, _ = to_fp8(sh.state, "comfy")
    file_sd = {k: v for k, v in file_sd.items() if not k.endswith(".scale_weight")}
    save_file(file_sd, tmp / "dit_scaled_fp8.safetensors")
    return tmp / "dit_scaled_fp8.safetensors"


def _copy_text_folder(sh: Shared, tmp: Path, keep: tuple[str, ...]) -> Path:
    folder = tmp / "t5"
    folder.mkdir()
    for name in keep:
        (folder / name).write_bytes((sh.text_folder / name).read_bytes())
    return folder


def _text_folder_with_bin(sh: Shared, tmp: Path) -> Path:
    folder = _copy_text_folder(sh, tmp, ("config.json", "tokenizer.json", "tokenizer_config.json"))
    torch.save({"model.encoder.norm.weight": torch.zeros(64)}, folder / "pytorch_model.bin")
    return folder


def _text_folder_truncated(sh: Shared, tmp: Path) -> Path:
    folder = _copy_text_folder(sh, tmp, ("config.json", "tokenizer.json", "tokenizer_config.json"))
    data = (sh.text_folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return folder


def _lfs_pointer(tmp: Path) -> Path:
    path = tmp / "dit.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 30640000000\n")
    return path


def _edited_header(sh: Shared, tmp: Path, how: str) -> Path:
    """The good tiny DiT with one header entry made hostile; tensor data untouched."""
    data = sh.good_dit.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    by_start = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")
    first, last = header[by_start[0][1]], header[by_start[-1][1]]
    if how == "overlap":  # a later tensor of the same size pointed at the first one's bytes
        size = first["data_offsets"][1] - first["data_offsets"][0]
        twin = next(k for _, k in by_start[1:] if header[k]["data_offsets"][1] - header[k]["data_offsets"][0] == size
                    and header[k]["dtype"] == first["dtype"] and header[k]["shape"] == first["shape"])
        header[twin]["data_offsets"] = list(first["data_offsets"])
    elif how == "float-offsets":
        first["data_offsets"] = [float(o) for o in first["data_offsets"]]
    elif how == "negative-shape":
        first["shape"] = [-1] + first["shape"][1:]
    elif how == "out-of-range":  # the last tensor claims far more bytes than the file holds
        start = last["data_offsets"][0]
        last["shape"], last["dtype"] = [1 << 30], "U8"
        last["data_offsets"] = [start, start + (1 << 30)]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    out = tmp / f"{how}.safetensors"
    out.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return out


def _dit_as(sh: Shared, tmp: Path, dtype: torch.dtype) -> Path:
    path = tmp / f"hh_distill_{str(dtype).split('.')[-1]}.safetensors"
    save_file({k: (v * 100).to(dtype) for k, v in sh.state.items()}, path)
    return path


def _dit_with_nan(sh: Shared, tmp: Path) -> Path:
    path = tmp / "hh_distill_nan.safetensors"
    state = dict(sh.state)
    key = "block.layers.1.mlp.down_proj.weight"
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, path)
    return path


def _turbo_vaed_as(tmp: Path, how: str) -> Path:
    state = load_file(write_tiny_turbo_vaed(tmp / "turbo_good.safetensors"))
    if how == "nan":
        state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    else:
        state = {k: v > 0 for k, v in state.items()}
    path = tmp / f"turbo_{how}.safetensors"
    save_file(state, path)
    return path


def _zero_bytes(tmp: Path, name: str) -> Path:
    (tmp / name).write_bytes(b"")
    return tmp / name


# -- media helpers ----------------------------------------------------------------------------------------------

def _tone(channels: int, rate: int, seconds: float, level: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(rate * seconds)) / rate
    return (level * torch.sin(2 * torch.pi * 220 * t)).expand(channels, -1).clone()  # [C, N]


CLIP_SAMPLES = 51_200  # one second at the model's nominal rate


def _expect_voice(*, trimmed: bool, padded: bool, silent: bool) -> Callable[[Any], None]:
    def check(prep) -> None:
        assert prep.waveform.shape == (2, CLIP_SAMPLES) and prep.sample_rate == 51_200
        assert (prep.trimmed, prep.padded, prep.silent) == (trimmed, padded, silent)
        assert torch.isfinite(prep.waveform).all()
    return check


def _check_gray(rgb: torch.Tensor) -> None:
    assert rgb.shape == (1, 4, 5, 3)
    assert torch.equal(rgb[..., 0], rgb[..., 1]) and torch.equal(rgb[..., 1], rgb[..., 2])


def _check_rgba(rgb: torch.Tensor) -> None:
    assert rgb.shape == (1, 4, 5, 3) and torch.equal(rgb, torch.linspace(0, 1, 80).reshape(1, 4, 5, 4)[..., :3])


_BATCH = torch.rand(3, 4, 5, 3, generator=torch.Generator().manual_seed(3))


def _check_first_image(rgb: torch.Tensor) -> None:
    assert rgb.shape == (1, 4, 5, 3) and torch.equal(rgb, _BATCH[:1])


def _nan_video() -> torch.Tensor:
    v = torch.zeros(1, 48, 2, 2, 2)
    v[0, 5, 1, 0, 1] = float("nan")
    return v


def _check_floored(geo: ClipGeometry) -> None:
    assert (geo.width, geo.height, geo.seconds) == (448, 256, 2)
    assert geo.video_latent_shape == (1, 48, 13, 16, 28) and geo.audio_frames == 51


def _check_truncated_prompt(feats) -> None:
    assert feats.truncated and feats.length == 640 and feats.features.shape == (640, 64)


def _long_prompt(sh: Shared, _tmp: Path):
    encoder, tokenizer = sh.text_stack
    prompt = build_prompt(" ".join(f"word{i}" for i in range(400)))
    assert len(tokenizer.encode(prompt)) > 640
    return encode_prompt(encoder, tokenizer, prompt)


# -- hostile and huge inputs (issue 13) ---------------------------------------------------------------------------

def _huge_prompt(sh: Shared, _tmp: Path):
    encoder, tokenizer = sh.text_stack
    return encode_prompt(encoder, tokenizer, "a quiet harbour at dawn, " * 2000)  # 50 000 characters


def _check_huge_prompt(feats) -> None:
    assert feats.truncated and feats.features.shape == (640, 64) and feats.tokens.total > 5000


def _many_dialogue_lines(sh: Shared, _tmp: Path):
    said: list[str] = []
    more = "\n".join(f"Man {i} | English | line {i}" for i in range(5000))
    return validation.parse_dialogue("A woman", "English", "Hello.", more, warn=said.append), said


def _check_capped_dialogue(result) -> None:
    lines, said = result
    assert len(lines) == MAX_DIALOGUE_LINES
    assert said == [f"the dialogue has 5001 lines; only the first {MAX_DIALOGUE_LINES} are used (the model reads "
                    "at most 640 tokens of prompt). Split the scene into several clips."]


def _broken_tokenizer_json(sh: Shared, tmp: Path) -> Path:
    folder = _copy_text_folder(sh, tmp, ("config.json", "model.safetensors", "tokenizer_config.json"))
    (folder / "tokenizer.json").write_text("{1: 2}")
    return folder


def _tokenizer_config_list(sh: Shared, tmp: Path) -> Path:
    folder = _copy_text_folder(sh, tmp, ("config.json", "model.safetensors", "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text("[1, 2]")
    return folder


def _dangling(tmp: Path, name: str) -> Path:
    link = tmp / name
    link.symlink_to(tmp / "moved_away" / name)
    return link


def _looping(tmp: Path, name: str) -> Path:
    link = tmp / name
    link.symlink_to(link)
    return link


def _tokenizer_link_broken(sh: Shared, tmp: Path) -> Path:
    folder = _copy_text_folder(sh, tmp, ("config.json", "model.safetensors", "tokenizer_config.json"))
    _dangling(folder, "tokenizer.json")
    return folder


def _model_path_in_roots(tmp: Path, make) -> str:
    from pack_import import pack_module
    resolve_in_roots = pack_module("nodes.comfy_bridge").resolve_in_roots
    make(tmp, "hh.safetensors")
    return resolve_in_roots("hh.safetensors", [str(tmp)], "diffusion_models")


class _NaNWeights:
    """A tiny distill DiT with one NaN weight, as if loaded from `nan_dit.safetensors`."""

    @staticmethod
    def run(sh: Shared, _tmp: Path):
        from types import SimpleNamespace
        model = tiny_dit("distill", seed=0, compute_dtype=torch.float32)
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if n.startswith("block.layers.0")).fill_(float("nan"))
        model.load_report = SimpleNamespace(source="/models/diffusion_models/nan_dit.safetensors")
        return generate(model, _text(), latent_frames=2, latent_h=2, latent_w=2, audio_frames=5,
                        opts=SamplingOptions(steps=3))


def _turbo_vaed_nan(sh: Shared, tmp: Path):
    decoder = load_turbo_vaed(write_tiny_turbo_vaed(tmp / "turbo_nan.safetensors"), dtype=torch.float32)
    with torch.no_grad():
        decoder.decoder.conv_in.conv.weight.fill_(float("nan"))
    return decoder.decode(torch.zeros(1, 48, 2, 2, 2))


def _turbo_vaed_nan_latent(sh: Shared, tmp: Path):
    decoder = load_turbo_vaed(write_tiny_turbo_vaed(tmp / "turbo.safetensors"), dtype=torch.float32)
    return decoder.decode(_nan_video())


# -- the table ---------------------------------------------------------------------------------------------------

CASES = [
    # files: the DiT loader
    Bad("file-truncated-safetensors", lambda sh, t: load_dit(_damaged(sh, t, "truncate"), variant="distill"),
        CheckpointError, (r"truncate\.safetensors is truncated", r"only \d+ are present", "download it again")),
    Bad("file-corrupted-header-json", lambda sh, t: load_dit(_damaged(sh, t, "json"), variant="distill"),
        CheckpointError, (r"json\.safetensors has a corrupted safetensors header", "download the file again")),
    Bad("file-corrupted-header-length", lambda sh, t: load_dit(_damaged(sh, t, "length"), variant="distill"),
        CheckpointError, ("corrupted safetensors header", r"declared header length \d+ bytes", "download it again")),
    Bad("file-zero-bytes", lambda sh, t: load_dit(_zero_bytes(t, "dit.safetensors"), variant="distill"),
        CheckpointError, (r"dit\.safetensors is empty \(0 bytes\)", "interrupted", "download it again")),
    Bad("file-pickle-ckpt-to-dit-loader", lambda sh, t: load_dit(_pickle_ckpt(t)),
        CheckpointError, (r"happyhorse_distill\.ckpt is a pickle checkpoint", "never unpickles", "can run code",
                          r"Download the \.safetensors release")),
    Bad("file-pickle-renamed-safetensors",
        lambda sh, t: load_dit(_pickle_ckpt(t, "dit.safetensors"), variant="distill"),
        CheckpointError, ("pickle/zip checkpoint with a .safetensors name", r"Download the real \.safetensors file")),
    Bad("file-git-lfs-pointer",
        lambda sh, t: load_dit(_lfs_pointer(t), variant="distill"),
        CheckpointError, ("git-lfs pointer", "not downloaded", "git lfs pull")),
    Bad("file-index-names-missing-shard", lambda sh, t: load_dit(_missing_shard(sh, t), variant="distill"),
        FileNotFoundError, (r"shard model-00002-of-00003\.safetensors", "is missing", "download the missing shard")),
    Bad("file-wan22-as-happyhorse", lambda sh, t: load_dit(_foreign(t, WAN22_KEYS), variant="distill"),
        CheckpointError, ("not a HappyHorse/MagiHuman DiT", r"looks like a Wan 2\.x video DiT",
                          "Select the HappyHorse DiT checkpoint")),
    Bad("file-ltx-as-happyhorse", lambda sh, t: load_dit(_foreign(t, LTX_KEYS), variant="distill"),
        CheckpointError, ("not a HappyHorse/MagiHuman DiT", "LTX-Video", "Select the HappyHorse DiT checkpoint")),
    Bad("file-sd-checkpoint-as-happyhorse", lambda sh, t: load_dit(_foreign(t, SD15_KEYS), variant="distill"),
        CheckpointError, ("not a HappyHorse/MagiHuman DiT", "a Stable Diffusion UNet",
                          "Select the HappyHorse DiT checkpoint")),
    Bad("file-turbo-vaed-as-happyhorse",
        lambda sh, t: load_dit(write_tiny_turbo_vaed(t / "turbo.safetensors"), variant="distill"),
        CheckpointError, ("not a HappyHorse/MagiHuman DiT", "a VAE", "Select the HappyHorse DiT checkpoint")),
    Bad("file-no-variant-clue", lambda sh, t: load_dit(sh.good_dit),
        ValueError, (r"cannot tell which DiT variant dit\.safetensors is", "choose it explicitly",
                     "base, distill, sr_540p, sr_1080p")),
    Bad("file-base-model-as-sr",  # see the module docstring: the files cannot be told apart; the SR stage refuses
        lambda sh, t: super_resolve(load_dit(write_tiny_dit(t / "hh_distill.safetensors", "distill")),
                                    torch.zeros(1, 48, 1, 2, 2), torch.zeros(1, 1, 64), _text(),
                                    latent_h=4, latent_w=4, generator=_gen()),
        ValueError, ("loaded as a base/distill model", "variant sr_540p or sr_1080p")),
    Bad("file-fp8-missing-one-scale", lambda sh, t: load_dit(_fp8_missing_one_scale(sh, t), variant="distill"),
        CheckpointError, (r"fp8 tensor 'block\.layers\.2\.mlp\.up_gate_proj\.weight' has no scale",
                          "Convert the original bf16/fp32 checkpoint again")),
    Bad("file-scaled-fp8-marker-without-scales",
        lambda sh, t: load_dit(_fp8_marked_without_scales(sh, t), variant="distill"),
        CheckpointError, ("marked 'scaled_fp8'", r"none of its \d+ fp8 weights has a '<layer>\.scale_weight'",
                          "download or convert it again")),
    # files: text encoder
    Bad("file-text-encoder-without-tokenizer",
        lambda sh, t: load_text_stack(_copy_text_folder(sh, t, ("config.json", "model.safetensors"))),
        FileNotFoundError, ("no tokenizer in", "tokenizer.json or tokenizer.model",
                            "Copy them from the hub repo google/t5gemma-9b-9b-ul2")),
    Bad("file-text-encoder-pickle-only", lambda sh, t: load_text_stack(_text_folder_with_bin(sh, t)),
        FileNotFoundError, ("no .safetensors weights in", r"pytorch_model\.bin: pickle checkpoints", "never loads",
                            r"Download the \.safetensors files of the hub repo google/t5gemma-9b-9b-ul2")),
    Bad("file-text-encoder-truncated", lambda sh, t: load_text_stack(_text_folder_truncated(sh, t)),
        CheckpointError, (r"model\.safetensors is truncated", "download it again")),
    Bad("file-text-encoder-given-a-pickle", lambda sh, t: load_text_stack(_pickle_ckpt(t, "t5gemma.pt")),
        CheckpointError, (r"t5gemma\.pt is a pickle checkpoint", "can run code", r"Download the \.safetensors release")),
    # files: Turbo-VAED
    Bad("file-turbo-vaed-pickle", lambda sh, t: load_turbo_vaed(_pickle_ckpt(t, "checkpoint-340000.ckpt")),
        CheckpointError, ("is a pickle checkpoint", r"python -m happyhorse_core\.tools\.convert_ckpt")),
    Bad("file-turbo-vaed-zero-bytes", lambda sh, t: load_turbo_vaed(_zero_bytes(t, "turbo.safetensors")),
        CheckpointError, (r"not a readable \.safetensors file", r"empty \(0 bytes\)", "download it again")),
    Bad("file-dit-as-turbo-vaed", lambda sh, t: load_turbo_vaed(sh.good_dit),
        CheckpointError, ("does not match the Turbo-VAED decoder", r"missing key\(s\)",
                          "Use the Turbo-VAED decoder weights")),
    Bad("file-turbo-vaed-bool", lambda sh, t: load_turbo_vaed(_turbo_vaed_as(t, "bool")),
        CheckpointError, (r"turbo_bool\.safetensors: \d+ tensor\(s\) are stored as BOOL, not floating point",
                          "Turbo-VAED weights must be bf16, fp16, fp32 or fp8", "download or convert the weights again")),
    Bad("file-turbo-vaed-nan", lambda sh, t: load_turbo_vaed(_turbo_vaed_as(t, "nan")),
        CheckpointError, (r"turbo_nan\.safetensors: tensor '.*' holds NaN or Inf values", "sampled check",
                          "download or convert it again")),
    # files: header hostility and weight values (any loader: the DiT's rows stand for all three)
    Bad("file-header-overlapping-offsets", lambda sh, t: load_dit(_edited_header(sh, t, "overlap"), variant="distill"),
        CheckpointError, (r"overlap\.safetensors has a corrupted safetensors header", "overlaps the data of",
                          "download the file again")),
    Bad("file-header-float-offsets", lambda sh, t: load_dit(_edited_header(sh, t, "float-offsets"), variant="distill"),
        CheckpointError, (r"float-offsets\.safetensors has a corrupted safetensors header",
                          "not two non-negative integers", "download the file again")),
    Bad("file-header-negative-shape",
        lambda sh, t: load_dit(_edited_header(sh, t, "negative-shape"), variant="distill"),
        CheckpointError, (r"negative-shape\.safetensors has a corrupted safetensors header",
                          "not a list of non-negative integers", "download the file again")),
    Bad("file-header-offsets-out-of-range",
        lambda sh, t: load_dit(_edited_header(sh, t, "out-of-range"), variant="distill"),
        CheckpointError, (r"out-of-range\.safetensors is truncated", r"declares \d+ bytes of tensor data",
                          "download it again")),
    Bad("file-dit-int32", lambda sh, t: load_dit(_dit_as(sh, t, torch.int32)),
        CheckpointError, (r"hh_distill_int32\.safetensors: \d+ tensor\(s\) are stored as I32, not floating point",
                          "DiT weights must be bf16, fp16, fp32 or fp8")),
    Bad("file-dit-bool", lambda sh, t: load_dit(_dit_as(sh, t, torch.bool)),
        CheckpointError, (r"hh_distill_bool\.safetensors: \d+ tensor\(s\) are stored as BOOL", "not floating point")),
    Bad("file-dit-nan", lambda sh, t: load_dit(_dit_with_nan(sh, t)),
        CheckpointError, (r"hh_distill_nan\.safetensors: tensor 'block\.layers\.1\.mlp\.down_proj\.weight' holds NaN",
                          "damaged or was converted wrongly")),
    # sizes
    Bad("size-not-multiple-of-32", lambda sh, t: ClipGeometry.from_request(450, 270, 2), None,
        (r"size 450x270 is not a multiple of 32", "using 448x256"), warns=SizeRoundedWarning,
        check=_check_floored),
    Bad("size-zero", lambda sh, t: ClipGeometry.from_request(0, 256, 2),
        ValueError, ("width and height must be positive", "got 0x256")),
    Bad("size-negative", lambda sh, t: ClipGeometry.from_request(448, -256, 2),
        ValueError, ("width and height must be positive", "got 448x-256")),
    Bad("size-below-one-patch", lambda sh, t: ClipGeometry.from_request(16, 256, 2),
        ValueError, ("width 16 px is too small", "minimum is 32 px")),
    Bad("size-over-1080p-pixels", lambda sh, t: ClipGeometry.from_request(1920, 1920, 2),
        ValueError, ("exceeds the 1080p-class limit", "choose a smaller size or a preset")),
    Bad("size-side-over-1920", lambda sh, t: ClipGeometry.from_request(2560, 1024, 2),
        ValueError, ("width 2560 px is too large", "maximum side is 1920 px")),
    Bad("seconds-zero", lambda sh, t: ClipGeometry.from_request(448, 256, 0),
        ValueError, ("seconds must be between 1 and 15", "got 0")),
    Bad("seconds-negative", lambda sh, t: ClipGeometry.from_preset("16:9", "256p", -4),
        ValueError, ("seconds must be between 1 and 15", "got -4")),
    Bad("seconds-over-15", lambda sh, t: ClipGeometry.from_preset("16:9", "256p", 16),
        ValueError, ("seconds must be between 1 and 15", "got 16")),
    Bad("seconds-fraction", lambda sh, t: ClipGeometry.from_request(448, 256, 2.5),
        ValueError, ("seconds must be a whole number", "got 2.5")),
    Bad("steps-zero", lambda sh, t: validate_steps(0), ValueError, ("steps must be at least 1", "got 0")),
    Bad("sampler-steps-zero", lambda sh, t: SamplingOptions(mode="base", steps=0),
        ValueError, ("steps must be at least 1", "got 0")),
    Bad("sr-steps-zero", lambda sh, t: SROptions(steps=0), ValueError, ("SR steps must be at least 1",)),
    # text
    Bad("prompt-empty", lambda sh, t: build_prompt("   \n"),
        ValueError, ("the prompt is empty", "describe the scene")),
    Bad("prompt-over-640-tokens", _long_prompt, check=_check_truncated_prompt),
    Bad("language-unsupported", lambda sh, t: build_prompt("A man.", [DialogueLine("A man", "Klingon", "Qapla'")]),
        ValueError, ("unsupported language 'Klingon'",
                     "choose one of: Mandarin, Cantonese, English, Japanese, Korean, German, French")),
    Bad("dialogue-control-characters",
        lambda sh, t: build_prompt("A man.", [DialogueLine("A man", "English", "hello\x07 there")]),
        ValueError, (r"dialogue line 1 \('A man'\) contains control characters '\\x07'",
                     "write each utterance as one line of plain text")),
    Bad("dialogue-speaker-markup",
        lambda sh, t: build_prompt("A man.", [DialogueLine("<A man>", "English", "hi")]),
        ValueError, ("speaker description must be non-empty plain text without '<' or '>'",)),
    Bad("more-dialogue-malformed", lambda sh, t: validation.parse_dialogue("A", "English", "hi", "Bob | hello"),
        ValueError, (r"more_dialogue line 1 must read 'speaker \| Language \| line'", "'Bob | hello'")),
    # media: images
    Bad("image-batch-uses-first", lambda sh, t: validation.start_image(_BATCH), None,
        ("image batch of 3", "using the first image"), warns=validation.ImageBatchWarning, check=_check_first_image),
    Bad("image-grayscale", lambda sh, t: validation.start_image(torch.rand(1, 4, 5, 1)), check=_check_gray),
    Bad("image-rgba", lambda sh, t: validation.to_rgb(torch.linspace(0, 1, 80).reshape(1, 4, 5, 4)),
        check=_check_rgba),
    Bad("image-two-channels", lambda sh, t: validation.to_rgb(torch.rand(1, 4, 5, 2)),
        ValueError, ("image has 2 channels", "give an RGB, RGBA or grayscale image")),
    Bad("image-without-batch-dim", lambda sh, t: validation.start_image(torch.rand(4, 5, 3)),
        ValueError, (r"image must be \[batch, height, width, channels\]", "connect an IMAGE output")),
    # media: voice track (target: 1 s at 51.2 kHz)
    Bad("audio-mono-8khz-short", lambda sh, t: prepare_voice_track(_tone(1, 8000, 0.5), 8000, 51_200, CLIP_SAMPLES),
        check=_expect_voice(trimmed=False, padded=True, silent=False)),
    Bad("audio-5.1-96khz-long", lambda sh, t: prepare_voice_track(_tone(6, 96_000, 1.5), 96_000, 51_200,
                                                                   CLIP_SAMPLES),
        check=_expect_voice(trimmed=True, padded=False, silent=False)),
    Bad("audio-silent", lambda sh, t: prepare_voice_track(torch.zeros(2, 40_000), 48_000, 51_200, CLIP_SAMPLES),
        check=_expect_voice(trimmed=False, padded=True, silent=True)),
    Bad("audio-three-channels", lambda sh, t: prepare_voice_track(torch.zeros(3, 1000), 48_000, 51_200, CLIP_SAMPLES),
        ValueError, ("audio has 3 channels", r"mono \(1\), stereo \(2\), 5\.1 \(6\) and 7\.1 \(8\)",
                     "Convert the file to stereo first")),
    Bad("audio-rate-too-low", lambda sh, t: prepare_voice_track(torch.zeros(1, 1000), 4000, 51_200, CLIP_SAMPLES),
        ValueError, ("sample rate 4000 Hz is outside 8000..192000 Hz", "resample the track to 44.1 or 48 kHz")),
    Bad("audio-nan-samples",
        lambda sh, t: prepare_voice_track(torch.tensor([[0.0, float("nan")] * 50]), 48_000, 51_200, CLIP_SAMPLES),
        ValueError, ("NaN or infinite samples", "re-export the file")),
    # latents and graph wiring
    Bad("latent-nan-in-clip", lambda sh, t: validation.check_clip_latents(_nan_video(), torch.zeros(1, 64, 5)),
        ValueError, ("the video latent contains NaN/Inf values", "check the node that produced it")),
    Bad("latent-nan-to-model", lambda sh, t: latents.video_to_model(_nan_video()),
        ValueError, ("the video latent contains NaN/Inf values", "check the node that produced it")),
    Bad("latent-audio-length-mismatch",
        lambda sh, t: validation.check_clip_latents(torch.zeros(1, 48, 2, 2, 2), torch.zeros(1, 64, 50)),
        ValueError, (r"audio latent \(50 frames, batch 1\) does not match the video latent \(2 latent frames",
                     "Connect both outputs of the same HappyHorse Empty Latent")),
    Bad("latent-wan21-16-channels",
        lambda sh, t: validation.check_clip_latents(torch.zeros(1, 16, 2, 2, 2), torch.zeros(1, 64, 5)),
        ValueError, (r"video latent must be \[B, 48, T, h, w\]", "not Wan2.1 / SD")),
    Bad("latent-empty-or-odd",
        lambda sh, t: validation.check_clip_latents(torch.zeros(1, 48, 2, 3, 2), torch.zeros(1, 64, 5)),
        ValueError, ("empty or has an odd height/width", "make them with HappyHorse Empty Latent")),
    Bad("sampler-audio-frames-mismatch",
        lambda sh, t: generate(sh.distill, _text(), latent_frames=2, latent_h=2, latent_w=2, audio_frames=50,
                               opts=SamplingOptions(steps=1)),
        ValueError, ("50 audio frames do not fit 2 latent video frames", "HappyHorse Empty Latent")),
    Bad("sampler-text-from-wrong-encoder",
        lambda sh, t: generate(sh.distill, _text(width=64), latent_frames=2, latent_h=2, latent_w=2, audio_frames=5,
                               opts=SamplingOptions(steps=1)),
        ValueError, ("features are 64 wide", "reads 3584-wide text features", "T5Gemma encoder")),
    Bad("sampler-voice-latent-nan",
        lambda sh, t: generate(sh.distill, _text(), latent_frames=2, latent_h=2, latent_w=2, audio_frames=5,
                               audio_latent=torch.full((1, 5, 64), float("nan")), opts=SamplingOptions(steps=1)),
        ValueError, ("voice latent contains NaN/Inf", "check the node that produced it")),
    Bad("sr-latent-smaller-than-base",
        lambda sh, t: super_resolve(sh.sr, torch.zeros(1, 48, 2, 4, 6), torch.zeros(1, 5, 64), _text(),
                                    latent_h=2, latent_w=4, generator=_gen()),
        ValueError, ("SR latent size 2x4 is smaller than the base latent 4x6", "only upscales")),
    Bad("sr-latent-odd-size",
        lambda sh, t: super_resolve(sh.sr, torch.zeros(1, 48, 2, 2, 2), torch.zeros(1, 5, 64), _text(),
                                    latent_h=5, latent_w=8, generator=_gen()),
        ValueError, ("SR latent size must be even and at least 2x2", "got 5x8", "sr_latent_size")),
    Bad("sr-audio-in-host-layout",
        lambda sh, t: super_resolve(sh.sr, torch.zeros(1, 48, 2, 2, 2), torch.zeros(1, 64, 5), _text(),
                                    latent_h=4, latent_w=4, generator=_gen()),
        ValueError, (r"SR audio must be the base audio latent in DiT layout \[1, F, 64\]", r"got \[1, 64, 5\]")),
    Bad("sr-first-frame-wrong-size",
        lambda sh, t: super_resolve(sh.sr, torch.zeros(1, 48, 2, 2, 2), torch.zeros(1, 5, 64), _text(),
                                    latent_h=4, latent_w=4, generator=_gen(), image_latent=torch.zeros(1, 48, 1, 2, 2)),
        ValueError, (r"SR image latent must be \[1, 48, 1, 4, 4\]", r"got \[1, 48, 1, 2, 2\]")),
    Bad("sr-base-latent-odd", lambda sh, t: validation.sr_latent_hw(3, 5, "540p"),
        ValueError, ("base video latent is 3x5", "connect the HappyHorse Sampler's video latent")),
    Bad("sr-base-already-1080p", lambda sh, t: validation.sr_latent_hw(68, 120, "540p"),
        ValueError, ("SR size 896x512 is smaller than the base size 1920x1088", "only upscales")),
    Bad("sr-target-too-small", lambda sh, t: sr_latent_size(16, 896),
        ValueError, ("SR target 896x16 is too small", "use at least 64x64 pixels")),
    # hostile and huge inputs (issue 13)
    Bad("prompt-50kb-cut-before-encoder", _huge_prompt, check=_check_huge_prompt),
    Bad("dialogue-5000-lines-capped", _many_dialogue_lines, check=_check_capped_dialogue),
    Bad("prompt-lone-surrogate",
        lambda sh, t: encode_prompt(*sh.text_stack, "A man\ud800 speaks."),
        ValueError, ("the prompt contains an invalid character at position 5", "lone UTF-16 surrogate U\\+D800",
                     "paste the text again")),
    Bad("negative-prompt-lone-surrogate",
        lambda sh, t: encode_prompt(*sh.text_stack, "blurry \udfff", what="negative prompt"),
        ValueError, ("the negative prompt contains an invalid character at position 7", "delete it")),
    Bad("dialogue-u2028-inside-line",
        lambda sh, t: validation.parse_dialogue("A", "English", "", "Bob | English | hello\u2028there"),
        ValueError, ("more_dialogue line 1 contains a U\\+2028 LINE SEPARATOR", "replace it with a space",
                     "press Enter to start a new dialogue line")),
    Bad("dialogue-u2029-in-first-line",
        lambda sh, t: validation.parse_dialogue("A", "English", "hello\u2029there", ""),
        ValueError, ("the dialogue line contains a U\\+2029 PARAGRAPH SEPARATOR", "replace it with a space")),
    Bad("tokenizer-json-broken", lambda sh, t: load_text_stack(_broken_tokenizer_json(sh, t)),
        CheckpointError, (r"tokenizer\.json is not a valid tokenizer file", "download tokenizer.json again")),
    Bad("tokenizer-config-not-an-object", lambda sh, t: load_text_stack(_tokenizer_config_list(sh, t)),
        CheckpointError, (r"tokenizer_config\.json holds a JSON list, not an object", "re-download it")),
    Bad("link-broken-model-file", lambda sh, t: _model_path_in_roots(t, _dangling),
        FileNotFoundError, (r"hh\.safetensors is a broken link", r"points to .*moved_away", "fix the link")),
    Bad("link-looping-model-file", lambda sh, t: _model_path_in_roots(t, _looping),
        FileNotFoundError, (r"hh\.safetensors is a broken link", "symbolic-link loop", "replace it")),
    Bad("link-broken-dit-cli", lambda sh, t: load_dit(_dangling(t, "dit.safetensors"), variant="distill"),
        FileNotFoundError, (r"dit\.safetensors is a broken link", "does not exist")),
    Bad("link-broken-tokenizer", lambda sh, t: load_text_stack(_tokenizer_link_broken(sh, t)),
        FileNotFoundError, (r"tokenizer\.json is a broken link", "google/t5gemma-9b-9b-ul2")),
    Bad("link-broken-turbo-vaed", lambda sh, t: load_turbo_vaed(_dangling(t, "turbo.safetensors")),
        FileNotFoundError, ("Turbo-VAED weights: ", r"turbo\.safetensors is a broken link")),
    Bad("guidance-nan-base-mode",
        lambda sh, t: validation.check_guidance_widgets("base", video_cfg=5.0, video_cfg_late=float("nan"),
                                                        audio_cfg=5.0),
        ValueError, ("the sampler's video_cfg_late is nan", "set the widget to a number")),
    Bad("guidance-inf-base-mode",
        lambda sh, t: validation.check_guidance_widgets("base", video_cfg=5.0, video_cfg_late=2.0,
                                                        audio_cfg=float("inf")),
        ValueError, ("the sampler's audio_cfg is inf", "finite guidance scale")),
    Bad("guidance-nan-distilled-unused",
        lambda sh, t: validation.check_guidance_widgets("distilled", video_cfg=float("nan"),
                                                        video_cfg_late=float("nan"), audio_cfg=float("nan"))),
    Bad("sr-derived-size-too-large", lambda sh, t: validation.sr_latent_hw(2, 120, "540p"),
        ValueError, ("540p super-resolution size is derived from the base video latent 2x120", r"1920x32 px",
                     "too large", "Feed Super-Resolution the 256p video latent")),
    Bad("dit-nan-weights-output", _NaNWeights.run,
        CheckpointError, ("the DiT produced NaN/Inf video values", r"nan_dit\.safetensors",
                     "Download or convert that file again")),
    Bad("turbo-vaed-nan-weights", _turbo_vaed_nan,
        CheckpointError, ("Turbo-VAED produced NaN/Inf pixels", r"turbo_nan\.safetensors", "download or convert")),
    Bad("turbo-vaed-nan-latent", _turbo_vaed_nan_latent,
        ValueError, ("the video latent contains NaN/Inf values", "check the node that produced it")),
    Bad("batch-times-seconds-over-bound",
        lambda sh, t: check_batch(16, ClipGeometry.from_preset("16:9", "256p", 15)),
        ValueError, ("batch_size 16 x 15 s at 448x256 is 240 s of video", "at most 60 s",
                     "lower batch_size or seconds, or queue several runs")),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    return Shared(tmp_path_factory.mktemp("bad_inputs_shared"))


def test_table_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


@pytest.mark.badinput
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Bad, shared: Shared, tmp_path: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.error is not None:
            with pytest.raises(BaseException) as info:
                case.run(shared, tmp_path)
            assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
            text = str(info.value)
        else:
            result = case.run(shared, tmp_path)
            text = " | ".join(str(w.message) for w in caught if case.warns and issubclass(w.category, case.warns))
            if case.warns is not None:
                assert text, f"expected a {case.warns.__name__}, got {[str(w.message) for w in caught]}"
            if case.check is not None:
                case.check(result)
    for phrase in case.says:
        assert re.search(phrase, text), f"{phrase!r} not in message: {text}"
