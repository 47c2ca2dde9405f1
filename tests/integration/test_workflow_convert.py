"""workflow_convert.ui_to_api: small hand-made graphs (no server), then the native UI fixture
converted and run on the real server to an mp4."""
from __future__ import annotations

import json

import pytest

from comfy_harness import REPO, TIMINGS, check_mp4
from workflow_convert import ui_to_api, widget_inputs

FIXTURE = REPO / "tests" / "ui" / "fixtures" / "native_av_tiny.json"

# object_info entries in the server's format, trimmed to what the converter reads
INFO = {
    "Seeded": {"input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"control_after_generate": True}],
                                      "steps": ["INT", {"default": 4}], "mode": [["a", "b"], {}]},
                         "optional": {"scale": ["FLOAT", {"forceInput": True}], "note": ["STRING", {}]}},
               "input_order": {"required": ["model", "seed", "steps", "mode"], "optional": ["scale", "note"]}},
    "Source": {"input": {"required": {}}, "input_order": {"required": []}},
}


def node(nid, ntype, inputs=(), widgets=None, mode=0, outputs=()):
    return {"id": nid, "type": ntype, "mode": mode, "inputs": list(inputs), "outputs": list(outputs),
            "widgets_values": widgets}


def test_widget_order_skips_forced_inputs_and_marks_control():
    assert widget_inputs(INFO["Seeded"]) == [("seed", True), ("steps", False), ("mode", False), ("note", False)]


def test_control_value_skipped_and_links_resolved_through_reroute_and_bypass():
    wf = {"nodes": [
        node(1, "Source"),
        node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}]),
        node(3, "Seeded", mode=4, inputs=[{"name": "model", "type": "MODEL", "link": 2}], widgets=[1, "fixed", 2, "a", ""]),
        node(4, "Seeded", inputs=[{"name": "model", "type": "MODEL", "link": 3},
                                  {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 4}],
             widgets=[42, "randomize", 9, "b", "hi"]),
        node(5, "PrimitiveNode", widgets=[7, "fixed"]),
        node(6, "Note", widgets=["text"]),
    ], "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 4, 0, "MODEL"], [4, 5, 0, 4, 1, "INT"]]}
    assert ui_to_api(wf, INFO) == {
        "1": {"class_type": "Source", "inputs": {}},
        "4": {"class_type": "Seeded", "inputs": {"model": ["1", 0], "seed": 42, "steps": 7, "mode": "b", "note": "hi"}},
    }


def test_muted_source_drops_input_and_dict_widgets_map_by_name():
    wf = {"nodes": [node(1, "Source", mode=2),
                    node(2, "Seeded", inputs=[{"name": "model", "type": "MODEL", "link": 1}],
                         widgets={"seed": 3, "steps": 2, "mode": "a", "note": ""})],
          "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "MODEL"}]}
    assert ui_to_api(wf, INFO) == {"2": {"class_type": "Seeded", "inputs": {"seed": 3, "steps": 2, "mode": "a", "note": ""}}}


def test_unknown_node_type_and_subgraphs_are_clear_errors():
    with pytest.raises(ValueError, match="node 1 has type 'Nope'"):
        ui_to_api({"nodes": [node(1, "Nope")], "links": []}, INFO)
    with pytest.raises(ValueError, match="subgraphs"):
        ui_to_api({"nodes": [], "links": [], "definitions": {"subgraphs": [{"id": "x"}]}}, INFO)


@pytest.mark.integration
def test_native_fixture_converted_runs_to_mp4(comfy, native_vaes):
    prompt = ui_to_api(json.loads(FIXTURE.read_text()), comfy.object_info())
    result = comfy.run_prompt(prompt, timeout=300)
    TIMINGS["converted UI fixture run (s)"] = result["seconds"]
    files = comfy.output_files(result)
    assert len(files) == 1, result["outputs"]
    check_mp4(files[0], frames=5, width=32, height=32)
