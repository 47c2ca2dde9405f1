"""What the hosted-API nodes share: the widgets every node has, and the ComfyUI side of a run.

Like the other node files it takes comfy_api's `io` for the schemas from comfy_bridge.py; everything
else of ComfyUI is reached inside functions, through comfy_bridge.py (user/temp folders, VIDEO from/to bytes, progress text).
The run side turns ComfyUI's Cancel into the core's ``cancelled()`` (the interrupt flag is consumed
here, so the error that names the task id is what the user sees, not a bare "interrupted"), shows the
task state on the node's progress bar and as progress text, reads the key at run time only, and turns
the core's clip into native outputs: VIDEO (the downloaded file, for SaveVideo without re-encoding),
IMAGE frames, AUDIO and the frame rate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..happyhorse_core.hosted import media_in, spec
from ..happyhorse_core.hosted.keys import load_api_key
from ..happyhorse_core.hosted.run import fetch, generate, RunOptions
from ..happyhorse_core.hosted.transport import Transport
from ..happyhorse_core.hosted.upload import upload

from . import comfy_bridge as cb
from .comfy_bridge import io
from .types import CATEGORY

API_CATEGORY = f"{CATEGORY}/API"
TRANSPORTS = ["data URL (base64)", "temporary storage (oss://, Beijing)"]
IMAGE_OUTPUTS = ["all frames", "first frame only"]
EXPECTED_S = 180.0     # typical job time, only for the progress bar's pace (no percentage is documented)


# ----------------------------------------------------------------------------- widgets
def prompt_input(required: bool = True) -> io.String.Input:
    return io.String.Input("prompt", multiline=True, default="",
                           tooltip=f"What happens in the clip. Up to {spec.PROMPT_LIMIT} characters "
                                   f"({spec.PROMPT_LIMIT_CJK} "
                                   "Chinese); longer prompts are cut by the service (the node warns)."
                                   + ("" if required else " Optional for image-to-video."))


def size_inputs(ratio: bool, duration: bool) -> list:
    out = [io.Combo.Input("resolution", options=list(spec.RESOLUTIONS), default="1080P",
                          tooltip="Output tier; billing is per second and per tier.")]
    if ratio:
        out.append(io.Combo.Input("ratio", options=[*spec.RATIOS, *spec.RATIOS_UNCONFIRMED], default="16:9",
                                  tooltip="Aspect ratio. 4:5, 5:4, 9:21 and 21:9 appear only in gateway docs: they "
                                          "need 'unconfirmed_options'."))
    if duration:
        out.append(io.Int.Input("duration", default=5, min=spec.DURATION_RANGE[0], max=spec.DURATION_RANGE[1],
                                tooltip="Seconds of video (3-15); billed per second."))
    return out


def common_inputs() -> list:
    return [
        io.Int.Input("seed", default=0, min=0, max=spec.SEED_MAX, control_after_generate=True,
                     tooltip="Change it for another take. Unchanged inputs reuse the cached result; with 'control "
                             "after generate' on randomize, every queue is a new (billed) task, so keep it fixed."),
        io.Boolean.Input("watermark", default=False, tooltip="Add the service's 'Happy Horse' mark bottom right."),
        io.Combo.Input("region", options=[*spec.REGIONS, spec.CUSTOM_REGION], default=next(iter(spec.REGIONS)),
                       tooltip="Endpoint. The API key must come from the same region (Model Studio console)."),
        io.String.Input("base_url", default="", tooltip="Only for 'custom base URL': a compatible gateway's API base "
                        "ending in /api/v1. Never put a key here (widgets are saved in workflows)."),
        io.Boolean.Input("unconfirmed_options", default=False,
                         tooltip="Allow values only gateway docs list (4 extra ratios, 20 MB images)."),
        *output_inputs(),
    ]


def output_inputs() -> list:
    return [
        io.Int.Input("max_download_mb", default=512, min=1, max=4096,
                     tooltip="Refuse results larger than this (a 15 s 1080P clip is far smaller)."),
        io.Combo.Input("images_output", options=IMAGE_OUTPUTS, default=IMAGE_OUTPUTS[0],
                       tooltip="'images' output: every frame (for upscalers; a 15 s 1080P clip is about 9 GB of RAM "
                               "as float32) or only the first frame (enough when you just save the video)."),
    ]


def outputs() -> list:
    return [io.Video.Output(display_name="video"), io.Image.Output(display_name="images"),
            io.Audio.Output(display_name="audio"), io.Float.Output(display_name="fps"),
            io.String.Output(display_name="info")]


# ----------------------------------------------------------------------------- run side
class Cancel:
    """cancelled() for the core: consumes ComfyUI's interrupt flag, remembers it."""

    def __init__(self):
        self.hit = False

    def __call__(self) -> bool:
        import comfy.model_management as mm
        if not self.hit:
            try:
                mm.throw_exception_if_processing_interrupted()
            except mm.InterruptProcessingException:
                self.hit = True
        return self.hit


