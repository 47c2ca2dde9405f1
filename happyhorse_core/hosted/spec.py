"""What a hosted HappyHorse 1.0 request may contain, and the JSON body for each of the four models.

Facts come from the public Model Studio (DashScope) API reference, summarised with confidence tags in
shared/design/HOSTED_API.md. The earliest official pages are the strict reading (5 ratios, 10 MB images);
later gateway pages list 4 more ratios and 20 MB images. Requests are checked against the strict reading
unless ``unconfirmed=True``; the user's prompt is never rewritten (r2v image tokens such as
``character1`` or ``[Image 1]`` pass through unchanged).

Every value is checked here, before anything is sent, so a bad widget costs no request and no money.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

MODELS = {
    "t2v": "happyhorse-1.0-t2v",
    "i2v": "happyhorse-1.0-i2v",
    "r2v": "happyhorse-1.0-r2v",
    "edit": "happyhorse-1.0-video-edit",
}
REGIONS = {  # region label -> base URL (the model, the endpoint and the key must be in the same region)
    "Singapore (dashscope-intl)": "https://dashscope-intl.aliyuncs.com/api/v1",
    "Beijing (dashscope)": "https://dashscope.aliyuncs.com/api/v1",
}
CUSTOM_REGION = "custom base URL"
CREATE_PATH = "/services/aigc/video-generation/video-synthesis"

RESOLUTIONS = ("720P", "1080P")
RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")          # official pages
RATIOS_UNCONFIRMED = ("4:5", "5:4", "9:21", "21:9")     # gateway pages only
DURATION_RANGE = (3, 15)                                 # whole seconds (t2v / i2v / r2v)
SEED_MAX = 2147483647
AUDIO_SETTINGS = ("auto", "origin")                      # video edit only
PROMPT_LIMIT, PROMPT_LIMIT_CJK = 5000, 2500              # characters; longer prompts are cut by the server
REFERENCES = {"r2v": (1, 9), "edit": (0, 5)}             # reference images per model (min, max)


class RequestError(ValueError):
    """A request that must not be sent; the message names the widget and the allowed values."""


@dataclass
class HostedRequest:
    """One generation as the user asked for it. media URLs are final strings (http(s)://, data:, oss://)."""

    mode: str                                 # t2v / i2v / r2v / edit
    prompt: str = ""
    resolution: str = "1080P"
    ratio: Optional[str] = "16:9"             # t2v / r2v only; the others follow their input
    duration: Optional[int] = 5               # t2v / i2v / r2v only; edit keeps the input length (<= 15 s)
    seed: Optional[int] = None                # None: the server picks one
    watermark: bool = False
    audio_setting: Optional[str] = None       # edit only: auto / origin
    first_frame: Optional[str] = None         # i2v
    video: Optional[str] = None               # edit
    references: list[str] = field(default_factory=list)   # r2v (1-9) / edit (0-5)
    unconfirmed: bool = False                 # allow values only gateway pages list

    @property
    def model(self) -> str:
        return MODELS[self.mode]


def is_cjk(ch: str) -> bool:
    """Chinese / Japanese / Korean ideographs, kana and hangul (the 'Chinese characters' of the limit)."""
    o = ord(ch)
    return (0x2E80 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF
            or 0x20000 <= o <= 0x2FA1F)


def prompt_warning(prompt: str) -> Optional[str]:
    """A sentence for the user when the service may cut the prompt, else None.

    The docs give '5000 non-Chinese or 2500 Chinese characters' without saying how mixed text counts, so
    both readings are checked: Chinese characters weigh two (weighted length > 5000), or any Chinese
    character puts the whole prompt under the 2500 limit."""
    n = len(prompt)
    cjk = sum(1 for c in prompt if is_cjk(c))
    weighted = n + cjk
    if weighted > PROMPT_LIMIT or (cjk and n > PROMPT_LIMIT_CJK):
        keep = PROMPT_LIMIT_CJK if cjk else PROMPT_LIMIT
        return (f"the prompt has {n} characters ({cjk} Chinese/CJK); the service keeps about the first {keep} "
                f"(limit {PROMPT_LIMIT} non-Chinese / {PROMPT_LIMIT_CJK} Chinese characters) and silently drops "
                "the rest: shorten it if the end matters")
    return None


def check(req: HostedRequest) -> list[str]:
    """Raise RequestError for a value the service would reject; return warnings (truncated prompt)."""
    if req.mode not in MODELS:
        raise RequestError(f"unknown mode {req.mode!r}: expected one of {sorted(MODELS)}")
    if req.resolution not in RESOLUTIONS:
        raise RequestError(f"resolution must be one of {RESOLUTIONS}, got {req.resolution!r}")
    if req.mode in ("t2v", "r2v", "edit") and not req.prompt.strip():
        raise RequestError(f"{req.model} needs a prompt: write what should happen in 'prompt'")
    _check_ratio(req)
    _check_duration(req)
    if req.seed is not None and not (isinstance(req.seed, int) and 0 <= req.seed <= SEED_MAX):
        raise RequestError(f"seed must be a whole number 0..{SEED_MAX}, got {req.seed!r}")
    if req.audio_setting is not None and (req.mode != "edit" or req.audio_setting not in AUDIO_SETTINGS):
        raise RequestError(f"audio_setting is for video edit only, one of {AUDIO_SETTINGS}; got {req.audio_setting!r}")
    _check_media(req)
    warning = prompt_warning(req.prompt)
    return [warning] if warning else []


def _check_ratio(req: HostedRequest) -> None:
    if req.mode in ("i2v", "edit"):
        if req.ratio is not None:
            raise RequestError(f"{req.model} takes no ratio: the output follows the input's shape")
        return
    allowed = RATIOS + (RATIOS_UNCONFIRMED if req.unconfirmed else ())
    if req.ratio not in allowed:
        extra = (f" ({req.ratio} appears only in gateway docs: switch on 'unconfirmed_options' to send it anyway)"
                 if req.ratio in RATIOS_UNCONFIRMED else "")
        raise RequestError(f"ratio must be one of {allowed}, got {req.ratio!r}{extra}")


def _check_duration(req: HostedRequest) -> None:
    if req.mode == "edit":
        if req.duration is not None:
            raise RequestError("video edit takes no duration: the output is as long as the input (first 15 s)")
        return
    lo, hi = DURATION_RANGE
    if not (isinstance(req.duration, int) and lo <= req.duration <= hi):
        raise RequestError(f"duration must be whole seconds {lo}..{hi}, got {req.duration!r}")


def _check_media(req: HostedRequest) -> None:
    for url in [req.first_frame, req.video, *req.references]:
        if url is not None and not url.startswith(("https://", "http://", "data:", "oss://")):
            raise RequestError(f"media URL must start with https://, http://, data: or oss://, got {url[:40]!r}")
    if (req.first_frame is not None) != (req.mode == "i2v"):
        raise RequestError("a first frame is needed for (and only for) image-to-video: connect 'first_frame'")
    if (req.video is not None) != (req.mode == "edit"):
        raise RequestError("a source video is needed for (and only for) video edit: connect 'video' or set 'video_url'")
    lo, hi = REFERENCES.get(req.mode, (0, 0))
    if not lo <= len(req.references) <= hi:
        raise RequestError(f"{req.model} takes {lo}..{hi} reference images, got {len(req.references)}: "
                           + ("connect fewer images" if len(req.references) > hi else "connect at least one image"))


def build_body(req: HostedRequest) -> dict:
    """The create-task JSON body (check() first). Keys appear only where the model documents them."""
    inp: dict = {}
    if req.prompt or req.mode != "i2v":
        inp["prompt"] = req.prompt
    media = []
    if req.first_frame is not None:
        media.append({"type": "first_frame", "url": req.first_frame})
    if req.video is not None:
        media.append({"type": "video", "url": req.video})
    media += [{"type": "reference_image", "url": url} for url in req.references]
    if media:
        inp["media"] = media
    params: dict = {"resolution": req.resolution}
    if req.ratio is not None:
        params["ratio"] = req.ratio
    if req.duration is not None:
        params["duration"] = req.duration
    if req.seed is not None:
        params["seed"] = req.seed
    params["watermark"] = bool(req.watermark)
    if req.audio_setting is not None:
        params["audio_setting"] = req.audio_setting
    return {"model": req.model, "input": inp, "parameters": params}


def uses_oss(req: HostedRequest) -> bool:
    """True when a media URL points at Model Studio temporary storage (needs the OSS-resolve header)."""
    return any(u.startswith("oss://") for u in [req.first_frame or "", req.video or "", *req.references])


def base_url_for(region: str, custom: str = "") -> str:
    """The API base (ending in /api/v1) for a region label, or the user's custom base URL."""
    if region == CUSTOM_REGION:
        url = custom.strip().rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise RequestError("region is 'custom base URL' but 'base_url' is not an http(s):// URL: enter the "
                               "gateway's API base, e.g. https://example.com/api/v1")
        return url
    if region not in REGIONS:
        raise RequestError(f"region must be one of {[*REGIONS, CUSTOM_REGION]}, got {region!r}")
    return REGIONS[region]
