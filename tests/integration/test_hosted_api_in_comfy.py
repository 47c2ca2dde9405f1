"""The hosted HappyHorse 1.0 nodes inside the real ComfyUI server, against the local DashScope mock.

The session's server is shared with the other integration tests, so per-test environment variables
cannot reach it (ComfyUIServer takes `env=` only at start). The key therefore comes from the second
documented source, ComfyUI/user/dashscope_api_key.txt in the server's base directory, and the mock's URL
from the node's 'custom base URL' widget; the $DASHSCOPE_API_KEY path is covered by
tests/test_hosted_request.py. The shipped hh_api_t2v / hh_api_i2v run with only widget values changed.
"""
from __future__ import annotations

import json
import os
import time

import av
import pytest

from workflow_runs import mp4_outputs, set_widgets, write_png  # first: puts scripts/ on sys.path

from comfy_harness import REPO, TIMINGS  # noqa: E402
from happyhorse_core.testing.dashscope_mock import DashScopeMock, fake_api_key  # noqa: E402
from happyhorse_core.testing.dashscope_routes import CREATE  # noqa: E402
from workflow_convert import ui_to_api  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.api]

FILE_KEY = fake_api_key("comfy")
HOSTED_NODES = ["HappyHorseAPITextToVideo", "HappyHorseAPIImageToVideo", "HappyHorseAPIReferenceToVideo",
                "HappyHorseAPIVideoEdit", "HappyHorseAPIFetchTask"]
FIRST_FRAME = "hh_api_first_frame.png"


@pytest.fixture(scope="module")
def mock():
    with DashScopeMock() as m:
        yield m


@pytest.fixture(scope="module")
def key(comfy):
    """The key the server's nodes will send: $DASHSCOPE_API_KEY if the developer has one set, else ours."""
    path = comfy.base_dir / "user" / "dashscope_api_key.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FILE_KEY + "\n")
    yield os.environ.get("DASHSCOPE_API_KEY", "").strip() or FILE_KEY
    path.unlink(missing_ok=True)


def shipped(comfy, name: str, mock, **widgets) -> dict:
    api = ui_to_api(json.loads((REPO / "workflows" / f"{name}.json").read_text()), comfy.object_info())
    node_type = "HappyHorseAPITextToVideo" if name == "hh_api_t2v" else "HappyHorseAPIImageToVideo"
    return set_widgets(api, node_type, region="custom base URL", base_url=mock.base_url, **widgets)


def test_nodes_are_registered_without_touching_the_network(comfy, mock):
    mock.requests.clear()
    info = comfy.object_info()
    assert comfy.import_failures() == [], comfy.log_tail()
    for name in HOSTED_NODES:
        node = info[name]
        assert node["category"] == "HappyHorse/API" and len(node["description"]) > 80, name
        assert node["output"] == ["VIDEO", "IMAGE", "AUDIO", "FLOAT", "STRING"], name
        inputs = {k: v for section in node["input"].values() for k, v in section.items()}
        assert not [k for k in inputs if "key" in k.lower()], f"{name} must not have a key widget"
        for inp, spec in inputs.items():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if spec[0] in ("INT", "FLOAT", "BOOLEAN", "COMBO") or isinstance(spec[0], list):
                assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
    assert mock.requests == []                       # /object_info made no request


