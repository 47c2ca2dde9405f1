"""Sequence-parallel (Ulysses-style) DiT sampling over several processes with torch.distributed.

Why: a 1080p, 5 s clip is ~53k tokens per DiT call; attention dominates and one GPU runs every
head over every token. Here each of W ranks keeps the FULL weights but only a contiguous chunk of
the token sequence [video | audio | text]:

* everything row-wise (embedders, norms, expert linears, MLPs, gates, residuals, output heads)
  runs on the rank's own rows. Expert routing stays right because the rank's `ModalitySplit`
  counts the video / audio / text rows INSIDE its chunk (a chunk may span modality boundaries);
  RoPE uses the rank's rows of the coordinate table;
* attention: one all-to-all per q, k, v turns [L_r, H, Dh] (own rows, all heads) into
  [L, H/W, Dh] (all rows, own head group), the layer's usual attention runs on the whole
  sequence (so the windowed 1080p-SR layers need nothing special), and one all-to-all brings
  [L, Hq/W, Dh] back to [L_r, Hq, Dh];
* the velocity rows are all-gathered, so every rank returns the same full output and the
  sampler (same seed, same CPU generator) evolves identical latents on every rank.

Choices: chunks are UNEVEN, no padding (rank r gets L//W + (1 if r < L % W) rows;
`all_to_all_single` takes per-rank split sizes). Query heads must divide by W (ValueError
otherwise: 40 heads -> 2, 4, 5, 8 GPUs). KV heads (GQA) are split when Hkv % W == 0, else each
kv head is REPLICATED (repeat_interleave to lcm(Hkv, W) heads, which keeps the query->kv
grouping) before the all-to-all. fp8 weights need no change (linears are local). BlockSwap
works per rank through the per-layer hooks (its whole-model prefetch hook does not fire
because the model's own forward is bypassed); BlockSwap and torch.compile under sequence
parallelism are untested.

CLI only: `torchrun --nproc-per-node N -m happyhorse_core.generate ...` (see init_from_env).
There is deliberately no ComfyUI option: ComfyUI runs one process that owns one device and
manages (loads, offloads, frees) models itself; sequence parallelism needs N long-lived worker
processes, each holding its own copy of the 15B weights (~30 GB bf16) on its own GPU, started
with a rendezvous and kept in lock-step for every call. Spawning those from a node would sit
outside ComfyUI's model management (its memory accounting, unloading and interrupt handling),
so it is not offered there.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from .attention import resolve_backend
from .block import StepContext
from .cache import StepCache
from .modality import ModalitySplit

log = logging.getLogger("HappyHorse")
AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def chunk_sizes(total: int, world: int) -> list[int]:
    """Rows per rank for `total` tokens over `world` ranks: contiguous, the first total % world get one more."""
    if total < world:
        raise ValueError(f"the sequence has {total} tokens, fewer than the {world} ranks; use fewer processes")
    return [total // world + (1 if r < total % world else 0) for r in range(world)]


def local_split(full: ModalitySplit, lo: int, hi: int) -> ModalitySplit:
    """Counts of each modality among rows [lo, hi) of the packed [video | audio | text] sequence."""
    counts = []
    for m in range(3):
        a, b = full.bounds(m)
        counts.append(max(0, min(b, hi) - max(a, lo)))
    return ModalitySplit(*counts)


def modality_ranges(full: ModalitySplit, lo: int, hi: int) -> list[slice]:
    """Per modality, the slice of that modality's own rows (video, audio, text inputs) inside [lo, hi)."""
    out = []
    for m in range(3):
        a, b = full.bounds(m)
        start, stop = max(a, lo) - a, min(b, hi) - a
        out.append(slice(start, max(start, stop)) if stop > start else slice(0, 0))
    return out


