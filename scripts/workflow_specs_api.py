"""The shipped workflows for the hosted HappyHorse 1.0 nodes (Alibaba Cloud Model Studio), built by
scripts/build_workflows.py next to the local ones of workflow_specs.py.

They need no model files, so their note is not the file list: a Markdown note (the frontend's
MarkdownNote) says how to get an API key, where to put it and where the prices are (a link only; prices
change, so no figures here).
"""
from __future__ import annotations

from dataclasses import dataclass

from workflow_specs import PROMPT, START_IMAGE, Node, Workflow

PRICING_URL = "https://www.alibabacloud.com/help/en/model-studio/billing-for-model-studio"
MODELS_URL = "https://www.alibabacloud.com/help/en/model-studio/models"
KEY_URL = "https://www.alibabacloud.com/help/en/model-studio/get-api-key"
API_REF_URL = "https://www.alibabacloud.com/help/en/model-studio/happyhorse-text-to-video-api-reference"


@dataclass
class HostedWorkflow(Workflow):
    """A workflow whose note is Markdown text of its own (build_workflows uses note_text() / note_type)."""

    markdown: str = ""
    note_type = "MarkdownNote"
    note_title = "Read me: API key and pricing"

    def note_text(self) -> str:
        return self.markdown


def _note(title: str, what: str) -> str:
    return f"""# {title}

{what}

## 1. Get an API key
- Sign in to the Alibaba Cloud **Model Studio** console and create an API key ([how]({KEY_URL})).
- Choose the region first: **Singapore** (international) or **Beijing**. The key, the model and the
  endpoint must be in the same region; pick the same one in the node's `region` widget.

## 2. Give the key to ComfyUI (never in a widget)
- Set the environment variable `DASHSCOPE_API_KEY` before starting ComfyUI, **or**
- put the key alone on one line in `ComfyUI/user/dashscope_api_key.txt`.

Widgets are saved in workflow files and in the video's metadata, so the key is never one.

## 3. What it costs
Billing is per **second of generated video**, with a price per resolution tier (720P, 1080P); a failed
task produces no video. Current prices: [Model Studio billing]({PRICING_URL}) and the
[model list / price table]({MODELS_URL}).

## Notes
- A job usually takes 1-5 minutes; the node shows the task state.
- **Cancel** stops waiting at once. A task that is already running still finishes and is billed: the
  error names its task id; paste it into **HappyHorse 1.0 API Fetch Task** within 24 h to get the video.
- Unchanged inputs reuse ComfyUI's cached result (no new bill); change `seed` for another take.
- Protocol reference: [HappyHorse text-to-video API]({API_REF_URL}).
"""


def api_t2v() -> Workflow:
    return HostedWorkflow(
        "hh_api_t2v", "HappyHorse 1.0 (hosted): text to video + audio", "", [],
        [Node("api", "HappyHorseAPITextToVideo", 1, {"prompt": PROMPT, "resolution": "720P", "duration": 5},
              width=420),
         Node("save", "SaveVideo", 2, {"filename_prefix": "video/hh_api_t2v", "format": "mp4", "codec": "h264"},
              {"video": ("api", "video")}, width=420)],
        groups={1: "1. Generate on Model Studio", 2: "2. Save"},
        markdown=_note("HappyHorse 1.0 (hosted): text to video + audio",
                       "The original HappyHorse 1.0 model on Alibaba Cloud Model Studio writes a clip with sound "
                       "from the prompt (3-15 s, 720P or 1080P). The node's outputs are native: `video` for "
                       "SaveVideo, plus `images`, `audio` and `fps` for upscalers or CreateVideo."))


def api_i2v() -> Workflow:
    return HostedWorkflow(
        "hh_api_i2v", "HappyHorse 1.0 (hosted): first frame to video + audio", "", [],
        [Node("image", "LoadImage", 1, {"image": START_IMAGE}, title="First frame"),
         Node("api", "HappyHorseAPIImageToVideo", 2, {"prompt": PROMPT, "resolution": "720P", "duration": 5},
              {"first_frame": ("image", "IMAGE")}, width=420),
         Node("save", "SaveVideo", 3, {"filename_prefix": "video/hh_api_i2v", "format": "mp4", "codec": "h264"},
              {"video": ("api", "video")}, width=420)],
        inputs=[f"{START_IMAGE} (any picture of at least 300x300 px; pick yours in Load Image)"],
        groups={1: "1. First frame", 2: "2. Generate on Model Studio", 3: "3. Save"},
        markdown=_note("HappyHorse 1.0 (hosted): first frame to video + audio",
                       "The clip starts on your picture (at least 300 px each side, aspect 1:2.5 to 2.5:1); the "
                       "output shape follows the picture. The picture is sent inside the request as a base64 data "
                       "URL (or, with `media_transport`, through Model Studio temporary storage)."))


API_WORKFLOWS = [api_t2v, api_i2v]
