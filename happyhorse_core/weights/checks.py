"""The checks every weights loader shares: dtypes, keys and shapes, a sampled NaN/Inf test, assignment.

The DiT (weights/loading.py), the T5Gemma encoder (text/loading.py) and Turbo-VAED
(decoders/turbo_loading.py) each map their file's key names onto a module built on the meta
device; from there on they go through these functions, so a wrong file is refused the same
way, with the same `CheckpointError` wording, whichever loader opened it.

- `check_dtypes`: weights are floating point (bf16/fp16/fp32/fp64, fp8 e4m3fn/e5m2); integer or
  boolean tensors are refused unless the caller names them (quanto int8 data with its scale).
- `check_keys_and_shapes`: missing, unexpected and wrongly shaped tensors, counted and listed.
- `check_sampled_finite`: a strided sample of each tensor read (`SAMPLES` elements) must be finite;
  a file full of NaN (a broken conversion, a diverged training run) is refused at load instead of
  turning into a black video or a sampler error far downstream. Isolated NaN between the sampled
  elements are not seen here; the sampler's own output check catches those.
- `assign_tensor`: put one loaded tensor in place of a meta parameter or buffer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..errors import CheckpointError

FLOAT_TAGS = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})  # safetensors dtype tags
SAMPLES = 64  # elements read per tensor by check_sampled_finite
LISTED = 10  # names listed per problem in an error message


def _first(names: Sequence[str]) -> str:
    return str(list(names[:LISTED])) + (" ..." if len(names) > LISTED else "")


def check_dtypes(dtypes: Mapping[str, str], source: str | Path, what: str, allowed: Iterable[str] = ()) -> None:
    """Refuse non-floating tensors (key -> safetensors dtype tag), except the keys in `allowed`."""
    allowed = set(allowed)
    bad = sorted(k for k, tag in dtypes.items() if tag not in FLOAT_TAGS and k not in allowed)
    if bad:
        kinds = sorted({dtypes[k] for k in bad})
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) are stored as {'/'.join(kinds)}, not floating point "
            f"(first: {_first([f'{k} {dtypes[k]}' for k in bad])}). {what} weights must be bf16, fp16, fp32 or "
            "fp8 (e4m3fn/e5m2 with scales); this file is another kind of data or a broken conversion: "
            "download or convert the weights again.")


def check_keys_and_shapes(expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]], *,
                          source: str | Path, what: str, hint: str, allow_missing: Iterable[str] = (),
                          extra_missing: Iterable[str] = (), unexpected_names: Iterable[str] = ()) -> None:
    """Strict match of a module's tensors (key -> shape) against a file's (key -> shape).

    Raises CheckpointError "{source} does not match {what} (N missing key(s), first: [...];
    N unexpected key(s), first: [...]; N tensor(s) have the wrong shape, first: [...]). {hint}".
    `allow_missing`: keys the caller can fill itself; `extra_missing` / `unexpected_names`: problems
    the caller found while mapping the file's key names (listed with the others).
    """
    missing = sorted(set(expected) - set(found) - set(allow_missing)) + sorted(set(extra_missing))
    unexpected = sorted(set(found) - set(expected)) + sorted(set(unexpected_names))
    wrong = [f"{k} {list(found[k])} (expected {list(expected[k])})" for k in sorted(set(expected) & set(found))
             if tuple(found[k]) != tuple(expected[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), first: {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first: {_first(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} tensor(s) have the wrong shape, first: {_first(wrong)}")
    if parts:
        raise CheckpointError(f"{source} does not match {what} ({'; '.join(parts)}). {hint}")


def check_sampled_finite(tensor: torch.Tensor, key: str, source: str | Path) -> None:
    """Raise CheckpointError if any of SAMPLES evenly strided elements of `tensor` is NaN or Inf."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return
    flat = tensor.reshape(-1)
    step = max(1, flat.numel() // SAMPLES)
    sample = flat[::step][:SAMPLES].float()  # fp8 has no isfinite kernel; the copy is SAMPLES elements
    if not bool(torch.isfinite(sample).all()):
        raise CheckpointError(
            f"{source}: tensor {key!r} holds NaN or Inf values (found in a sampled check of {sample.numel()} of "
            f"its {flat.numel()} elements). The weights file is damaged or was converted wrongly: download or "
            "convert it again.")


def assign_tensor(model: nn.Module, key: str, tensor: torch.Tensor) -> None:
    """Replace the (meta) parameter or buffer `key` of `model` by `tensor` (parameters frozen)."""
    module_name, _, name = key.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(tensor, requires_grad=False)
    elif name in module._buffers:
        module._buffers[name] = tensor
    else:
        raise KeyError(key)
