"""ComfyUI entry point of the ComfyUI-HappyHorse pack.

ComfyUI imports this file as a package named after the pack's folder when the repository sits in
custom_nodes/. It only registers the V3 node classes of nodes/*_nodes.py through
`comfy_entrypoint`; the node modules reach the core by relative imports
(`from ..happyhorse_core ...`) and are imported inside the functions, so this module also imports
outside ComfyUI (tests, tools).
"""


def node_classes() -> list:
    from .nodes import (compile_nodes, decode_nodes, encode_nodes, hosted_nodes, loader_nodes, native_nodes,
                        sampler_nodes, upscale_nodes)
    return [*loader_nodes.NODES, *compile_nodes.NODES, *encode_nodes.NODES, *sampler_nodes.NODES,
            *upscale_nodes.NODES, *decode_nodes.NODES, *hosted_nodes.NODES, *native_nodes.NODES]


async def comfy_entrypoint():
    from .nodes.comfy_bridge import ComfyExtension

    class HappyHorseExtension(ComfyExtension):
        async def get_node_list(self) -> list:
            return node_classes()

    return HappyHorseExtension()
