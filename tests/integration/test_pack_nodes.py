"""Our pack inside a real ComfyUI: every node is registered with its schema."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

OUR_NODES = ["HappyHorseModelLoader", "HappyHorseBlockSwap", "HappyHorseCompile",
             "HappyHorseTextEncoderLoader", "HappyHorseTurboVAEDLoader", "HappyHorseTextEncode", "HappyHorseEmptyLatent",
             "HappyHorseImageToVideo", "HappyHorseAudioReference", "HappyHorseSampler",
             "HappyHorseSuperResolution", "HappyHorseDecodeVideo", "HappyHorseDecodeAudio"]


def test_every_node_is_listed_with_description_and_tooltips(comfy):
    assert comfy.import_failures() == [], comfy.log_tail()
    info = comfy.object_info()
    missing = [n for n in OUR_NODES if n not in info]
    assert not missing, f"not in /object_info: {missing}\n{comfy.log_tail()}"
    for name in OUR_NODES:
        node = info[name]
        assert node["category"].startswith("HappyHorse/"), name
        assert len(node["description"]) > 40, name
        for section in ("required", "optional"):
            for inp, spec in node["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if spec[0] in ("INT", "FLOAT", "BOOLEAN", "COMBO") or isinstance(spec[0], list):
                    assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
