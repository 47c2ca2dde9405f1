"""The shipped UI workflows are well-formed without a server: links agree with both ends, ids and
counters are consistent, `order` is an execution order, nodes do not overlap and sit inside their
group, every file has the Markdown Note with a download link per model file, a template-browser
picture and randomized seeds, and the example inputs exist. (Running them:
tests/integration/test_workflows_run.py.)"""
from __future__ import annotations

import json
import re
import sys
import wave
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from workflow_specs import ASSETS, FILES, START_IMAGE, VOICE_TRACK  # noqa: E402

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
LOCAL = [p for p in WORKFLOWS if not p.stem.startswith("hh_api_")]  # hosted API ones: tests/test_hosted_workflows.py
TITLE_H = 30
TEMPLATE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")  # what ComfyUI lists


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _box(node: dict) -> tuple[float, float, float, float]:
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_H, x + w, y + h


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_the_use_cases_are_shipped():
    assert {p.stem for p in WORKFLOWS} >= {
        "HappyHorse Text to Video 256p", "HappyHorse Image to Video 256p", "HappyHorse Base Model with CFG 256p",
        "HappyHorse Text to Video 1080p with SR", "HappyHorse Low VRAM fp8 and Block Swap 256p",
        "HappyHorse Lip Sync to Your Voice 256p", "HappyHorse Frames into a Native Upscaler",
        "HappyHorse Talking Photo 1080p", "HappyHorse Image to Video 1080p with SR",
        "HappyHorse Base Model and SR 1080p"}


def test_workflows_live_in_one_template_folder_only():
    """ComfyUI's template browser lists every folder of a pack named like TEMPLATE_FOLDERS: with two, each
    template shows twice."""
    assert [name for name in TEMPLATE_FOLDERS if (REPO / name).is_dir()] == ["workflows"]


@pytest.mark.parametrize("path", LOCAL, ids=lambda p: p.stem)
def test_each_workflow_has_a_template_picture(path):
    """The browser asks for /api/workflow_templates/<pack>/<name>.jpg (frontend 1.32: mediaSubtype 'jpg')."""
    jpg = path.with_suffix(".jpg")
    assert jpg.is_file(), f"{jpg.name} is missing: python scripts/render_thumbnails.py"
    data = jpg.read_bytes()
    assert data[:3] == b"\xff\xd8\xff" and len(data) > 2000, jpg.name
    assert {p.stem for p in (REPO / "workflows").glob("*.jpg")} <= {p.stem for p in WORKFLOWS}


def test_example_inputs_are_shipped():
    png = (ASSETS / START_IMAGE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with wave.open(str(ASSETS / VOICE_TRACK)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert 4.5 <= seconds <= 6.0, seconds  # covers the 5 s talking-photo and lip-sync clips


@pytest.mark.parametrize("path", LOCAL, ids=lambda p: p.stem)
def test_seeds_are_randomized(path):
    wf = _load(path)
    controls = [v for n in wf["nodes"] for v in n["widgets_values"] if v in ("fixed", "increment", "decrement",
                                                                           "randomize")]
    assert controls and set(controls) == {"randomize"}, (path.name, controls)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_links_ids_and_counters_agree(path):
    wf = _load(path)
    assert wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] == max(nodes)
    link_ids = [link[0] for link in wf["links"]]
    assert len(set(link_ids)) == len(link_ids) and wf["last_link_id"] == max(link_ids)
    for lid, src, src_slot, dst, dst_slot, ltype in wf["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert lid in out["links"] and inp["link"] == lid, (path.name, lid)
        assert out["type"] == inp["type"] == ltype, (path.name, lid)
    for node in wf["nodes"]:
        for inp in node["inputs"]:
            assert inp["link"] is None or inp["link"] in link_ids, (path.name, node["id"], inp["name"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_order_is_an_execution_order(path):
    wf = _load(path)
    order = {n["id"]: n["order"] for n in wf["nodes"]}
    assert sorted(order.values()) == list(range(len(order)))
    for _, src, _, dst, _, _ in wf["links"]:
        assert order[src] < order[dst], (path.name, src, dst)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_layout_nodes_apart_and_inside_groups(path):
    wf = _load(path)
    boxes = {n["id"]: _box(n) for n in wf["nodes"]}
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            assert not _overlap(boxes[a], boxes[b]), (path.name, a, b)
    groups = [(g["title"], (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                            g["bounding"][1] + g["bounding"][3])) for g in wf["groups"]]
    for i, (ta, a) in enumerate(groups):
        for tb, b in groups[i + 1:]:
            assert not _overlap(a, b), (path.name, ta, tb)
    for node in wf["nodes"]:
        inside = [t for t, g in groups if _overlap(boxes[node["id"]], g)]
        assert len(inside) <= 1, (path.name, node["id"], inside)
        for t, g in groups:
            if t in inside:
                box = boxes[node["id"]]
                assert g[0] <= box[0] and box[2] <= g[2] and g[1] <= box[1] and box[3] <= g[3], (path.name, t)


@pytest.mark.parametrize("path", LOCAL, ids=lambda p: p.stem)
def test_note_lists_files_links_and_folders(path):
    wf = _load(path)
    (note,) = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    text = note["widgets_values"][0]
    assert text.startswith("# HappyHorse") and "## Model files" in text
    loaders = {n["widgets_values"][0] for n in wf["nodes"]
               if n["type"].endswith("Loader") or n["type"] == "LoraLoaderModelOnly"}
    listed = [f for f in FILES.values() if f"pick `{f.name}`" in text]
    assert {f.name for f in listed} == loaders, (path.name, loaders)
    for f in listed:
        assert f"]({f.url})" in text and f"`ComfyUI/models/{f.folder}/`" in text, (path.name, f.name)
    for url in re.findall(r"\]\((https?://[^)]+)\)", text):
        assert url.startswith("https://huggingface.co/") and " " not in url, url
    for name in (START_IMAGE, VOICE_TRACK):
        uses = any(n["type"] in ("LoadImage", "LoadAudio") and n["widgets_values"][0] == name for n in wf["nodes"])
        assert uses == (f"`{name}`" in text), (path.name, name)
    saves = [n for n in wf["nodes"] if n["type"] == "SaveVideo"]
    assert len(saves) == 1 and saves[0]["widgets_values"][1:] == ["mp4", "h264"], path.name
    (create,) = [n for n in wf["nodes"] if n["type"] == "CreateVideo"]
    assert create["widgets_values"] == [25.0], path.name
