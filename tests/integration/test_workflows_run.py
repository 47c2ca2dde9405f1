"""Every shipped workflow runs in a real ComfyUI on the tiny weights and writes a correct mp4; Cancel
stops a run promptly; bad graphs fail with our messages and leave the server healthy; the shipped files
are what scripts/build_workflows.py makes from the live /object_info.

Only widget values change for the CPU (1 s at 192x128 except the default workflow and the upscale chain,
fewer steps, smaller SR target), never the graph or the file names: the tiny weights are installed under the
shipped names (workflow_runs.install_release_layouts). Workflows that keep the user's recording are checked
for it: the mp4's sound is the original voice (correlation with the input file) and lasts as long as the
video. Per-workflow times go to the terminal summary.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from workflow_runs import (DOCUMENTED_NAMES, FRAME_S, LOADER_FILE_WIDGETS, expected_frames,  # first: puts scripts/
                           install_inputs, install_tiny_models, mp4_files, mp4_outputs, node_id, read_mp4,  # on
                           set_widgets, shipped_api, voice_match)  # sys.path

from build_workflows import OUT_DIRS, build_all, stale_files  # noqa: E402
from workflow_specs import ASSETS, DEFAULT_WORKFLOW, VOICE_TRACK  # noqa: E402
from comfy_harness import REPO, TIMINGS, place_file  # noqa: E402
from comfy_ws import ComfyWS  # noqa: E402
from comfyui_server import ComfyUIValidationError  # noqa: E402
from happyhorse_core.testing.tiny_models import DIT_FILES, TEXT_ENCODER_DIR, WAN22_VAE_FILE  # noqa: E402

pytestmark = pytest.mark.integration

WORKFLOWS = sorted(p for p in (REPO / "workflows").glob("*.json")
                   if not p.stem.startswith("hh_api_"))  # hosted API workflows: test_hosted_api_in_comfy.py
# 1 s at a small custom size: the default workflow covers the 256p preset; the others test their own nodes
SMALL = {"HappyHorseEmptyLatent": {"seconds": 1, "resolution": "custom", "width": 192, "height": 128}}


@dataclass
class Run:
    size: tuple[int, int]  # mp4 width, height
    seconds: int
    shrink: dict = field(default_factory=dict)  # {class_type: {widget: value}}
    original_voice: bool = False  # the mp4 must carry the input recording


# SR runs: the SR size depends only on the target class and the aspect: a 64x64 base and the 540p target
# give 512x512 (1080p from 448x256 = 1920x1088 took 221 s on 2 busy cores)
SR_SMALL = {"HappyHorseEmptyLatent": {**SMALL["HappyHorseEmptyLatent"], "width": 64, "height": 64},
            "HappyHorseSuperResolution": {"resolution": "540p", "steps": 2}}

# RUNS order is the run order: the upscale chain runs right after the default workflow and finds its
# sampler and decoder outputs in ComfyUI's cache (same node ids and widgets), so only the upscale runs.
RUNS = {
    DEFAULT_WORKFLOW: Run((448, 256), 2),  # the default, exactly as shipped
    "HappyHorse Frames into a Native Upscaler": Run((896, 512), 2),  # as shipped: 2x lanczos of 448x256
    "HappyHorse Image to Video 256p": Run((192, 128), 1, SMALL),  # the 16:9 start image is centre-cropped to 3:2
    "HappyHorse Base Model with CFG 256p": Run((192, 128), 1, {**SMALL, "HappyHorseSampler": {"steps": 2}}),
    "HappyHorse Low VRAM fp8 and Block Swap 256p": Run((192, 128), 1, {**SMALL, "HappyHorseBlockSwap": {
        "blocks_on_device": 4}}),  # tiny: 8 blocks
    "HappyHorse Lip Sync to Your Voice 256p": Run((192, 128), 1, SMALL, original_voice=True),
    # MODEL + core LoRA loader + SamplerCustomAdvanced
    "HappyHorse Native MODEL with LoRA and Core Sampler 256p": Run((192, 128), 1, SMALL),
    "HappyHorse Text to Video 1080p with SR": Run((512, 512), 1, SR_SMALL),
    "HappyHorse Base Model and SR 1080p": Run((512, 512), 1, {**SR_SMALL, "HappyHorseSampler": {"steps": 2}}),
    "HappyHorse Image to Video 1080p with SR": Run((512, 512), 1, SR_SMALL),
    "HappyHorse Talking Photo 1080p": Run((512, 512), 1, SR_SMALL, original_voice=True),
}


@pytest.fixture(scope="session")
def tiny_info(comfy) -> dict:
    """Tiny model files and input media in the server's tree; /object_info read afterwards."""
    t0 = time.monotonic()
    install_tiny_models(comfy.models_dir)
    install_inputs(comfy.base_dir / "input")
    TIMINGS["tiny models + inputs placed (s)"] = time.monotonic() - t0
    return comfy.object_info()


