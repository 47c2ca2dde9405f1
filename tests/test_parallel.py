"""Sequence parallelism (happyhorse_core.dit.parallel) on CPU with gloo: sharded == single process.

One spawn per world size (2 and 3 processes) runs every multi-process check and hands the
numbers back through a file; the tests then assert on them. Token counts are odd (53 per forward:
30 video + 17 audio + 6 text; 52 and 55 in CFG sampling), so chunks are uneven and span modality boundaries.
"""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from happyhorse_core.dit.config import PRESETS
from happyhorse_core.dit import SandwichDiT
from happyhorse_core.dit.modality import ModalitySplit
from happyhorse_core.dit.ops import Ops
from happyhorse_core.dit.parallel import SequenceShard, chunk_sizes, local_split, modality_ranges, shard_model
from happyhorse_core.sampling.pipeline import SamplingOptions, TextConditioning, generate
from happyhorse_core.dit.sequence import pack
from happyhorse_core.testing.tiny_dit import init_random_

# 6 query heads: splits over 2 and 3 ranks; kv heads 2 (split over 2, replicated over 3) and 1 (replicated)
TINY = PRESETS["tiny"].replace(hidden_size=96, head_dim=16)
TINY_SR = PRESETS["tiny_sr"].replace(head_dim=16, frame_receptive_field=1)  # windowed layers really window
T, H, W, AUDIO_FRAMES = 5, 4, 6, 17  # 6 video tokens per frame x 5 frames = 30 video, 17 audio


def _model(cfg, seed: int) -> SandwichDiT:
    return init_random_(SandwichDiT(cfg, Ops(compute_dtype=torch.float32)), seed).eval()


def _inputs(cfg, text_tokens: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(1, 48, T, H, W, generator=g)
    audio = torch.randn(1, AUDIO_FRAMES, 64, generator=g)
    text = torch.randn(text_tokens, cfg.text_in_channels, generator=g)
    return pack(video, audio, text, style=cfg.coords_style)


def _forward_error(cfg, seed: int) -> float:
    model = _model(cfg, seed)
    seq = _inputs(cfg, 6, seed)
    args = (seq.video, seq.audio, seq.text, seq.coords, seq.tokens_per_frame)
    with torch.no_grad():
        ref = model(*args)
        got = shard_model(model)(*args)
    return max((a - b).abs().max().item() for a, b in zip(ref, got))


def _sampling_error(mode: str) -> float:
    model = _model(TINY, 3)
    g = torch.Generator().manual_seed(9)
    text = TextConditioning(torch.randn(5, TINY.text_in_channels, generator=g),
                            torch.randn(8, TINY.text_in_channels, generator=g))
    opts = SamplingOptions(mode=mode, steps=2, seed=7)
    kw = dict(latent_frames=T, latent_h=H, latent_w=W, audio_frames=AUDIO_FRAMES, opts=opts)
    ref = generate(model, text, **kw)
    got = generate(shard_model(model), text, **kw)
    return max((a - b).abs().max().item() for a, b in zip(ref, got))


def _heads_error() -> str:
    shard = SequenceShard(ModalitySplit(3, 1, 1), chunk_sizes(5, dist.get_world_size()), dist.get_rank())
    q = torch.zeros(shard.sizes[shard.rank], 5, 4)  # 5 query heads do not split over 2 or 3 ranks
    try:
        shard.attend(q, q[:, :1], q[:, :1], lambda *a: a[0])
    except ValueError as e:
        return str(e)
    return ""


def _worker(rank: int, world: int, port: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out = {"tiny": _forward_error(TINY, 1), "tiny_sr": _forward_error(TINY_SR, 2),
               "distilled": _sampling_error("distilled"), "base": _sampling_error("base"), "heads": _heads_error()}
        results = [None] * world
        dist.all_gather_object(results, out)
        if rank == 0:
            torch.save(results, path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def per_rank(request, tmp_path_factory) -> list[dict]:
    path = str(tmp_path_factory.mktemp("parallel") / "results.pt")
    mp.spawn(_worker, args=(request.param, _free_port(), path), nprocs=request.param, join=True)
    results = torch.load(path, weights_only=False)
    assert len(results) == request.param
    return results


@pytest.mark.distributed
def test_sharded_forward_matches_single_process(per_rank):
    for r in per_rank:
        assert r["tiny"] < 1e-5, r


@pytest.mark.distributed
def test_sharded_windowed_sr_forward_matches(per_rank):
    for r in per_rank:
        assert r["tiny_sr"] < 1e-5, r


@pytest.mark.distributed
def test_sharded_sampling_gives_the_same_latents(per_rank):
    for r in per_rank:
        assert r["distilled"] < 1e-5, r
        assert r["base"] < 1e-4, r  # CFG multiplies the ~1e-5 fp32 forward differences by up to 5 per step


@pytest.mark.distributed
def test_heads_not_dividing_world_are_refused(per_rank):
    for r in per_rank:
        assert "query heads cannot be split" in r["heads"]


# -- single-process bookkeeping --------------------------------------------------------------------
def test_chunks_are_contiguous_and_uneven():
    assert chunk_sizes(41, 3) == [14, 14, 13]
    assert chunk_sizes(6, 3) == [2, 2, 2]
    with pytest.raises(ValueError, match="fewer than the 4 ranks"):
        chunk_sizes(3, 4)


def test_local_split_counts_modalities_inside_a_chunk():
    full = ModalitySplit(30, 17, 5)
    assert local_split(full, 0, 18) == ModalitySplit(18, 0, 0)
    assert local_split(full, 26, 52) == ModalitySplit(4, 17, 5)
    assert local_split(full, 40, 50) == ModalitySplit(0, 7, 3)
    sv, sa, st = modality_ranges(full, 40, 50)
    assert (sv.stop - sv.start, (sa.start, sa.stop), (st.start, st.stop)) == (0, (10, 17), (0, 3))


@pytest.mark.distributed
def test_torchrun_cli_writes_once_and_matches_one_process(tmp_path, repo_root):
    """`torchrun --nproc-per-node 2 -m happyhorse_core.generate --tiny` gives the single-process latents."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    flags = ["--tiny", "--seconds", "1", "--steps", "2", "--prompt", "A woman smiles.", "--save-latents"]
    one = [sys.executable, "-m", "happyhorse_core.cli.generate", *flags, "--out", str(tmp_path / "one.mp4")]
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "happyhorse_core.cli.generate", *flags, "--out", str(tmp_path / "two.mp4")]
    for cmd in (one, two):
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "2 ranks (gloo)" in done.stderr
    assert done.stdout.count("HappyHorse: wrote") == 1  # rank 0 only
    a, b = load_file(str(tmp_path / "one.latents.safetensors")), load_file(str(tmp_path / "two.latents.safetensors"))
    for key in ("video", "audio"):
        assert (a[key] - b[key]).abs().max().item() < 1e-4, key
