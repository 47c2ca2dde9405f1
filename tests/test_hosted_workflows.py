"""The shipped hosted-API workflows (hh_api_*): a Markdown note on the key and on pricing (a link, no
figures), no key anywhere in the file, the API node's VIDEO saved as an H.264 mp4. (Running them against
the mock in ComfyUI: tests/integration/test_hosted_api_in_comfy.py.)"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.api

REPO = Path(__file__).resolve().parents[1]
HOSTED = sorted((REPO / "workflows").glob("hh_api_*.json"))
API_NODES = {"HappyHorseAPITextToVideo", "HappyHorseAPIImageToVideo"}


def test_both_hosted_workflows_are_shipped():
    assert {p.stem for p in HOSTED} == {"hh_api_t2v", "hh_api_i2v"}


@pytest.mark.parametrize("path", HOSTED, ids=lambda p: p.stem)
def test_markdown_note_explains_key_and_links_pricing_without_figures(path):
    wf = json.loads(path.read_text(encoding="utf-8"))
    (note,) = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    text = note["widgets_values"][0]
    assert text.startswith("# HappyHorse 1.0 (hosted)")
    for words in ("DASHSCOPE_API_KEY", "ComfyUI/user/dashscope_api_key.txt", "Singapore", "Beijing", "same region",
                  "per **second", "https://www.alibabacloud.com/help/en/model-studio/billing-for-model-studio",
                  "Fetch Task", "24 h"):
        assert words in text, words
    assert not re.search(r"[$¥€]|USD|CNY|RMB|yuan|\d+(\.\d+)?\s*(per|/)\s*s(ec|econd)?\b", text), "price figures"


@pytest.mark.parametrize("path", HOSTED, ids=lambda p: p.stem)
def test_no_key_in_the_file_and_video_goes_to_savevideo(path):
    raw = path.read_text(encoding="utf-8")
    assert not re.search(r"sk-[A-Za-z0-9]{6,}", raw)
    wf = json.loads(raw)
    assert not [i["name"] for n in wf["nodes"] for i in n["inputs"] if "key" in i["name"].lower()]
    nodes = {n["id"]: n for n in wf["nodes"]}
    (api,) = [n for n in wf["nodes"] if n["type"] in API_NODES]
    (save,) = [n for n in wf["nodes"] if n["type"] == "SaveVideo"]
    assert save["widgets_values"][1:] == ["mp4", "h264"]
    (link,) = [lk for lk in wf["links"] if lk[3] == save["id"]]
    assert nodes[link[1]] is api and link[5] == "VIDEO"
    assert "Singapore (dashscope-intl)" in api["widgets_values"]
    assert (REPO / "example_workflows" / path.name).read_bytes() == path.read_bytes()
