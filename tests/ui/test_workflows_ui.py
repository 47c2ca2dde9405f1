"""Every workflow the pack ships loads in the real ComfyUI frontend (headless Chromium): no missing-node
dialog, every node type registered and rendered, and the frontend's API prompt equals what
tests/integration/workflow_convert.py makes of the same file. Screenshots: .cache/artifacts/ui/."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from comfy_harness import REPO, TIMINGS, artifact_path
from workflow_convert import ui_to_api

pytestmark = pytest.mark.ui

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NATIVE_FIXTURE = FIXTURES / "native_av_tiny.json"


def shipped_workflows() -> list[Path]:
    """workflows/*.json: the pack's one template folder (tests/test_workflow_files.py checks there is no other)."""
    return sorted(REPO.glob("workflows/*.json"))


SHIPPED = shipped_workflows()


def node_types(workflow: dict) -> list[str]:
    return sorted({n["type"] for n in workflow["nodes"]})


def strip_meta(prompt: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in prompt.items()}


def server_inputs_only(prompt: dict, object_info: dict) -> dict:
    """Drop inputs the node's schema does not declare: values of frontend-only widgets (e.g. LoadAudio's
    player, 'audioUI': ''), which the frontend serialises and the server ignores."""
    out = {}
    for nid, node in prompt.items():
        declared = {name for section in object_info[node["class_type"]]["input"].values() for name in section}
        out[nid] = {**node, "inputs": {k: v for k, v in node["inputs"].items() if k in declared}}
    return out


def check_workflow_in_ui(path: Path, comfy, ui_smoke, tmp_path: Path) -> None:
    workflow = json.loads(path.read_text())
    shot = artifact_path("ui", f"{path.parent.name}__{path.stem}.png")
    dumped = tmp_path / "frontend_prompt.json"
    t0 = time.monotonic()
    summary = ui_smoke.run(path, node_types(workflow), screenshot=shot, dump_prompt=dumped)
    TIMINGS[f"UI load {path.name} (s)"] = time.monotonic() - t0
    print(f"screenshot: {shot}")
    assert summary["ok"], json.dumps(summary, indent=1)
    assert summary["missing"] == [] and not summary["missingDialog"], summary
    info = comfy.object_info()
    frontend = server_inputs_only(strip_meta(json.loads(dumped.read_text())), info)
    assert ui_to_api(workflow, info) == frontend


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_workflow_loads_in_ui(path, comfy, native_vaes, ui_smoke, tmp_path):
    check_workflow_in_ui(path, comfy, ui_smoke, tmp_path)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_fixture_workflow_loads_in_ui(path, comfy, native_vaes, ui_smoke, tmp_path):
    """Proves the harness on native-only workflows: native_av_tiny (Reroute, Note, converted widget,
    control value; runnable) and converter_edge_cases (bypassed node behind a Reroute, muted source,
    legacy PrimitiveNode; only loaded)."""
    check_workflow_in_ui(path, comfy, ui_smoke, tmp_path)


def test_bogus_node_type_is_reported_missing(comfy, ui_smoke, tmp_path):
    """Negative self-test: a node type nobody registers must show up as missing (and the dialog)."""
    workflow = json.loads(NATIVE_FIXTURE.read_text())
    workflow["nodes"][-1]["type"] = "HappyHorseNoSuchNode"
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps(workflow))
    summary = ui_smoke.run(bogus, [], screenshot=artifact_path("ui", "selftest__bogus_node.png"))
    assert summary["returncode"] == 1, summary
    assert summary["missing"] == ["HappyHorseNoSuchNode"], summary
    assert summary["missingDialog"], summary["dialogs"]
