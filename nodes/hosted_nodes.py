"""Hosted HappyHorse 1.0 nodes (category HappyHorse/API): the original model on Alibaba Cloud Model Studio.

Text-to-video, first-frame image-to-video, reference-to-video (1-9 pictures), video edit, and Fetch
Task (an existing task id, e.g. after Cancel). Each returns the same native outputs as the local
pipeline: VIDEO for SaveVideo, IMAGE frames for upscalers / interpolation, AUDIO, the frame rate, and
an info text (task id, usage, warnings). The API key is never a widget (see happyhorse_core.hosted.keys);
no request is made until the node runs. The protocol lives in happyhorse_core.hosted.
"""
from __future__ import annotations

from ..happyhorse_core.hosted import spec

from .comfy_bridge import io
from .hosted_common import (API_CATEGORY, common_inputs, output_inputs, outputs, prompt_input, run_fetch, run_generate,
                            size_inputs, TRANSPORTS)

KEY_NOTE = (" Needs a Model Studio API key in $DASHSCOPE_API_KEY or ComfyUI/user/dashscope_api_key.txt (never a "
            "widget). Billed per generated second; Cancel stops waiting and names the task id.")


def _transport_input() -> io.Combo.Input:
    return io.Combo.Input("media_transport", options=TRANSPORTS, default=TRANSPORTS[0],
                          tooltip="How local pictures reach the service: a base64 data URL (gateway docs; no official "
                                  "page confirms it) or Model Studio temporary storage (documented, Beijing only).")


def _image_inputs(count: int, first_required: bool) -> list:
    return [io.Image.Input(f"image_{i}", optional=not (first_required and i == 1),
                           tooltip=f"Reference picture {i}: name it in the prompt as [Image {i}] (or character{i}).")
            for i in range(1, count + 1)]


class TextToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAPITextToVideo", display_name="HappyHorse 1.0 API Text To Video",
            category=API_CATEGORY,
            description=("happyhorse-1.0-t2v on Model Studio: a prompt -> video with sound, 3-15 s, 720P/1080P."
                         + KEY_NOTE),
            inputs=[prompt_input(), *size_inputs(ratio=True, duration=True), *common_inputs()],
            outputs=outputs(), hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, prompt, resolution, ratio, duration, seed, watermark, region, base_url, unconfirmed_options,
                max_download_mb, images_output) -> io.NodeOutput:
        def make(media):
            return spec.HostedRequest("t2v", prompt, resolution, ratio, duration, seed, watermark,
                                      unconfirmed=unconfirmed_options)
        return run_generate(make, cls.hidden.unique_id, region, base_url, max_download_mb, images_output)


class ImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAPIImageToVideo", display_name="HappyHorse 1.0 API Image To Video (first frame)",
            category=API_CATEGORY,
            description=("happyhorse-1.0-i2v: the clip starts on your picture (>= 300 px each side, aspect 1:2.5 to "
                         "2.5:1); the output shape follows the picture, so there is no ratio." + KEY_NOTE),
            inputs=[io.Image.Input("first_frame", tooltip="One picture (the first of a batch is not picked for you)."),
                    prompt_input(required=False), *size_inputs(ratio=False, duration=True), *common_inputs(),
                    _transport_input()],
            outputs=outputs(), hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, first_frame, prompt, resolution, duration, seed, watermark, region, base_url,
                unconfirmed_options, max_download_mb, images_output, media_transport) -> io.NodeOutput:
        def make(media):
            url = media.image(first_frame, "first_frame", "first_frame", media_transport, spec.MODELS["i2v"],
                              unconfirmed_options)
            return spec.HostedRequest("i2v", prompt, resolution, None, duration, seed, watermark, first_frame=url,
                                      unconfirmed=unconfirmed_options)
        return run_generate(make, cls.hidden.unique_id, region, base_url, max_download_mb, images_output)


class ReferenceToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAPIReferenceToVideo", display_name="HappyHorse 1.0 API Reference To Video",
            category=API_CATEGORY,
            description=("happyhorse-1.0-r2v: 1-9 reference pictures (short side >= 400 px) of people or things that "
                         "should appear; name them in the prompt in connection order, as [Image 1].. (newer docs) or "
                         "character1.. (older docs) - the prompt is sent unchanged." + KEY_NOTE),
            inputs=[prompt_input(), *_image_inputs(9, first_required=True), *size_inputs(ratio=True, duration=True),
                    *common_inputs(), _transport_input()],
            outputs=outputs(), hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, prompt, resolution, ratio, duration, seed, watermark, region, base_url, unconfirmed_options,
                max_download_mb, images_output, media_transport, **images) -> io.NodeOutput:
        def make(media):
            refs = [media.image(images[f"image_{i}"], "reference_image", f"image_{i}", media_transport,
                                spec.MODELS["r2v"], unconfirmed_options)
                    for i in range(1, 10) if images.get(f"image_{i}") is not None]
            return spec.HostedRequest("r2v", prompt, resolution, ratio, duration, seed, watermark, references=refs,
                                      unconfirmed=unconfirmed_options)
        return run_generate(make, cls.hidden.unique_id, region, base_url, max_download_mb, images_output)


class VideoEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAPIVideoEdit", display_name="HappyHorse 1.0 API Video Edit",
            category=API_CATEGORY,
            description=("happyhorse-1.0-video-edit: changes a source video (3-60 s, MP4/MOV; the first 15 s are "
                         "edited) as the prompt says, optionally guided by 0-5 reference pictures. A local video goes "
                         "through Model Studio temporary storage (Beijing only); otherwise give a public video_url."
                         + KEY_NOTE),
            inputs=[prompt_input(),
                    io.Video.Input("video", optional=True, tooltip="A local source video (needs temporary storage)."),
                    io.String.Input("video_url", default="", tooltip="Or a public https:// URL of the source video "
                                    "(used when 'video' is not connected)."),
                    *_image_inputs(5, first_required=False),
                    io.Combo.Input("audio_setting", options=list(spec.AUDIO_SETTINGS), default="auto",
                                   tooltip="auto: the model decides the sound; origin: keep the source's audio."),
                    io.Combo.Input("resolution", options=list(spec.RESOLUTIONS), default="1080P",
                                   tooltip="Output tier; billed per input + output second."),
                    *common_inputs(),
                    io.Combo.Input("media_transport", options=TRANSPORTS, default=TRANSPORTS[1],
                                   tooltip="Temporary storage (Beijing only) is the only documented way for a local "
                                           "video; pictures may also go as data URLs.")],
            outputs=outputs(), hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, prompt, video_url, audio_setting, resolution, seed, watermark, region, base_url,
                unconfirmed_options, max_download_mb, images_output, media_transport, video=None,
                **images) -> io.NodeOutput:
        model = spec.MODELS["edit"]

        def make(media):
            if video is not None:
                src = media.video(video, media_transport, model, unconfirmed_options)
            elif video_url.strip():
                src = video_url.strip()
            else:
                raise spec.RequestError("video edit needs a source: connect 'video' or put a public https:// URL "
                                        "in 'video_url'")
            refs = [media.image(images[f"image_{i}"], "edit_reference", f"image_{i}", media_transport, model,
                                unconfirmed_options)
                    for i in range(1, 6) if images.get(f"image_{i}") is not None]
            return spec.HostedRequest("edit", prompt, resolution, None, None, seed, watermark, audio_setting,
                                      video=src, references=refs, unconfirmed=unconfirmed_options)
        return run_generate(make, cls.hidden.unique_id, region, base_url, max_download_mb, images_output)


class FetchTask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HappyHorseAPIFetchTask", display_name="HappyHorse 1.0 API Fetch Task",
            category=API_CATEGORY,
            description=("Polls an existing task id (from a cancelled run's error or another node's info) and returns "
                         "its clip; creates nothing, costs nothing more. Tasks and result links last 24 h." + KEY_NOTE),
            inputs=[io.String.Input("task_id", default="", tooltip="The id the error or info text named."),
                    io.Combo.Input("region", options=[*spec.REGIONS, spec.CUSTOM_REGION],
                                   default=next(iter(spec.REGIONS)), tooltip="The region the task was created in."),
                    io.String.Input("base_url", default="", tooltip="Only for 'custom base URL'."),
                    *output_inputs()],
            outputs=outputs(), hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, task_id, region, base_url, max_download_mb, images_output) -> io.NodeOutput:
        return run_fetch(task_id, cls.hidden.unique_id, region, base_url, max_download_mb, images_output)


NODES = [TextToVideo, ImageToVideo, ReferenceToVideo, VideoEdit, FetchTask]