def test_shipped_t2v_workflow_runs_against_the_mock(comfy, mock, key):
    mock.requests.clear()
    mock.arm("ok", polls=2)
    api = shipped(comfy, "hh_api_t2v", mock, duration=3, seed=11)
    result = comfy.run_prompt(api, timeout=300)
    TIMINGS["hosted t2v against the mock (s)"] = result["seconds"]
    (create,) = mock.calls("POST", CREATE)
    body = json.loads(create.body)
    (node,) = [n for n in api.values() if n["class_type"] == "HappyHorseAPITextToVideo"]
    assert body == {"model": "happyhorse-1.0-t2v", "input": {"prompt": node["inputs"]["prompt"]},
                    "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 3, "seed": 11,
                                   "watermark": False}}
    assert create.headers["authorization"] == f"Bearer {key}" and create.headers["x-dashscope-async"] == "enable"
    assert "authorization" not in mock.calls("GET", "/files/")[0].headers
    (mp4,) = mp4_outputs(comfy, result)
    with av.open(str(mp4)) as box:                   # SaveVideo kept the service's streams
        vs, aus = box.streams.video[0], box.streams.audio[0]
        assert (vs.codec_context.name, aus.codec_context.name) == ("h264", "aac")
        assert vs.average_rate == 24 and (vs.codec_context.width, vs.codec_context.height) == (64, 48)
        assert sum(1 for _ in box.decode(video=0)) == 24
        meta = json.dumps(dict(box.metadata))
    for text in (mp4.read_bytes().decode("latin-1"), meta, json.dumps(comfy.get_json("/history")),
                 comfy.log_text()):
        assert key not in text                        # not in the video, its metadata, the history, the log


def test_shipped_i2v_workflow_sends_the_picture_as_a_data_url(comfy, mock, key):
    write_png(comfy.base_dir / "input" / FIRST_FRAME, 400, 304)
    mock.requests.clear()
    mock.arm("ok", polls=1, audio=False)
    api = set_widgets(shipped(comfy, "hh_api_i2v", mock, duration=3), "LoadImage", image=FIRST_FRAME)
    result = comfy.run_prompt(api, timeout=300)
    body = json.loads(mock.calls("POST", CREATE)[0].body)
    (media,) = body["input"]["media"]
    assert media["type"] == "first_frame" and media["url"].startswith("data:image/png;base64,")
    assert "ratio" not in body["parameters"] and body["model"] == "happyhorse-1.0-i2v"
    (mp4,) = mp4_outputs(comfy, result)
    with av.open(str(mp4)) as box:
        assert not box.streams.audio and sum(1 for _ in box.decode(video=0)) == 24


def test_cancel_stops_polling_and_the_error_names_the_task(comfy, mock, key):
    mock.requests.clear()
    mock.arm("never_finishes")
    api = shipped(comfy, "hh_api_t2v", mock, duration=4, seed=12)
    pid = comfy.queue_prompt(api)
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:      # PENDING on the 1st poll, RUNNING from the 2nd
        time.sleep(0.2)
        running = [t.id for t in mock.tasks.values() if t.arm.scenario == "never_finishes" and t.state == "RUNNING"]
    (task_id,) = running
    t0 = time.monotonic()
    comfy.interrupt()
    entry = comfy.wait_for(pid, timeout=60)
    latency = time.monotonic() - t0
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors, entry["status"]
    msg = errors[0]["exception_message"]
    assert f"stopped polling task {task_id}" in msg and "RUNNING cannot be cancelled" in msg, msg
    assert "Fetch Task" in msg and "billed" in msg, msg
    assert key not in json.dumps(entry)
    assert latency < 10, latency
    assert len(mock.calls("POST", f"/api/v1/tasks/{task_id}/cancel")) == 1
    n = len(mock.calls("GET", f"/api/v1/tasks/{task_id}"))
    time.sleep(3)
    assert len(mock.calls("GET", f"/api/v1/tasks/{task_id}")) == n   # nothing polls any more


# ----------------------------------------------------------------------------- the other nodes (API graphs)
def _widgets(mock, **extra) -> dict:
    return {"resolution": "720P", "seed": 5, "watermark": False, "region": "custom base URL",
            "base_url": mock.base_url, "unconfirmed_options": False, "max_download_mb": 64,
            "images_output": "first frame only", **extra}


def _save(src: str, prefix: str) -> dict:
    return {"class_type": "SaveVideo", "inputs": {"video": [src, 0], "filename_prefix": f"video/{prefix}",
                                                  "format": "mp4", "codec": "h264"}}


