"""Layers of the Turbo-VAED video decoder (MODEL_SPEC §7.2, golden README §7).

The module tree and attribute names follow the reference exactly (`conv_in.conv`, `mid_block.resnets.N`,
`up_blocks.N.{conv_in,upsamplers.0,resnets.M}`, `upsamplers.0.resample.1`, `upsamplers.0.time_conv.conv`,
`conv_out.conv`), so released weights load by key without renaming. Norms carry no weights.

Numerics that matter for parity:
- channel RMS norm in fp32 over dim 1, eps 1e-8, except the shortcut norm (resnet_norm_eps);
- 3D convs pad time by repeating edge frames and pad space with zeros;
- resnets placed after an upsampler use ReLU as their first activation;
- the time upsampler splits channels into 2 phases, (n c) -> (t n), and drops frame 0 on the first chunk;
- nearest-exact x2 spatial upsampling runs in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..fetch import Conv2d, Conv3d
from .turbo_config import TurboVAEDConfig


def channel_rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS-normalise over channels (dim 1) in fp32, no weight; returns x's dtype."""
    variance = x.float().pow(2).mean(1, keepdim=True)  # [B, 1, T, H, W]
    return (x * torch.rsqrt(variance + eps)).to(x.dtype)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C*p*p, T, H, W] -> [B, C, T, H*p, W*p]; channel index = c*p*p + pw*p + ph (w offset major)."""
    return rearrange(x, "b (c pw ph) t h w -> b c t (h ph) (w pw)", pw=patch, ph=patch)


class EdgePadConv3d(nn.Module):
    """Non-causal Conv3d: time padded by repeating the first/last frame, space zero-padded."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] = (3, 3, 3)) -> None:
        super().__init__()
        kt, kh, kw = kernel_size
        self.time_pad = (kt - 1) // 2
        self.conv = Conv3d(in_channels, out_channels, kernel_size, padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, T, H, W] -> [B, Cout, T, H, W]
        p = self.time_pad
        if p:
            first = x[:, :, :1].expand(-1, -1, p, -1, -1)
            last = x[:, :, -1:].expand(-1, -1, p, -1, -1)
            x = torch.cat([first, x, last], dim=2)
        return self.conv(x)


class ResnetBlock3d(nn.Module):
    """norm -> act -> conv -> norm -> SiLU -> conv, plus a (norm + 1x1x1 conv) shortcut if widths differ."""

    def __init__(
        self, in_channels: int, out_channels: int, *, norm_eps: float, shortcut_eps: float, relu_first: bool = False
    ) -> None:
        super().__init__()
        self.norm_eps = norm_eps
        self.shortcut_eps = shortcut_eps
        self.relu_first = relu_first  # True for resnets that follow an upsampler
        self.conv1 = EdgePadConv3d(in_channels, out_channels)
        self.conv2 = EdgePadConv3d(out_channels, out_channels)
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = EdgePadConv3d(in_channels, out_channels, (1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, Cin, T, H, W] -> [B, Cout, T, H, W]
        h = channel_rms_norm(x, self.norm_eps)
        h = F.relu(h) if self.relu_first else F.silu(h)
        h = self.conv1(h)
        h = F.silu(channel_rms_norm(h, self.norm_eps))
        h = self.conv2(h)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(channel_rms_norm(x, self.shortcut_eps))
        return h + x


class NearestUp2x(nn.Module):
    """Per-frame x2 nearest-exact upsampling, computed in fp32 and cast back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C, 2H, 2W]
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").to(x.dtype)


class Upsampler(nn.Module):
    """x2 in space (per frame), and x2 in time first when `temporal` (reference modes upsample3d/2d)."""

    def __init__(self, channels: int, *, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(NearestUp2x(), Conv2d(channels, channels, 3, padding=1))
        self.time_conv = EdgePadConv3d(channels, 2 * channels, (3, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, is_first_chunk: bool) -> torch.Tensor:
        # [B, C, T, H, W] -> [B, C, T', 2H, 2W]; T' = 2T (2T-1 on the first chunk) or T (space only)
        batch = x.shape[0]
        if self.time_conv is not None:
            x = self.time_conv(x)  # [B, 2C, T, H, W]
            x = rearrange(x, "b (n c) t h w -> b c (t n) h w", n=2)  # frame 2t+n <- channels [nC, (n+1)C)
            if is_first_chunk:
                x = x[:, :, 1:]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        x = self.resample(x)
        return rearrange(x, "(b t) c h w -> b c t h w", b=batch)


class MidBlock3d(nn.Module):
    def __init__(self, channels: int, num_layers: int, *, norm_eps: float, shortcut_eps: float) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3d(channels, channels, norm_eps=norm_eps, shortcut_eps=shortcut_eps) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x


class UpBlock3d(nn.Module):
    """Optional width-changing resnet (`conv_in`), optional upsampler, then `num_layers` resnets."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        *,
        upsample: str | None,  # "3d" (time+space), "2d" (space only) or None
        norm_eps: float,
        shortcut_eps: float,
    ) -> None:
        super().__init__()
        eps = dict(norm_eps=norm_eps, shortcut_eps=shortcut_eps)
        self.conv_in = ResnetBlock3d(in_channels, out_channels, **eps) if in_channels != out_channels else None
        self.upsamplers = None
        if upsample is not None:
            self.upsamplers = nn.ModuleList([Upsampler(out_channels, temporal=upsample == "3d")])
        self.resnets = nn.ModuleList(
            ResnetBlock3d(out_channels, out_channels, relu_first=upsample is not None, **eps) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, is_first_chunk: bool) -> torch.Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                x = upsampler(x, is_first_chunk)
        for resnet in self.resnets:
            x = resnet(x)
        return x


class TurboDecoder3d(nn.Module):
    """Latent window [B, 48, t, h, w] -> pixels [B, 3, 4t-3 (first chunk) or 4t, 16h, 16w]."""

    def __init__(self, config: TurboVAEDConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.norm_eps = config.norm_eps
        eps = dict(norm_eps=config.norm_eps, shortcut_eps=config.resnet_norm_eps)
        channels = tuple(reversed(config.block_out_channels))  # wide -> narrow
        layers = tuple(reversed(config.layers_per_block))  # layers[0] = mid block
        scaling = tuple(reversed(config.spatio_temporal_scaling))
        space_only = tuple(reversed(config.spatio_only))

        self.conv_in = EdgePadConv3d(config.latent_channels, channels[0])
        self.mid_block = MidBlock3d(channels[0], layers[0], **eps)
        blocks = []
        width = channels[0]
        for i, out_width in enumerate(channels):
            mode = ("2d" if space_only[i] else "3d") if scaling[i] else None
            blocks.append(UpBlock3d(width, out_width, layers[i + 1], upsample=mode, **eps))
            width = out_width
        self.up_blocks = nn.ModuleList(blocks)
        out_width = config.out_channels * config.patch_size**2
        self.conv_out = EdgePadConv3d(width, out_width)

    def forward(self, z: torch.Tensor, is_first_chunk: bool) -> torch.Tensor:
        x = self.conv_in(z)  # [B, C0, t, h, w]
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x, is_first_chunk)  # time x2 / space x2 per upsampler
        x = F.silu(channel_rms_norm(x, self.norm_eps))
        x = self.conv_out(x)  # [B, 3*p*p, T, H, W]
        return unpatchify(x, self.patch_size)  # [B, 3, T, H*p, W*p]
