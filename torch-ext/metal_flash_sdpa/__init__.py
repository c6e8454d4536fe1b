"""metal-flash-sdpa: fused FlashAttention-style attention for PyTorch on Apple GPUs (Metal) and on
the CPU, for packed variable-length batches. flash-attn's API; see README.md."""

from ._interface import flash_attention_varlen, flash_attn_func, flash_attn_varlen_func
from ._kvcache import flash_attn_with_kvcache
from ._packed import (
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
)
from ._routing import route_sdpa, routed_sdpa, sdpa_or_torch
from ._sdpa import scaled_dot_product_attention

__all__ = [
    "flash_attn_varlen_func",
    "flash_attn_func",
    "flash_attn_with_kvcache",
    "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attention_varlen",
    "scaled_dot_product_attention",
    "route_sdpa",
    "routed_sdpa",
    "sdpa_or_torch",
]
