"""ComfyUI entry point of the ComfyUI-HappyHorse pack.

ComfyUI imports this file when the repository sits in custom_nodes/. Minimal for now: it registers an
extension with no nodes, so the pack loads cleanly (the integration tests check it does); node classes
are added to `get_node_list` as they are written. comfy_api is imported inside the function, so this
module can also be imported outside ComfyUI.
"""


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    class HappyHorseExtension(ComfyExtension):
        async def get_node_list(self) -> list:
            return []

    return HappyHorseExtension()