@dataclass
class SequenceShard:
    """One forward's view of the sharding: who holds which rows, and the attention all-to-alls."""

    full_split: ModalitySplit  # the whole sequence (what attention sees)
    sizes: list[int]  # rows per rank
    rank: int
    group: Optional[dist.ProcessGroup] = None

    @property
    def world(self) -> int:
        return len(self.sizes)

    @property
    def bounds(self) -> tuple[int, int]:
        lo = sum(self.sizes[:self.rank])
        return lo, lo + self.sizes[self.rank]

    def _to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[L_r, H, Dh] own rows, all heads -> [L, H/W, Dh] all rows, this rank's head group."""
        w, (rows, heads, dh) = self.world, x.shape
        send = x.reshape(rows, w, heads // w, dh).transpose(0, 1).contiguous()  # [W, L_r, H/W, Dh]
        recv = x.new_empty(sum(self.sizes), heads // w, dh)
        dist.all_to_all_single(recv, send.view(w * rows, heads // w, dh), output_split_sizes=self.sizes,
                               input_split_sizes=[rows] * w, group=self.group)
        return recv

    def _to_rows(self, x: torch.Tensor) -> torch.Tensor:
        """[L, H/W, Dh] all rows, own head group -> [L_r, H, Dh] own rows, all heads."""
        w, rows = self.world, self.sizes[self.rank]
        recv = x.new_empty(w * rows, x.shape[1], x.shape[2])
        dist.all_to_all_single(recv, x.contiguous(), output_split_sizes=[rows] * w, input_split_sizes=self.sizes,
                               group=self.group)
        return recv.view(w, rows, x.shape[1], x.shape[2]).transpose(0, 1).reshape(rows, -1, x.shape[2])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fn: AttendFn) -> torch.Tensor:
        """q [L_r, Hq, Dh], k/v [L_r, Hkv, Dh] -> fn over the whole sequence per head group -> [L_r, Hq, Dh]."""
        w, hq, hkv = self.world, q.shape[1], k.shape[1]
        if hq % w:
            raise ValueError(f"{hq} query heads cannot be split over {w} ranks; use a process count that divides "
                             f"{hq} (e.g. 2, 4 or 8 for 40 heads)")
        if hkv % w:  # replicate kv heads so every rank gets whole ones; keeps head h -> kv head h // (Hq/Hkv)
            rep = math.lcm(hkv, w) // hkv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = fn(self._to_heads(q), self._to_heads(k), self._to_heads(v))  # [L, Hq/W, Dh]
        return self._to_rows(out)

    def gather_rows(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Concatenate every rank's x [counts[r], C] in rank order -> [sum(counts), C] on every rank."""
        width = max(counts)
        if width == 0:
            return x[:0]
        pad = x.new_zeros(width, *x.shape[1:])
        pad[:x.shape[0]] = x
        parts = [torch.empty_like(pad) for _ in counts]
        dist.all_gather(parts, pad, group=self.group)
        return torch.cat([p[:n] for p, n in zip(parts, counts)], dim=0)


class SequenceParallelDiT(nn.Module):
    """Wraps a SandwichDiT; same call signature, runs this rank's token chunk, returns the full output.

    Every rank of `group` must call it with the same inputs (the pipeline does, given the same seed).
    """

    def __init__(self, model: nn.Module, group: Optional[dist.ProcessGroup] = None) -> None:
        super().__init__()
        if not dist.is_initialized():
            raise ValueError("torch.distributed is not initialised; launch with torchrun (or call "
                             "init_process_group) before sharding the DiT")
        self.inner, self.group = model, group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)

    @property
    def config(self):
        return self.inner.config

    def _shard(self, full: ModalitySplit) -> SequenceShard:
        return SequenceShard(full, chunk_sizes(full.total, self.world), self.rank, self.group)

    def _per_rank(self, full: ModalitySplit, sizes: list[int], modality: int) -> list[int]:
        starts = [sum(sizes[:r]) for r in range(len(sizes))]
        return [local_split(full, s, s + n).counts[modality] for s, n in zip(starts, sizes)]

    def _embed(self, video, audio, text, coords, shard: SequenceShard, cache: Optional[StepCache]):
        """This rank's rows of the adapter output [L_r, D] fp32 and of the RoPE table [L_r, 6B]."""
        m, (lo, hi) = self.inner, shard.bounds
        sv, sa, st = modality_ranges(shard.full_split, lo, hi)
        device = video.device  # from the inputs, as SandwichDiT.forward
        text_hidden = rope = None
        if cache is not None:
            if st.stop > st.start:
                text_hidden = cache.get(("sp_text_hidden", st.start, st.stop), text,
                                        lambda t: m.adapter.embed_text(t[st]))
            rope = cache.get(("sp_rope", lo, hi), coords, lambda c: m.adapter.rope(c[lo:hi].to(device)))
        h = m.adapter(video[sv], audio[sa], text[st], text_hidden)  # [L_r, D]
        return h, rope if rope is not None else m.adapter.rope(coords[lo:hi].to(device))

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text: torch.Tensor, coords: torch.Tensor,
                tokens_per_frame: int, capture: list | None = None,
                cache: StepCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as SandwichDiT.forward; `capture` gets the FULL residual stream after each layer."""
        m = self.inner
        full = ModalitySplit(video.shape[0], audio.shape[0], text.shape[0])
        if coords.shape[0] != full.total:
            raise ValueError(f"coords has {coords.shape[0]} rows but the sequence has {full.total} tokens")
        shard = self._shard(full)
        lo, hi = shard.bounds
        split = local_split(full, lo, hi)
        h, rope = self._embed(video, audio, text, coords, shard, cache)
        ctx = StepContext(split=split, rope=rope, compute_dtype=m.compute_dtype,
                          backend=resolve_backend(m.attn_backend, h.device, m.compute_dtype),
                          tokens_per_frame=max(tokens_per_frame, 1), shard=shard)
        for layer in m.block.layers:
            h = layer(h, ctx)
            if capture is not None:
                capture.append(shard.gather_rows(h, shard.sizes))
        video_out = m.final_linear_video(m.final_norm_video(h[split.slice(0)]))  # [Nv_r, 192]
        audio_out = m.final_linear_audio(m.final_norm_audio(h[split.slice(1)]))  # [F_r, 64]
        return (shard.gather_rows(video_out, self._per_rank(full, shard.sizes, 0)),
                shard.gather_rows(audio_out, self._per_rank(full, shard.sizes, 1)))


def shard_model(model: nn.Module, group: Optional[dist.ProcessGroup] = None) -> nn.Module:
    """Wrap a DiT for sequence parallelism when more than one rank runs; otherwise return it unchanged."""
    if isinstance(model, SequenceParallelDiT) or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return model
    return SequenceParallelDiT(model, group)


# -- launching (torchrun) --------------------------------------------------------------------------
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    device: torch.device  # this rank's device (cuda:LOCAL_RANK on GPUs)
    backend: str  # "nccl" or "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun(env: Optional[dict] = None) -> bool:
    env = os.environ if env is None else env
    return all(name in env for name in TORCHRUN_ENV)


def init_from_env(device: torch.device) -> Optional[DistInfo]:
    """Under torchrun (its env vars set) with WORLD_SIZE > 1: init the process group and return this rank's info.

    `device` is the one the user asked for; on CUDA each rank takes cuda:LOCAL_RANK and NCCL,
    on CPU the gloo backend. Returns None for a plain (single-process) run.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2:
        return None
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        if device.index not in (None, local):
            log.warning("HappyHorse: under torchrun each rank uses cuda:LOCAL_RANK; ignoring %s", device)
        if local >= torch.cuda.device_count():
            raise ValueError(f"rank {rank} needs cuda:{local} but only {torch.cuda.device_count()} GPUs are visible; "
                             "start at most one process per GPU (--nproc-per-node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, device, backend)


def shard_components(components, group: Optional[dist.ProcessGroup] = None):
    """Wrap a ClipComponents' base DiT and SR DiT (or SR loader) for sequence parallelism; returns it."""
    if components.dit is not None:
        components.dit = shard_model(components.dit, group)
    sr = components.sr_dit
    if isinstance(sr, nn.Module):
        components.sr_dit = shard_model(sr, group)
    elif sr is not None:
        components.sr_dit = lambda: shard_model(sr(), group)
    return components