# ----------------------------------------------------------------------------- every workflow
def run_order(paths: list) -> list:
    """Known workflows in RUNS order, then any new file (whose test then fails asking for an entry)."""
    rank = {name: i for i, name in enumerate(RUNS)}
    return sorted(paths, key=lambda p: (rank.get(p.stem, len(rank)), p.name))


@pytest.mark.parametrize("path", run_order(WORKFLOWS), ids=lambda p: p.stem)
def test_workflow_runs_to_mp4(path, comfy, tiny_info):
    run = RUNS.get(path.stem)
    assert run is not None, f"{path.name} is new: add its expected size and CPU shrink to RUNS"
    result = comfy.run_prompt(shipped_api(path.stem, tiny_info, run.shrink), timeout=1800)
    TIMINGS[f"workflow {path.stem} (s)"] = result["seconds"]
    files = mp4_outputs(comfy, result)
    assert len(files) == 1, result["outputs"]
    info = read_mp4(files[0])
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac"), info
    assert info["fps"] == 25, info
    assert (info["width"], info["height"]) == run.size, info
    assert info["frames"] == expected_frames(run.seconds), info
    assert abs(info["video_s"] - info["audio_s"]) <= FRAME_S + 1e-6, info
    if run.original_voice:
        corr = voice_match(files[0], ASSETS / VOICE_TRACK)
        TIMINGS[f"workflow {path.stem}: correlation of the mp4 sound with the recording"] = corr
        assert corr > 0.9, f"the mp4 does not carry the original recording (best correlation {corr:.3f})"


# ----------------------------------------------------------------------------- cancel
def test_cancel_stops_the_sampler_within_a_step_and_the_next_run_works(comfy, tiny_info):
    api = shipped_api("HappyHorse Base Model with CFG 256p", tiny_info, {**SMALL, "HappyHorseSampler": {"steps": 200, "seed": 7}})
    sampler = node_id(api, "HappyHorseSampler")
    before = mp4_files(comfy.base_dir / "output")
    with ComfyWS(comfy.port, comfy.client_id) as ws:
        pid = comfy.queue_prompt(api)

        def step_done(n):
            return lambda e: (e.get("type") == "progress" and e["data"].get("prompt_id") == pid
                              and e["data"].get("node") == sampler and e["data"].get("value", 0) >= n)

        assert ws.wait_for(step_done(1), timeout=300) is not None, f"no sampler progress:\n{comfy.log_tail()}"
        t1 = time.monotonic()
        assert ws.wait_for(step_done(2), timeout=120) is not None, comfy.log_tail()
        t0 = time.monotonic()
        step_s = t0 - t1
        comfy.interrupt()
        end = ws.wait_for(lambda e: e.get("type") in ("execution_interrupted", "execution_error", "execution_success")
                          and e["data"].get("prompt_id") == pid, timeout=120)
        latency = time.monotonic() - t0
    TIMINGS["cancel: one base step with CFG (s)"] = step_s
    TIMINGS["cancel: /interrupt -> execution_interrupted (s)"] = latency
    assert end is not None and end["type"] == "execution_interrupted", end
    assert end["data"].get("node_id") == sampler, end
    entry = comfy.wait_for(pid, timeout=60)
    assert [m[0] for m in entry["status"]["messages"]].count("execution_interrupted") == 1, entry["status"]
    # the sampler checks for Cancel before every step: at most the rest of one step (two forwards with CFG);
    # the margin covers step times that vary several-fold on shared CPUs
    assert latency < 2 * step_s + 10, f"Cancel took {latency:.1f} s; one step takes {step_s:.1f} s"
    assert mp4_files(comfy.base_dir / "output") == before, "an interrupted run wrote a video"
    api[sampler]["inputs"]["steps"] = 2  # same graph, fewer steps
    result = comfy.run_prompt(api, timeout=600)
    assert len(mp4_outputs(comfy, result)) == 1, result["outputs"]


# ----------------------------------------------------------------------------- bad graphs
def _mismatched_latents(api: dict, info: dict) -> str:
    latent = node_id(api, "HappyHorseEmptyLatent")
    api["900"] = {"class_type": "HappyHorseEmptyLatent", "inputs": {**api[latent]["inputs"], "seconds": 3}}
    api[latent]["inputs"]["seconds"] = 2
    api[node_id(api, "HappyHorseSampler")]["inputs"]["audio_latent"] = ["900", 1]
    return "HappyHorseSampler"


