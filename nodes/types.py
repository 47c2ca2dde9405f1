"""Custom socket types of the pack and the small objects that travel on them.

Native types (LATENT, IMAGE, AUDIO, VAE) are used wherever ComfyUI has one; these custom
types carry what has no native equivalent: our DiT, our text encoder, the encoded prompt pair
and the Turbo-VAED decoder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .comfy_bridge import io

HHModel = io.Custom("HAPPYHORSE_MODEL")
HHTextEncoder = io.Custom("HAPPYHORSE_TEXT_ENCODER")
HHConditioning = io.Custom("HAPPYHORSE_CONDITIONING")
HHBlockSwap = io.Custom("HAPPYHORSE_BLOCKSWAP")
HHTurboVAED = io.Custom("HAPPYHORSE_TURBO_VAED")

CATEGORY = "HappyHorse"


@dataclass
class LoadedDiT:
    """A loaded SandwichDiT plus how the user asked to run it."""

    model: torch.nn.Module  # happyhorse_core SandwichDiT, weights in system RAM until sampling
    variant: str  # base / distill / sr_540p / sr_1080p
    path: str
    patcher: Any = None  # comfy ModelPatcher wrapping `model` (memory accounting)
    block_swap: Optional["BlockSwapConfig"] = None  # from a HappyHorse Block Swap node, or None
    released: bool = False  # RAM plan (nodes/ram_plan.py): weights dropped, read again on next use
    reload: Any = None  # () -> model, set by ram_plan.track
    nbytes: int = 0
    compile: Optional[dict] = None  # happyhorse_core.dit.compile.CompileOptions fields, or None (eager)


@dataclass(frozen=True)
class BlockSwapConfig:
    """What a HappyHorse Block Swap node asks for: N of the 40 blocks resident on the GPU."""

    blocks_on_device: int
    pin_memory: bool = False
    auto: bool = False  # pick N from the clip's token counts and the free memory (runtime.auto_blocks)


@dataclass
class LoadedTurboVAED:
    """A loaded Turbo-VAED decoder and its ComfyUI ModelPatcher (memory accounting)."""

    decoder: torch.nn.Module  # happyhorse_core TurboVAED
    path: str
    patcher: Any = None


@dataclass
class LoadedTextEncoder:
    encoder: torch.nn.Module  # happyhorse_core T5GemmaEncoder
    tokenizer: Any  # happyhorse_core T5GemmaTokenizer
    path: str
    patcher: Any = None
    release_after_encoding: bool = False  # RAM plan: free the encoder once the prompt is encoded
    released: bool = False
    reload: Any = None
    nbytes: int = 0


@dataclass
class PromptPair:
    """Encoded positive and negative prompts, fp32 rows (padding never included).

    The negative prompt is encoded only when a consumer needs it (base-mode CFG, SR with CFG):
    `negative_features()` runs `negative_source` once and keeps the result; distilled sampling
    never pays for it.
    """

    positive: torch.Tensor  # [n, 3584]
    negative: Optional[torch.Tensor]  # [m, 3584]; None until negative_features() is called
    prompt: str
    truncated: bool = False
    extra: dict = field(default_factory=dict)
    negative_source: Optional[Callable[[Optional[str]], torch.Tensor]] = None  # (node_id) -> [m, 3584]

    def negative_features(self, node_id: Optional[str] = None) -> torch.Tensor:
        """The negative prompt's rows, encoded now if they were not yet (warnings go to node `node_id`)."""
        if self.negative is None:
            if self.negative_source is None:
                raise ValueError("this conditioning has no negative prompt; connect HappyHorse Text Encode")
            self.negative = self.negative_source(node_id)
            self.negative_source = None  # drop the reference to the text encoder
        return self.negative
