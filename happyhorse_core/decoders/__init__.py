"""Video decoders that ComfyUI core does not provide (the Wan2.2 VAE is reused from the host)."""
from .turbo_config import WAN22_LATENT_MEAN, WAN22_LATENT_STD, TurboVAEDConfig
from .turbo_vaed import DecodeWindow, TurboVAED, plan_windows

__all__ = [
    "WAN22_LATENT_MEAN",
    "WAN22_LATENT_STD",
    "DecodeWindow",
    "TurboVAED",
    "TurboVAEDConfig",
    "plan_windows",
]
