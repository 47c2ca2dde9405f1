"""Generate the shipped workflows (workflows/*.json) from their compact descriptions in
scripts/workflow_specs*.py and the /object_info of a live ComfyUI with this pack.

    python scripts/build_workflows.py            # starts ComfyUI (COMFYUI_HOME or .cache/comfyui), writes
    python scripts/build_workflows.py --check    # exit 1 if a shipped file differs from a fresh build
    python scripts/build_workflows.py --object-info object_info.json   # no server

Why generated: widget values are stored positionally (widgets_values), so their order must follow each
node's schema; taking it from /object_info (workflow_convert.widget_inputs, the same rule the tests'
converter and the frontend use) keeps the files right when a node changes, and the up-to-date test
(tests/integration/test_workflows_run.py) fails when someone forgets to regenerate.

Output is the UI format the frontend saves (version 0.4): nodes with id/type/pos/size/flags/order/mode/
inputs/outputs/properties/widgets_values, links [id, from, slot, to, slot, type] and one group per
layout column, laid out left to right, and a Markdown Note (files, links, folders) at the top left.
Widgets not given in a description take the schema default; seeds get the control value "randomize"
(a new clip per run, as in ComfyUI's own templates). Only the standard library is used.

ComfyUI serves a custom node's templates from every folder named example_workflows, workflows, ... of
the pack, so the files live in workflows/ only (a second folder would list each one twice); the
template browser takes workflows/<name>.jpg as the picture (scripts/render_thumbnails.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from workflow_convert import _is_widget, widget_inputs  # noqa: E402
import workflow_specs  # noqa: E402
from workflow_specs import Node, Workflow, all_workflows, note_text  # noqa: E402

OUT_DIRS = ("workflows",)
SEED_CONTROL = "randomize"
NOTE_TYPE = "MarkdownNote"
COL_GAP, ROW_GAP, X0, Y0 = 80, 50, 40, 80
TITLE_H, SLOT_H, WIDGET_H, MULTILINE_H = 30, 22, 24, 120
DEFAULT_WIDTH = 370
LOADER_WIDTH = 440  # column 0: long file names stay readable
EXTRA_HEIGHT = {"LoadImage": 280, "SaveVideo": 300, "LoadAudio": 110}  # previews / players below widgets
NOTE_WIDTH = LOADER_WIDTH
GROUP_COLOR = "#3f789e"
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}


# ----------------------------------------------------------------------------- schema helpers
def _info(object_info: dict, ntype: str) -> dict:
    info = object_info.get(ntype)
    if info is None:
        raise ValueError(f"node type {ntype!r} is not in /object_info: is the pack (or ComfyUI core) loaded?")
    return info


def _spec(info: dict, name: str) -> list:
    for section in ("required", "optional"):
        if name in info["input"].get(section, {}):
            return info["input"][section][name]
    raise KeyError(name)


def socket_inputs(info: dict) -> list[tuple[str, str, bool]]:
    """[(name, type, optional)] of the link-only inputs, required first, as the frontend lists them."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            if not _is_widget(spec):
                out.append((name, spec[0], section == "optional"))
    return out


def widget_type(spec: list) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def default_value(ntype: str, name: str, spec: list) -> Any:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    if widget_type(spec) == "STRING":
        return ""
    raise ValueError(f"{ntype}.{name} has no default (its options depend on the user's files): give a value "
                     "in scripts/workflow_specs.py")


def widget_values(node: Node, info: dict, seed_control: str = SEED_CONTROL) -> list:
    names = [n for n, _ in widget_inputs(info)]
    unknown = sorted(set(node.widgets) - set(names))
    if unknown:
        raise ValueError(f"{node.key} ({node.type}) has no widgets {unknown}; its widgets are {names}")
    values = []
    for name, control in widget_inputs(info):
        values.append(node.widgets[name] if name in node.widgets else default_value(node.type, name, _spec(info, name)))
        if control:
            values.append(seed_control)
    return values


# ----------------------------------------------------------------------------- layout
def node_height(node: Node, info: dict) -> int:
    sockets = len(socket_inputs(info))
    rows = max(sockets, len(info["output"]))
    height = 10 + rows * SLOT_H
    for name, _ in widget_inputs(info):
        spec = _spec(info, name)
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        height += MULTILINE_H if widget_type(spec) == "STRING" and opts.get("multiline") else WIDGET_H
    return height + EXTRA_HEIGHT.get(node.type, 0)


