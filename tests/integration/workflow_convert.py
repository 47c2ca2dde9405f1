"""Convert a UI-format workflow (what the frontend saves: nodes / links / widgets_values) into the API
format that POST /prompt takes ({node_id: {"class_type", "inputs"}}), the way the frontend's
app.graphToPrompt() does it, so the tests can run the repo's workflows/*.json without a browser.

Widget values are matched to input names with /object_info: a node's widgets are its widget inputs
(INT, FLOAT, STRING, BOOLEAN, COMBO or an options list, without forceInput) in input_order (required,
then optional). An INT with `control_after_generate` (or, without that option, named seed/noise_seed)
is followed in widgets_values by the control value ("fixed", "randomize", ...), which is skipped.
A widget input that has a link ("converted widget") takes the link. Frontend-only nodes (Note,
MarkdownNote, Reroute, PrimitiveNode) are resolved away, muted nodes (mode 2) dropped and bypassed
nodes (mode 4) passed through by type, like the frontend does.
"""
from __future__ import annotations

from typing import Any, Optional, Union

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
NOTE_TYPES = {"Note", "MarkdownNote"}
MODE_MUTED, MODE_BYPASS = 2, 4

Source = Union[tuple[str, int], tuple[str, Any], None]   # ("link", (id, slot)) / ("value", v) / None


def _link_table(workflow: dict) -> dict[int, tuple[int, int, str]]:
    """link id -> (origin node id, origin slot, type); accepts list and dict link records."""
    table = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"], link.get("type"))
        else:
            table[link[0]] = (link[1], link[2], link[5] if len(link) > 5 else None)
    return table


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec: list) -> bool:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if spec[0] not in ("INT", "FLOAT"):
        return False
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return name in ("seed", "noise_seed")


def widget_inputs(info: dict) -> list[tuple[str, bool]]:
    """[(input name, followed by a control_after_generate value)] in widget order."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    out = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in order.get(section, []):
            spec = specs[name]
            if _is_widget(spec):
                out.append((name, _has_control_widget(name, spec)))
    return out


def _widget_values(node: dict, info: dict) -> dict[str, Any]:
    """Map widgets_values (list or dict) to input names."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    if isinstance(values, dict):
        return dict(values)
    out, i = {}, 0
    for name, control in widget_inputs(info):
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        if control and i < len(values) and values[i] in CONTROL_VALUES:
            i += 1
    return out


class _Graph:
    def __init__(self, workflow: dict):
        if workflow.get("definitions", {}).get("subgraphs"):
            raise ValueError("workflow has subgraphs: unpack them in the frontend (right-click > "
                             "Unpack Subgraph) and save again; the converter handles flat graphs only")
        if "nodes" not in workflow:
            raise ValueError("not a UI-format workflow (no 'nodes'); API-format graphs go to POST /prompt as is")
        self.nodes = {n["id"]: n for n in workflow["nodes"]}
        self.links = _link_table(workflow)

    def source(self, link_id: Optional[int], depth: int = 0) -> Source:
        """Follow a link back through Reroute / bypassed / PrimitiveNode nodes to a real output."""
        if link_id is None or link_id not in self.links:
            return None
        if depth > 100:
            raise ValueError(f"link {link_id} is part of a cycle of Reroute/bypassed nodes")
        origin_id, slot, ltype = self.links[link_id]
        origin = self.nodes.get(origin_id)
        if origin is None:
            raise ValueError(f"link {link_id} starts at node {origin_id}, which is not in the workflow")
        mode = origin.get("mode", 0)
        if origin["type"] == "PrimitiveNode":
            return ("value", (origin.get("widgets_values") or [None])[0])
        if origin["type"] == "Reroute":
            return self.source(origin["inputs"][0].get("link"), depth + 1)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            return self.source(self._bypass_input(origin, slot, ltype), depth + 1)
        return ("link", (str(origin_id), slot))

    @staticmethod
    def _bypass_input(node: dict, slot: int, ltype: Optional[str]) -> Optional[int]:
        """The input link a bypassed node passes through for output `slot`: the input at the same slot
        if its type matches the output's type, else the first linked input of that type."""
        outputs = node.get("outputs", [])
        if slot < len(outputs) and outputs[slot].get("type"):
            ltype = outputs[slot]["type"]          # a link into a Reroute is typed "*": use the output's
        inputs = node.get("inputs", [])
        if slot < len(inputs) and inputs[slot].get("type") == ltype and inputs[slot].get("link") is not None:
            return inputs[slot]["link"]
        for inp in inputs:
            if inp.get("type") == ltype and inp.get("link") is not None:
                return inp["link"]
        return None


def ui_to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """API-format prompt for a UI-format workflow. object_info: GET /object_info of the target server.
    Raises ValueError naming the node for unknown node types and unsupported constructs."""
    graph = _Graph(workflow)
    prompt: dict[str, dict] = {}
    for node_id, node in sorted(graph.nodes.items()):
        ntype = node["type"]
        if ntype in NOTE_TYPES or ntype in ("Reroute", "PrimitiveNode"):
            continue
        if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        info = object_info.get(ntype)
        if info is None:
            raise ValueError(f"node {node_id} has type {ntype!r}, which this ComfyUI does not know "
                             "(missing custom-node pack or a renamed node)")
        inputs: dict[str, Any] = dict(_widget_values(node, info))
        for inp in node.get("inputs", []):
            if inp.get("link") is None:
                continue
            src = graph.source(inp["link"])
            if src is None:
                inputs.pop(inp["name"], None)
            elif src[0] == "value":
                inputs[inp["name"]] = src[1]
            else:
                inputs[inp["name"]] = [src[1][0], src[1][1]]
        prompt[str(node_id)] = {"class_type": ntype, "inputs": inputs}
    return prompt