def progress_for(node_id: str, cancel: Cancel) -> Callable[[str, str, float], None]:
    """(task_id, status, seconds) -> progress bar (paced on EXPECTED_S, max 95 % until done) + text."""
    import comfy.model_management as mm
    import comfy.utils
    bar = comfy.utils.ProgressBar(100, node_id=node_id)

    def update(task_id: str, status: str, seconds: float) -> None:
        """status: a task state, or DONE once the video is downloaded and decoded."""
        value = {"PENDING": 2, "SUCCEEDED": 95, "DONE": 100}.get(status, min(94, 5 + int(89 * seconds / EXPECTED_S)))
        try:
            bar.update_absolute(value, 100)
        except mm.InterruptProcessingException:   # the progress hook checks Cancel too: keep the task id path
            cancel.hit = True
        done = status == "DONE"
        send_text(node_id, f"task {task_id}: done" if done else f"task {task_id}: {status} ({seconds:.0f} s)")

    return update


def send_text(node_id: str, text: str) -> None:
    cb.progress_text(node_id, text)


def api_key() -> str:
    return load_api_key(cb.user_directory())


def workdir() -> Path:
    return Path(cb.temp_directory()) / "happyhorse_api"


def run_options(region: str, base_url: str, max_download_mb: int, images_output: str):
    url = spec.base_url_for(region, base_url)
    hint = "" if region == spec.CUSTOM_REGION else f" ({region})"
    return RunOptions(url, max_download_mb=max_download_mb, region_hint=hint,
                      first_frame_only=images_output == IMAGE_OUTPUTS[1])


def node_outputs(outcome) -> io.NodeOutput:
    """Outcome -> (VIDEO, IMAGE [T, H, W, 3], AUDIO {"waveform": [1, C, N], ...}, fps, info)."""
    clip = outcome.clip
    if clip.waveform is not None:
        audio = {"waveform": clip.waveform.unsqueeze(0).contiguous(), "sample_rate": clip.sample_rate}
    else:   # keep downstream AUDIO consumers working: silence as long as the clip
        n = int(round(clip.seconds * 44100))            # clip.seconds counts every frame of the file
        audio = {"waveform": torch.zeros(1, 2, n), "sample_rate": 44100}
    video = cb.video_from_bytes(outcome.mp4)
    return io.NodeOutput(video, clip.frames, audio, float(clip.fps), outcome.info())


def run_generate(make_request: Callable, node_id: str, region: str, base_url: str, max_download_mb: int,
                 images_output: str) -> io.NodeOutput:
    """Key -> make_request(media) -> create -> poll (progress, Cancel) -> outputs. make_request gets a
    Media helper that turns pictures / videos into URLs. Errors keep the core's wording (key redacted)."""
    opts = run_options(region, base_url, max_download_mb, images_output)
    key = api_key()
    req = make_request(Media(key, opts.base_url))
    cancel = Cancel()
    progress = progress_for(node_id, cancel)
    for warning in spec.check(req):
        send_text(node_id, f"warning: {warning}")
    outcome = generate(req, key, opts, workdir(), cancelled=cancel, progress=progress,
                       on_task=lambda tid: send_text(node_id, f"task {tid} created"))
    progress(outcome.task_id, "DONE", 0.0)
    return node_outputs(outcome)


class Media:
    """Pictures and videos -> media URLs, by data URL or by Model Studio temporary storage."""

    def __init__(self, key: str, base_url: str):
        self._key, self.base_url = key, base_url

    def image(self, image: torch.Tensor, role: str, what: str, transport: str, model: str,
              unconfirmed: bool) -> str:
        if image.ndim == 4 and image.shape[0] != 1:
            raise spec.RequestError(f"{what} is a batch of {image.shape[0]} pictures: connect one picture "
                                    "(e.g. Image From Batch)")
        if transport == TRANSPORTS[0]:
            return media_in.image_data_url(image, role, what, unconfirmed)
        data, name = media_in.image_file_bytes(image, role, what)
        return self._upload(model, data, name, "image/png")

    def video(self, video, transport: str, model: str, unconfirmed: bool) -> str:
        """A ComfyUI VIDEO -> oss:// URL (only temporary storage takes a local video)."""
        if transport == TRANSPORTS[0]:
            raise spec.RequestError("a local video cannot be sent as a data URL (the service does not take base64 "
                                    "video): set 'media_transport' to temporary storage (Beijing region only), or "
                                    "leave 'video' unconnected and put a public https:// URL in 'video_url'")
        data = cb.video_to_mp4_bytes(video)          # in memory: the node files never write files themselves
        media_in.check_video_bytes(data, unconfirmed)
        return self._upload(model, data, "source.mp4", "video/mp4")

    def _upload(self, model: str, data: bytes, name: str, mime: str) -> str:
        return upload(Transport(self._key), self.base_url, model, data, name, mime)


def run_fetch(task_id: str, node_id: str, region: str, base_url: str, max_download_mb: int,
              images_output: str) -> io.NodeOutput:
    opts = run_options(region, base_url, max_download_mb, images_output)
    cancel = Cancel()
    progress = progress_for(node_id, cancel)
    outcome = fetch(task_id, api_key(), opts, workdir(), cancelled=cancel, progress=progress)
    progress(outcome.task_id, "DONE", 0.0)
    return node_outputs(outcome)