def note_height(text: str) -> int:
    per_line = NOTE_WIDTH // 7  # characters of the monospace note font per line
    wrapped = sum(max(1, -(-len(line) // per_line)) for line in text.splitlines())
    return 20 + 16 * wrapped


def layout(items: list[tuple[Node, int, int]]) -> dict[str, tuple[int, int]]:
    """(node, width, height) -> {key: (x, y)}: columns left to right, nodes stacked in listed order."""
    widths: dict[int, int] = {}
    for node, w, _ in items:
        widths[node.col] = max(widths.get(node.col, 0), w)
    xs, x = {}, X0
    for col in sorted(widths):
        xs[col], x = x, x + widths[col] + COL_GAP
    ys: dict[int, int] = {}
    pos = {}
    for node, _, h in items:
        y = ys.get(node.col, Y0)
        pos[node.key] = (xs[node.col], y)
        ys[node.col] = y + h + TITLE_H + ROW_GAP
    return pos


def groups(wf: Workflow, items: list[tuple[Node, int, int]], pos: dict) -> list[dict]:
    out = []
    for col, title in sorted(wf.groups.items()):
        members = [(pos[n.key], w, h) for n, w, h in items if n.col == col and n.key != "note"]
        if not members:
            continue
        x0 = min(p[0] for p, _, _ in members) - 15
        y0 = min(p[1] for p, _, _ in members) - TITLE_H - 45
        x1 = max(p[0] + w for p, w, _ in members) + 15
        y1 = max(p[1] + h for p, _, h in members) + 20
        out.append({"id": len(out) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                    "color": GROUP_COLOR, "font_size": 24, "flags": {}})
    return out


# ----------------------------------------------------------------------------- graph
def _execution_order(ids: list[int], edges: list[tuple[int, int]]) -> dict[int, int]:
    indeg = {i: 0 for i in ids}
    for _, dst in edges:
        indeg[dst] += 1
    ready, order = sorted(i for i in ids if indeg[i] == 0), {}
    while ready:
        i = ready.pop(0)
        order[i] = len(order)
        for src, dst in edges:
            if src == i:
                indeg[dst] -= 1
                if indeg[dst] == 0:
                    ready.append(dst)
                    ready.sort()
    if len(order) != len(ids):
        raise ValueError("the workflow has a cycle")
    return order


def build(wf: Workflow, object_info: dict) -> dict:
    """The UI-format workflow dict for one description."""
    text = wf.note_text() if hasattr(wf, "note_text") else note_text(wf)   # hosted workflows bring their own
    note_type = getattr(wf, "note_type", NOTE_TYPE)
    note = Node("note", note_type, 0, width=NOTE_WIDTH)
    specs = [note, *wf.nodes]
    keys = [n.key for n in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{wf.name}: duplicate node keys {keys}")
    ids = {n.key: i + 1 for i, n in enumerate(specs)}
    infos = {n.key: _info(object_info, n.type) for n in wf.nodes}
    items = [(note, NOTE_WIDTH, note_height(text))]
    items += [(n, n.width or (LOADER_WIDTH if n.col == 0 else DEFAULT_WIDTH), node_height(n, infos[n.key]))
              for n in wf.nodes]
    pos = layout(items)

    seed_control = getattr(wf, "seed_control", SEED_CONTROL)  # hosted workflows keep "fixed" (each run is billed)
    nodes = {n.key: _ui_node(n, infos[n.key], ids[n.key], seed_control) for n in wf.nodes}
    links = []
    for n in wf.nodes:
        for inp_name, (src_key, out_name) in n.links.items():
            links.append(_connect(wf, nodes, infos, n, inp_name, src_key, out_name, len(links) + 1))
    order = _execution_order(list(ids.values()), [(link[1], link[3]) for link in links])

    out_nodes = [{"id": ids["note"], "type": note_type, "pos": list(pos["note"]), "size": [NOTE_WIDTH, items[0][2]],
                  "flags": {}, "order": order[ids["note"]], "mode": 0, "inputs": [], "outputs": [],
                  "properties": {}, "widgets_values": [text],
                  "title": getattr(wf, "note_title", "Read me: files and folders"), **NOTE_COLORS}]
    for n, w, h in items[1:]:
        node = nodes[n.key]
        node.update(pos=list(pos[n.key]), size=[w, h], order=order[node["id"]])
        out_nodes.append({k: node[k] for k in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs",
                                               "outputs", "properties", "widgets_values", *(["title"] if n.title else []))})
    width = max(pos[n.key][0] + w for n, w, _ in items) + X0
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-happyhorse/workflows/{wf.name}")),
            "revision": 0, "last_node_id": len(specs), "last_link_id": len(links),
            "nodes": out_nodes, "links": links, "groups": groups(wf, items, pos), "config": {},
            "extra": {"ds": {"scale": round(min(1.0, 1400 / width), 2), "offset": [40, 60]}}, "version": 0.4}


def _ui_node(n: Node, info: dict, node_id: int, seed_control: str = SEED_CONTROL) -> dict:
    inputs = [{"localized_name": name, "name": name, **({"shape": 7} if optional else {}), "type": t, "link": None}
              for name, t, optional in socket_inputs(info)]
    for name, _ in widget_inputs(info):
        inputs.append({"localized_name": name, "name": name, "type": widget_type(_spec(info, name)),
                       "widget": {"name": name}, "link": None})
    outputs = [{"localized_name": name, "name": name, "type": t, "links": []}
               for name, t in zip(info["output_name"], info["output"])]
    node = {"id": node_id, "type": n.type, "flags": {}, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": n.type}, "widgets_values": widget_values(n, info, seed_control)}
    if n.title:
        node["title"] = n.title
    return node


def _connect(wf, nodes, infos, n, inp_name, src_key, out_name, link_id) -> list:
    if src_key not in nodes:
        raise ValueError(f"{wf.name}: {n.key}.{inp_name} links from unknown node {src_key!r}")
    src_info = infos[src_key]
    if out_name not in src_info["output_name"]:
        raise ValueError(f"{wf.name}: {src_key} ({src_info['name']}) has no output {out_name!r}; "
                         f"outputs: {src_info['output_name']}")
    slot = src_info["output_name"].index(out_name)
    out_type = src_info["output"][slot]
    target = nodes[n.key]["inputs"]
    idx = next((i for i, inp in enumerate(target) if inp["name"] == inp_name and "widget" not in inp), None)
    if idx is None:
        raise ValueError(f"{wf.name}: {n.key} ({n.type}) has no socket input {inp_name!r}")
    if target[idx]["type"] != out_type:
        raise ValueError(f"{wf.name}: {n.key}.{inp_name} wants {target[idx]['type']}, "
                         f"{src_key}.{out_name} gives {out_type}")
    target[idx]["link"] = link_id
    nodes[src_key]["outputs"][slot]["links"].append(link_id)
    return [link_id, nodes[src_key]["id"], slot, nodes[n.key]["id"], idx, out_type]


# ----------------------------------------------------------------------------- files
def build_all(object_info: dict) -> dict[str, dict]:
    """{file stem: workflow dict} for every description in workflow_specs."""
    return {wf.name: build(wf, object_info) for wf in all_workflows()}


def dumps(workflow: dict) -> str:
    return json.dumps(workflow, indent=1, ensure_ascii=False) + "\n"


def stale_files(built: dict[str, dict], root: Path = REPO) -> list[str]:
    """Shipped files that differ from `built` (or are missing, or are not built any more)."""
    stale = []
    for sub in OUT_DIRS:
        present = {p.stem for p in (root / sub).glob("*.json")}
        for name in sorted(present - set(built)):
            stale.append(f"{sub}/{name}.json (no description builds it)")
        for name, wf in built.items():
            path = root / sub / f"{name}.json"
            if not path.is_file() or path.read_text(encoding="utf-8") != dumps(wf):
                stale.append(f"{sub}/{name}.json")
    return stale


def write_all(built: dict[str, dict], root: Path = REPO) -> list[Path]:
    written = []
    for sub in OUT_DIRS:
        (root / sub).mkdir(exist_ok=True)
        for name, wf in built.items():
            path = root / sub / f"{name}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(dumps(wf), encoding="utf-8")
            os.replace(tmp, path)
            written.append(path)
    return written


def live_object_info(comfy_home: str) -> dict:
    from comfyui_server import ComfyUIServer
    with tempfile.TemporaryDirectory(prefix="hh_build_workflows_") as base:
        srv = ComfyUIServer(comfy_home, custom_nodes={"ComfyUI-HappyHorse": REPO}, base_dir=base)
        with srv:
            failures = srv.import_failures()
            if failures:
                raise RuntimeError(f"the pack failed to import in ComfyUI:\n{srv.log_tail()}")
            return srv.object_info()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when a file is stale")
    ap.add_argument("--object-info", help="a saved GET /object_info JSON instead of starting ComfyUI")
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_HOME", str(REPO / ".cache" / "comfyui")),
                    help="ComfyUI home made by scripts/setup_comfyui.sh (default: $COMFYUI_HOME or .cache/comfyui)")
    args = ap.parse_args(argv)
    if args.object_info:
        info = json.loads(Path(args.object_info).read_text(encoding="utf-8"))
    else:
        info = live_object_info(args.comfyui)
    built = build_all(info)
    if args.check:
        stale = stale_files(built)
        for item in stale:
            print(f"stale: {item}")
        if stale:
            print("run: python scripts/build_workflows.py", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(built):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
