"""Shared building blocks for lingen's backbones: norms, RoPE, FFNs, conditioning embeddings, CrossWKV, init tags."""

from .crosswkv import CrossWKV
from .embeddings import FourierFeatures, MappingFeedForwardBlock, MappingNetwork
from .ffn import FeedForward, LinearGEGLU, linear_geglu
from .norms import AdaRMSNorm, RMSNorm, rms_norm
from .params import apply_wd, filter_params, make_param_groups, param_tags, tag_module, zero_init
from .rope import AxialRoPE, apply_rotary_emb, downscale_pos, make_axial_pos

__all__ = [
    "AdaRMSNorm",
    "AxialRoPE",
    "CrossWKV",
    "FeedForward",
    "FourierFeatures",
    "LinearGEGLU",
    "MappingFeedForwardBlock",
    "MappingNetwork",
    "RMSNorm",
    "apply_rotary_emb",
    "apply_wd",
    "downscale_pos",
    "filter_params",
    "linear_geglu",
    "make_axial_pos",
    "make_param_groups",
    "param_tags",
    "rms_norm",
    "tag_module",
    "zero_init",
]
