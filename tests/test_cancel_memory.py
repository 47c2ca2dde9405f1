"""A cancelled run frees what it took: the sampler interrupted mid-run, the Turbo-VAED between windows.

Sampler: a fresh python process builds a mid-size random DiT (4 layers, width 256, ~2.9k video
tokens per step), warms up with one step, then runs 8 steps with an interrupt hook that raises
before step 3 (ComfyUI's Cancel raises the same way, from `Hooks.interrupt`). Process RSS is read
from /proc: the base just before the run, the peak (VmHWM, reset through /proc/self/clear_refs)
and the level after gc.collect().

Measured on the dev machine (Linux x86-64, glibc, torch 2.13 CPU, five runs): the run took
100-115 MB over the base; after gc.collect() RSS stayed 32-68 MB above it, and after glibc's
malloc_trim(0) 0.1 MB. So every tensor of the run is freed; what gc.collect() alone leaves is glibc
keeping freed heap pages for reuse, not live memory: three more cancelled runs stayed at most
1.13x one run's growth above the base (29-112 MB), i.e. the pool is reused, it does not grow per
run. The bounds below follow from those numbers, with headroom for allocator noise.
"""
from __future__ import annotations

import ctypes.util
import gc
import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch

from happyhorse_core.decoders import TurboVAED, TurboVAEDConfig

LINUX_PROC = Path("/proc/self/clear_refs").exists()
GLIBC = ctypes.util.find_library("c") is not None and sys.platform.startswith("linux")

CANCEL_SCRIPT = textwrap.dedent("""
    import ctypes, gc, json, torch
    torch.set_num_threads(1)
    from happyhorse_core.dit.config import DiTConfig
    from happyhorse_core.dit import SandwichDiT
    from happyhorse_core.dit.ops import Ops
    from happyhorse_core.sampling.pipeline import Hooks, SamplingOptions, TextConditioning, generate
    from happyhorse_core.testing.tiny_dit import init_random_

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    def live_tensors():
        gc.collect()
        return sum(type(o) in (torch.Tensor, torch.nn.Parameter) for o in gc.get_objects())

    trim = ctypes.CDLL(None).malloc_trim
    cfg = DiTConfig(num_layers=4, hidden_size=256, head_dim=64, num_heads_kv=2, mm_layers=(0, 3), gelu7_layers=(0,))
    model = init_random_(SandwichDiT(cfg, Ops(compute_dtype=torch.float32)), 0).eval()
    text = TextConditioning(torch.randn(16, 3584, generator=torch.Generator().manual_seed(0)))
    geom = dict(latent_frames=5, latent_h=48, latent_w=48, audio_frames=17)  # 2880 video tokens

    class Cancelled(Exception):
        pass

    done = []
    def interrupt():
        if len(done) == 2:
            raise Cancelled("user pressed cancel")

    def cancelled_run():
        done.clear()
        try:
            generate(model, text, **geom, opts=SamplingOptions(steps=8),
                     hooks=Hooks(interrupt=interrupt, progress=lambda d, t: done.append(d)))
        except Cancelled:
            return list(done)
        raise AssertionError("the interrupt did not stop the run")

    generate(model, text, **geom, opts=SamplingOptions(steps=1))  # warm-up: lazy init, thread pools
    tensors_before = live_tensors()
    trim(0)
    base = rss("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    steps = cancelled_run()
    peak = rss("VmHWM:")
    gc.collect()
    after_gc = rss("VmRSS:")
    tensors_after = live_tensors()
    trim(0)
    after_trim = rss("VmRSS:")
    repeats = []
    for _ in range(3):
        cancelled_run()
        gc.collect()
        repeats.append(rss("VmRSS:") - base)
    print(json.dumps({"steps": steps, "took": peak - base, "kept_gc": after_gc - base,
                      "kept_trim": after_trim - base, "repeats": repeats,
                      "tensors_before": tensors_before, "tensors_after": tensors_after}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not (LINUX_PROC and GLIBC), reason="reads VmHWM from Linux /proc and calls glibc malloc_trim")
def test_cancelled_sampler_run_releases_its_memory(repo_root):
    out = subprocess.run([sys.executable, "-c", CANCEL_SCRIPT], cwd=repo_root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    mb = {k: round(v / 1e6, 1) for k, v in m.items() if k in ("took", "kept_gc", "kept_trim")}
    print(f"cancelled run: {mb} MB, 3 more cancelled runs kept {[round(r / 1e6, 1) for r in m['repeats']]} MB")
    assert m["steps"] == [1, 2]  # stopped before step 3, after two finished steps
    assert m["took"] >= 30e6  # large enough for the bounds below to mean something (measured ~115 MB)
    assert m["tensors_after"] == m["tensors_before"]  # no tensor made by the run is still alive
    assert m["kept_trim"] <= max(0.05 * m["took"], 4e6)  # measured 0.1 MB of 100-115 MB
    assert m["kept_gc"] <= m["took"]  # at most the allocator's free pool (measured 32-68 MB)
    assert max(m["repeats"]) <= 1.5 * m["took"]  # the pool is reused, not grown per run (measured <= 1.13x)


# -- Turbo-VAED -----------------------------------------------------------------------------------------------------

class Cancelled(Exception):
    pass


def _tiny_decoder() -> TurboVAED:
    torch.manual_seed(0)
    model = TurboVAED(TurboVAEDConfig.tiny()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


def _watch_windows(model: TurboVAED) -> list[weakref.ref]:
    """Weak references to every window the decoder produces (the returned slices are views of these)."""
    refs: list[weakref.ref] = []
    forward = model.decoder.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        refs.append(weakref.ref(out))
        return out

    model.decoder.forward = spy
    return refs


def test_interrupted_decode_leaves_no_partial_output():
    model = _tiny_decoder()
    windows = _watch_windows(model)
    checks = []

    def interrupt():
        checks.append(1)
        if len(checks) == 3:  # two windows are finished and moved to the output device
            raise Cancelled("user pressed cancel")

    latent = torch.randn(1, 48, 16, 1, 1)  # 16 latent frames -> 3 windows (7 + 7 + 7, padded)
    with pytest.raises(Cancelled) as info:
        model.decode(latent, interrupt=interrupt, output_device="cpu")
    assert len(windows) == 2
    # The host still holds the exception (ComfyUI keeps it until the prompt ends), and with it the traceback
    # and the decode frame. Neither may keep a decoded window alive.
    assert info.value.__traceback__ is not None
    assert all(ref() is None for ref in windows), "a decoded window survived the cancel"
    frames = []
    tb = info.tb
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    decode_locals = next(f.f_locals for f in frames if f.f_code.co_name == "decode")
    assert decode_locals.get("pieces") == [] and "z" not in decode_locals


def test_decode_after_an_interrupted_one_is_complete():
    model = _tiny_decoder()
    latent = torch.randn(1, 48, 9, 1, 1)  # two windows
    expected = model.decode(latent)
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise Cancelled("cancel")

    with pytest.raises(Cancelled):
        model.decode(latent, interrupt=interrupt)
    gc.collect()
    assert torch.equal(model.decode(latent), expected)  # no state left behind by the cancelled call