def _sr_model_in_sampler(api: dict, info: dict) -> str:
    set_widgets(api, "HappyHorseModelLoader", model_name=DIT_FILES["sr_1080p"], variant="sr_1080p")
    return "HappyHorseSampler"


def _text_encoder_without_tokenizer(api: dict, info: dict) -> str:
    set_widgets(api, "HappyHorseTextEncoderLoader", encoder_name="t5gemma_no_tokenizer/model.safetensors")
    return "HappyHorseTextEncoderLoader"


def _wan_file_as_dit(api: dict, info: dict) -> str:
    set_widgets(api, "HappyHorseModelLoader", model_name="happyhorse/wan2.2_vae_misplaced.safetensors")
    return "HappyHorseModelLoader"


BAD_GRAPHS = [  # (what, edit, words our message must contain)
    ("audio latent of a 3 s clip, video latent of a 2 s clip", _mismatched_latents,
     ["does not match the video latent", "same HappyHorse Empty Latent"]),
    ("SR model connected to the sampler", _sr_model_in_sampler, ["super-resolution model", "HappyHorse Super-Resolution"]),
    ("text encoder folder without tokenizer files", _text_encoder_without_tokenizer,
     ["no tokenizer", "tokenizer.json", "google/t5gemma-9b-9b-ul2"]),
    ("Wan2.2 VAE file picked as the DiT", _wan_file_as_dit, ["is not a HappyHorse/MagiHuman DiT", "adapter.*"]),
]


def _place_bad_files(comfy) -> None:
    tiny_te = comfy.models_dir / "text_encoders" / TEXT_ENCODER_DIR
    bad_te = comfy.models_dir / "text_encoders" / "t5gemma_no_tokenizer"
    for name in ("model.safetensors", "config.json"):
        place_file(tiny_te / name, bad_te / name)
    place_file(comfy.models_dir / "vae" / WAN22_VAE_FILE,
               comfy.models_dir / "diffusion_models" / "happyhorse" / "wan2.2_vae_misplaced.safetensors")


def test_bad_graphs_fail_with_our_message_and_the_server_stays_healthy(comfy, tiny_info):
    _place_bad_files(comfy)
    info = comfy.object_info()
    problems = []
    for what, edit, words in BAD_GRAPHS:
        api = shipped_api(DEFAULT_WORKFLOW, info, SMALL)
        failing_type = edit(api, info)
        result = comfy.run_prompt(api, timeout=300, raise_on_error=False)
        err = result["error"] or {}
        msg = err.get("exception_message", "")
        if result["status"] != "error" or err.get("node_type") != failing_type:
            problems.append(f"{what}: expected an error in {failing_type}, got {result['status']} {err}")
        elif missing := [w for w in words if w not in msg]:
            problems.append(f"{what}: message lacks {missing}: {msg}")
        TIMINGS[f"bad graph: {what} (s)"] = result["seconds"]

    api = shipped_api(DEFAULT_WORKFLOW, info, {"HappyHorseEmptyLatent": {"seconds": 0}})
    with pytest.raises(ComfyUIValidationError) as rejected:
        comfy.queue_prompt(api)
    errors = rejected.value.body["node_errors"][node_id(api, "HappyHorseEmptyLatent")]["errors"]
    assert any(e["extra_info"].get("input_name") == "seconds" for e in errors), errors

    good = shipped_api(DEFAULT_WORKFLOW, info, {**SMALL, "HappyHorseSampler": {"seed": 4242}})
    result = comfy.run_prompt(good, timeout=600)
    assert len(mp4_outputs(comfy, result)) == 1, result["outputs"]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- shipped files
def test_shipped_workflows_match_a_fresh_build_from_live_object_info(comfy):
    """A node schema change (widget added, renamed, reordered, new default) without running
    `python scripts/build_workflows.py` fails here."""
    built = build_all(comfy.object_info())
    stale = stale_files(built)
    assert not stale, f"stale workflow files {stale}: run `python scripts/build_workflows.py`"
    for sub in OUT_DIRS:
        assert sorted(p.stem for p in (REPO / sub).glob("*.json")) == sorted(built), sub


def test_loaders_only_name_documented_files():
    """Every loader file name in a shipped workflow is listed, with folder and link, in its Note."""
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        (note,) = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
        for node in wf["nodes"]:
            if node["type"] in LOADER_FILE_WIDGETS:
                name = node["widgets_values"][0]
                assert name in DOCUMENTED_NAMES, (path.name, name)
                assert f"`{name}`" in note["widgets_values"][0], f"{path.name}: the Note does not list {name}"
