"""ComfyUI entry point of the ComfyUI-HappyHorse pack.

ComfyUI imports this file when the repository sits in custom_nodes/. It only registers the V3
node classes of nodes/*_nodes.py through `comfy_entrypoint`; comfy_api and the node modules are
imported inside the function, so this module also imports outside ComfyUI (tests, tools).
"""
import os
import sys

# The pack folder name may contain '-' (ComfyUI-HappyHorse), so make happyhorse_core importable
# by absolute name for the node modules.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)  # appended: ComfyUI's own `nodes` module must keep priority


def node_classes() -> list:
    from .nodes import decode_nodes, encode_nodes, loader_nodes, native_nodes, sampler_nodes, upscale_nodes
    return [*loader_nodes.NODES, *encode_nodes.NODES, *sampler_nodes.NODES, *upscale_nodes.NODES,
            *decode_nodes.NODES, *native_nodes.NODES]


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    class HappyHorseExtension(ComfyExtension):
        async def get_node_list(self) -> list:
            return node_classes()

    return HappyHorseExtension()
