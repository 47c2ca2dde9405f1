"""Checks of nodes/comfy_bridge.py INSIDE ComfyUI's python (no server): run as
    COMFYUI_HOME/venv/bin/python tests/integration/bridge_checks.py COMFYUI_HOME WORKDIR
Prints one JSON object {check name: "ok" | traceback}; test_comfy_bridge_in_comfy.py asserts on it."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from in_comfy import check, report, start_comfy

HOME, WORK = Path(sys.argv[1]), Path(sys.argv[2])
start_comfy(HOME)
import torch  # noqa: E402
import comfy.model_management as mm  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

# ComfyUI's own `nodes` module owns that name here: load the pack as one package under an alias
from pack_import import pack_module  # noqa: E402

bridge = pack_module("nodes.comfy_bridge")


def expect_raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError(f"{fn.__name__}{args} did not raise {exc.__name__}")


def setup_models() -> None:
    models = WORK / "models"
    for sub in ("diffusion_models/happyhorse", "text_encoders", "vae"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    (models / "diffusion_models" / "happyhorse" / "dit.safetensors").write_bytes(b"x")
    (models / "diffusion_models" / "other.safetensors").write_bytes(b"x")
    (models / "vae" / "wan.safetensors").write_bytes(b"x")
    (models / "vae" / "notes.txt").write_bytes(b"x")                  # not a model extension
    outside = WORK / "outside.safetensors"
    outside.write_bytes(b"x")
    link = models / "vae" / "escape.safetensors"
    if not link.is_symlink():
        link.symlink_to(outside)
    # a Hugging Face cache: snapshots/<rev>/distill/<files> are links to blobs/<hash>; models/.../distill links
    # to the snapshot folder
    blobs, snap = WORK / "hf" / "blobs", WORK / "hf" / "snapshots" / "rev" / "distill"
    blobs.mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    for i, name in enumerate([*sorted(set(index["weight_map"].values())), "model.safetensors.index.json"]):
        blob = blobs / f"hash{i}"
        blob.write_text(json.dumps(index) if name.endswith(".json") else "x")
        if not (snap / name).is_symlink():
            (snap / name).symlink_to(blob)
    distill = models / "diffusion_models" / "happyhorse" / "distill"
    if not distill.is_symlink():
        distill.symlink_to(snap, target_is_directory=True)
    for folder in ("diffusion_models", "text_encoders", "vae"):
        folder_paths.folder_names_and_paths[folder] = ([str(models / folder)], folder_paths.supported_pt_extensions)
    folder_paths.filename_list_cache.clear()


@check
def devices_are_comfys():
    assert bridge.torch_device() == mm.get_torch_device() == torch.device("cpu")
    assert bridge.offload_device() == mm.unet_offload_device()
    assert bridge.intermediate_device() == mm.intermediate_device()


@check
def lists_model_folders():
    assert bridge.list_models("vae") == ["escape.safetensors", "wan.safetensors"]
    assert bridge.list_happyhorse_models() == ["happyhorse/distill/ (sharded)", "happyhorse/dit.safetensors",
                                               "other.safetensors"], bridge.list_happyhorse_models()
    assert bridge.list_models("text_encoders") == []
    expect_raises(ValueError, bridge.list_models, "upscale_models")


@check
def model_path_follows_links_and_stays_inside():
    models = WORK / "models"
    got = bridge.model_path("diffusion_models", "happyhorse/dit.safetensors")
    assert got == os.path.abspath(models / "diffusion_models/happyhorse/dit.safetensors"), got
    assert bridge.model_path("vae", "escape.safetensors") == os.path.abspath(models / "vae/escape.safetensors")
    folder = bridge.model_path("diffusion_models", "happyhorse/distill/ (sharded)")
    assert folder == os.path.abspath(models / "diffusion_models/happyhorse/distill"), folder
    expect_raises(ValueError, bridge.model_path, "vae", "../vae/wan.safetensors")
    expect_raises(ValueError, bridge.model_path, "vae", str(WORK / "models/vae/wan.safetensors"))
    expect_raises(FileNotFoundError, bridge.model_path, "vae", "missing.safetensors")


@check
def progress_reaches_comfy_hook():
    calls = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: calls.append((v, t, p, node_id)))
    try:
        prog = bridge.ComfyProgress(4, node_id="7")
        prog(1, 4)
        prog(2, 4, preview=torch.rand(1, 8, 6, 3))
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    assert calls[0] == (1, 4, None, "7"), calls
    fmt, img, size = calls[1][2]
    assert (fmt, img.size, size, calls[1][3]) == ("JPEG", (6, 8), 512, "7"), calls[1]


@check
def interrupt_check_raises_comfys_exception():
    bridge.interrupt_check()                                   # not interrupted: no-op
    mm.interrupt_current_processing(True)
    expect_raises(mm.InterruptProcessingException, bridge.interrupt_check)
    assert not mm.processing_interrupted()


@check
def wrapped_model_is_managed():
    module = torch.nn.Linear(16, 16)
    patcher = bridge.wrap_model(module)
    assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
    assert patcher.size == 16 * 16 * 4 + 16 * 4 and patcher.model is module
    assert bridge.wrap_model(module, size_bytes=123).size == 123
    bridge.load_models([patcher])
    assert any(m.model is patcher for m in mm.current_loaded_models)
    mm.unload_all_models()
    assert not any(m.model is patcher for m in mm.current_loaded_models)


if __name__ == "__main__":
    setup_models()
    report()
