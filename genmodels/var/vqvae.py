"""Multi-scale residual VQ-VAE: a small VQGAN-style conv encoder / decoder around :class:`MultiScaleQuantizer`.

Encoder: conv_in → per level ``layers_per_block`` ResBlocks (GroupNorm, SiLU, 3×3 convs) and a stride-2 conv
down (all levels but the last) → mid ResBlocks → GroupNorm, SiLU, conv to ``latent_channels`` → 3×3
``quant_conv``. Decoder mirrors it with nearest-neighbour ×2 upsampling + conv, after a 3×3 ``post_quant_conv``.
The downsampling factor is 2^(len(block_out_channels) − 1); the latent side must equal the last entry of
``patch_nums``. Images are in [−1, 1]; ``decode`` clamps to that range.

Differences from the reference tokenizer (VQGAN-f16, ch 160, V = 4096, OpenImages): sized for a 2-core CPU
and the shapes world (f = 8, V = 512 by default), no attention blocks, trained with pixel L1 + L2 and the VQ
loss only (no LPIPS / GAN: both need pretrained or adversarial networks this project does not ship).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .quant import MultiScaleQuantizer, check_patch_nums


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, ch // 4) if ch >= 8 else 1, ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], layers: int, out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        blocks: list[nn.Module] = []
        ch = channels[0]
        for i, cout in enumerate(channels):
            for _ in range(layers):
                blocks.append(ResBlock(ch, cout))
                ch = cout
            if i < len(channels) - 1:
                blocks.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        blocks += [ResBlock(ch, ch), ResBlock(ch, ch)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out, self.conv_out = _norm(ch), nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], layers: int, out_channels: int):
        super().__init__()
        rev = list(reversed(channels))
        ch = rev[0]
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        blocks: list[nn.Module] = [ResBlock(ch, ch), ResBlock(ch, ch)]
        for i, cout in enumerate(rev):
            for _ in range(layers + 1):
                blocks.append(ResBlock(ch, cout))
                ch = cout
            if i < len(rev) - 1:
                blocks.append(Upsample(ch))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out, self.conv_out = _norm(ch), nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))


class MultiScaleVQVAE(ModelMixin, ConfigMixin):
    """Conv VQ-VAE with a multi-scale residual quantiser (one shared codebook across scales).

    Config: ``in_channels``, ``block_out_channels`` (one per resolution level), ``layers_per_block``,
    ``latent_channels`` (C_vae), ``vocab_size`` (V), ``patch_nums`` (scale schedule; its last entry is the
    latent side, so ``sample_size / 2^(levels − 1)``), ``sample_size``, ``beta``, ``phi_ratio``, ``share_phi``.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, block_out_channels: Sequence[int] = (16, 32, 64, 128),
                 layers_per_block: int = 1, latent_channels: int = 32, vocab_size: int = 512,
                 patch_nums: Sequence[int] = (1, 2, 3, 4, 6, 8), sample_size: int = 64, beta: float = 0.25,
                 phi_ratio: float = 0.5, share_phi: int = 4):
        super().__init__()
        patch_nums = check_patch_nums(patch_nums)
        if not block_out_channels:
            raise ValueError("block_out_channels must name at least one level")
        self.factor = 2 ** (len(block_out_channels) - 1)
        if sample_size % self.factor or sample_size // self.factor != patch_nums[-1]:
            raise ValueError(f"the latent side sample_size / {self.factor} = {sample_size / self.factor:g} must "
                             f"equal the last scale of patch_nums {list(patch_nums)}")
        self.encoder = Encoder(in_channels, block_out_channels, layers_per_block, latent_channels)
        self.quant_conv = nn.Conv2d(latent_channels, latent_channels, 3, padding=1)
        self.quantize = MultiScaleQuantizer(vocab_size, latent_channels, patch_nums, beta=beta,
                                            phi_ratio=phi_ratio, share_phi=share_phi)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 3, padding=1)
        self.decoder = Decoder(latent_channels, block_out_channels, layers_per_block, in_channels)

    @classmethod
    def tiny_config(cls) -> dict:
        """Tests: 32×32 images, f = 8, scales (1, 2, 4), 32 codes of width 8."""
        return dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=8, vocab_size=32,
                    patch_nums=(1, 2, 4), sample_size=32)

    @classmethod
    def shapes_config(cls) -> dict:
        """Shapes world: 64×64 RGB, f = 8 (8×8 latent), scales (1, 2, 3, 4, 6, 8) = 130 tokens, 512 codes of
        width 32."""
        return dict(block_out_channels=(16, 32, 64, 128), layers_per_block=1, latent_channels=32,
                    vocab_size=512, patch_nums=(1, 2, 3, 4, 6, 8), sample_size=64)

    @classmethod
    def shapes128_config(cls) -> dict:
        """Shapes world at 128×128: the same network (weights interchangeable with ``shapes_config``), f = 8
        (16×16 latent), scales (1, 2, 3, 4, 6, 8, 11, 16) = 507 tokens."""
        return {**cls.shapes_config(), "patch_nums": (1, 2, 3, 4, 6, 8, 11, 16), "sample_size": 128}

    @classmethod
    def shapes256_config(cls) -> dict:
        """The same network at 256×256: 32×32 latent, scales (1, 2, 3, 4, 6, 8, 11, 16, 23, 32) = 2,060 tokens."""
        return {**cls.shapes_config(), "patch_nums": (1, 2, 3, 4, 6, 8, 11, 16, 23, 32), "sample_size": 256}

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.quantize.patch_nums

    def check_images(self, images: torch.Tensor) -> None:
        """``images`` must be ``[B, in_channels, H, W]`` with H = W = sample_size."""
        c, s = self.config.in_channels, self.config.sample_size
        if images.ndim != 4 or images.shape[1] != c or images.shape[2] != s or images.shape[3] != s:
            raise ValueError(f"images must be [B, {c}, {s}, {s}] in [-1, 1], got {tuple(images.shape)}")

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous latent f ``[B, C_vae, p_K, p_K]`` before quantisation."""
        self.check_images(images)
        return self.quant_conv(self.encoder(images))

    def decode_fhat(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] from a (summed) latent ``[B, C_vae, p_K, p_K]``."""
        return self.decoder(self.post_quant_conv(f_hat.to(self.post_quant_conv.weight.dtype))).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(reconstruction, VQ loss, token pyramid). The reconstruction is not clamped (for the loss)."""
        f = self.encode_latent(images)
        f_hat, vq_loss, ids = self.quantize(f)
        return self.decoder(self.post_quant_conv(f_hat)), vq_loss, ids

    @torch.no_grad()
    def images_to_ids(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Token pyramid: K id maps ``[B, p_k, p_k]``."""
        return self.quantize.encode(self.encode_latent(images))

    @torch.no_grad()
    def ids_to_images(self, ids: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode a token pyramid to images in [−1, 1]."""
        return self.decode_fhat(self.quantize.ids_to_fhat(ids))


__all__ = ["MultiScaleVQVAE"]