def _png_pixels(data: bytes):
    import io

    with av.open(io.BytesIO(data)) as box:
        return next(box.decode(video=0)).to_ndarray(format="rgb24")


def test_reference_to_video_uploads_pictures_to_temporary_storage(comfy, mock, key):
    for name, size in (("hh_api_ref_a.png", (400, 400)), ("hh_api_ref_b.png", (480, 400))):
        write_png(comfy.base_dir / "input" / name, *size)
    mock.requests.clear()
    mock.arm("ok", polls=1)
    api = {"1": {"class_type": "LoadImage", "inputs": {"image": "hh_api_ref_a.png"}},
           "2": {"class_type": "LoadImage", "inputs": {"image": "hh_api_ref_b.png"}},
           "3": {"class_type": "HappyHorseAPIReferenceToVideo",
                 "inputs": {"prompt": "[Image 1] hands a cup to character2", "image_1": ["1", 0], "image_2": ["2", 0],
                            "ratio": "1:1", "duration": 3,
                            **_widgets(mock, media_transport="temporary storage (oss://, Beijing)")}},
           "4": _save("3", "hh_api_r2v")}
    result = comfy.run_prompt(api, timeout=300)
    assert len(mp4_outputs(comfy, result)) == 1
    create = mock.calls("POST", CREATE)[0]
    body = json.loads(create.body)
    assert create.headers["x-dashscope-ossresourceresolve"] == "enable"
    assert body["input"]["prompt"] == "[Image 1] hands a cup to character2"
    urls = [m["url"] for m in body["input"]["media"]]
    assert [m["type"] for m in body["input"]["media"]] == ["reference_image"] * 2
    assert all(u.startswith("oss://mock/happyhorse-1.0-r2v/") for u in urls)
    shapes = [_png_pixels(mock.uploads[u[len("oss://"):]]).shape for u in urls]
    assert shapes == [(400, 400, 3), (400, 480, 3)]                 # in connection order
    assert all("authorization" not in r.headers for r in mock.calls("POST", "/oss-upload"))


def test_video_edit_sends_a_local_video_and_fetch_task_gets_it_again(comfy, mock, key):
    from happyhorse_core.testing.dashscope_mock import make_fixture
    make_fixture(comfy.base_dir / "input" / "hh_api_source.mp4", audio=True, seconds=3.0, size=(320, 320))
    mock.requests.clear()
    mock.arm("ok", polls=1)
    api = {"1": {"class_type": "LoadVideo", "inputs": {"file": "hh_api_source.mp4"}},
           "2": {"class_type": "HappyHorseAPIVideoEdit",
                 "inputs": {"prompt": "make it night", "video": ["1", 0], "video_url": "", "audio_setting": "origin",
                            **_widgets(mock, media_transport="temporary storage (oss://, Beijing)")}},
           "3": _save("2", "hh_api_edit")}
    comfy.run_prompt(api, timeout=300)
    body = json.loads(mock.calls("POST", CREATE)[0].body)
    assert body["parameters"] == {"resolution": "720P", "seed": 5, "watermark": False, "audio_setting": "origin"}
    (video,) = body["input"]["media"]
    uploaded = mock.uploads[video["url"][len("oss://"):]]
    assert video["type"] == "video" and uploaded[4:8] == b"ftyp"
    (task_id,) = [t.id for t in mock.tasks.values() if t.body is not None and t.body["model"].endswith("video-edit")]

    mock.requests.clear()
    fetch = {"1": {"class_type": "HappyHorseAPIFetchTask",
                   "inputs": {"task_id": task_id, "region": "custom base URL", "base_url": mock.base_url,
                              "max_download_mb": 64, "images_output": "all frames"}},
             "2": _save("1", "hh_api_fetch")}
    result = comfy.run_prompt(fetch, timeout=300)
    assert len(mp4_outputs(comfy, result)) == 1 and mock.calls("POST", CREATE) == []
