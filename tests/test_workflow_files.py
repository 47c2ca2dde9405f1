"""The shipped UI workflows are well-formed without a server: links agree with both ends, ids and
counters are consistent, `order` is an execution order, nodes do not overlap and sit inside their
group, and every file has the Note. (Running them: tests/integration/test_workflows_run.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
LOCAL = [p for p in WORKFLOWS if not p.stem.startswith("hh_api_")]  # hosted API ones: tests/test_hosted_workflows.py
TITLE_H = 30


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _box(node: dict) -> tuple[float, float, float, float]:
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_H, x + w, y + h


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_the_use_cases_are_shipped():
    assert {p.stem for p in WORKFLOWS} >= {"hh_t2v_distilled_256p", "hh_i2v", "hh_base_cfg", "hh_t2v_sr1080",
                                           "hh_low_vram", "hh_lipsync_audio", "hh_upscale_chain"}


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
def test_note_lists_files_and_sources(path):
    wf = _load(path)
    (note,) = [n for n in wf["nodes"] if n["type"] == "Note"]
    text = note["widgets_values"][0]
    assert "Model files" in text and "GAIR/daVinci-MagiHuman" in text and "google/t5gemma-9b-9b-ul2" in text
    assert "stabilityai/stable-audio-open-1.0" in text and "happyhorse_core.tools.extract_sao_vae" in text
    saves = [n for n in wf["nodes"] if n["type"] == "SaveVideo"]
    assert len(saves) == 1 and saves[0]["widgets_values"][1:] == ["mp4", "h264"], path.name
    (create,) = [n for n in wf["nodes"] if n["type"] == "CreateVideo"]
    assert create["widgets_values"] == [25.0], path.name
