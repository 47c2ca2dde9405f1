"""The native-path workflow: HappyHorse as a ComfyUI MODEL on core sampling nodes (see workflow_specs.py).

Registered with @workflow (workflow_specs imports every workflow_specs_*.py); built by scripts/build_workflows.py.
"""
from __future__ import annotations

from workflow_specs import (FILES, Node, Workflow, decoders, empty_latent, model_loader, save_nodes,
                            text_nodes, workflow)


@workflow
def native_core() -> Workflow:
    nodes = [
        model_loader(),
        Node("to_model", "HappyHorseToModel", 0, links={"model": ("model", "model")}),
        Node("lora", "LoraLoaderModelOnly", 0, {"lora_name": FILES["lora"].name, "strength_model": 1.0},
             {"model": ("to_model", "MODEL")}),
        Node("shift", "ModelSamplingSD3", 0, {"shift": 5.0}, {"model": ("lora", "MODEL")}),
        *text_nodes(),
        Node("cond", "HappyHorseConditioningSplit", 1, links={"conditioning": ("prompt", "conditioning")}),
        empty_latent(col=1),
        Node("av", "HappyHorsePackAVLatent", 1, links={"video_latent": ("latent", "video_latent"),
                                                        "audio_latent": ("latent", "audio_latent")}),
        Node("guider", "HappyHorseGuider", 2, {"video_cfg": 1.0, "video_cfg_late": 1.0, "audio_cfg": 1.0},
             {"model": ("shift", "MODEL"), "positive": ("cond", "positive"), "negative": ("cond", "negative")}),
        Node("sigmas", "HappyHorseSigmas", 2, {"schedule": "distilled"}, {"model": ("shift", "MODEL")}),
        Node("hh_sampler", "HappyHorseNativeSampler", 2, {"mode": "distilled"}),
        Node("noise", "HappyHorseNoise", 2, {"noise_seed": 42}),
        Node("sample", "SamplerCustomAdvanced", 3,
             links={"noise": ("noise", "NOISE"), "guider": ("guider", "GUIDER"), "sampler": ("hh_sampler", "SAMPLER"),
                    "sigmas": ("sigmas", "SIGMAS"), "latent_image": ("av", "latent")}),
        Node("split", "HappyHorseSplitAVLatent", 3, links={"latent": ("sample", "output")}),
        *decoders(4, video_src=("split", "video_latent"), audio_src=("split", "audio_latent")),
        *save_nodes(5, "hh_native"),
    ]
    return Workflow(
        "HappyHorse Native MODEL with LoRA and Core Sampler 256p", "HappyHorse on core sampling nodes: MODEL + LoRA + SamplerCustomAdvanced (distilled, 2 s)",
        "The DiT as a ComfyUI MODEL: LoraLoaderModelOnly adds a LoRA, ModelSamplingSD3 sets the flow shift (5.0), "
        "HappyHorse Guider + Sigmas + Native Sampler + Noise drive core SamplerCustomAdvanced on the joint "
        "video+audio latent, and HappyHorse Split AV Latent hands the parts to the decoders. Same seed, same clip "
        "as the one-node HappyHorse Sampler. For the base model: schedule base, mode base, scales 5.0 / 2.0 / 5.0. "
        "Any MODEL node (EasyCache, TorchCompileModel, other LoRA loaders) can sit between the loader and the "
        "guider.",
        ["distill", "lora", "text_encoder", "turbo_vaed", "sao_vae"], nodes,
        groups={0: "1. Model as MODEL (LoRA, shift)", 1: "2. Prompt and joint latent", 2: "3. Guider, sigmas, sampler",
                3: "4. Sample and split", 4: "5. Decode", 5: "6. Video", 6: "7. Save"})
