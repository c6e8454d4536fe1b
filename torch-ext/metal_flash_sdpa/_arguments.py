"""Normalising the Python-level arguments every entry point shares (flash-attn's conventions)."""

from __future__ import annotations

from typing import Sequence, Union

import torch


def check_no_dropout(dropout_p: float) -> None:
    if dropout_p != 0.0:
        raise NotImplementedError(
            f"dropout_p must be 0.0: metal-flash-sdpa has no attention dropout (got {dropout_p})"
        )


def resolve_scale(softmax_scale: float | None, q: torch.Tensor) -> float:
    return q.shape[-1] ** -0.5 if softmax_scale is None else float(softmax_scale)


def resolve_window(window_size: Sequence[int], causal: bool) -> tuple[int, int]:
    """(left, right) with -1 for unbounded; causal is a right window of 0 (bottom-right)."""
    if len(window_size) != 2:
        raise ValueError(f"window_size must be a pair (left, right), got {window_size!r}")
    left, right = int(window_size[0]), int(window_size[1])
    if left < -1 or right < -1:
        raise ValueError(f"window_size entries must be >= -1 (-1 = unbounded), got {window_size!r}")
    if causal:
        right = 0
    return left, right


def resolve_max_seqlen(value: Union[int, torch.Tensor], name: str) -> int:
    """transformers passes 0-dim integer tensors; the op takes a Python int."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_floating_point() or value.is_complex():
            raise ValueError(
                f"{name} must be an int or a 0-dim integer tensor, got a {value.dtype} tensor "
                f"of shape {tuple(value.shape)}"
            )
        return int(value.item())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int or a 0-dim integer tensor, got {value!r}")
    return value


def resolve_softcap(softcap: float) -> float:
    softcap = float(softcap)
    if softcap < 0.0:
        raise ValueError(f"softcap must be >= 0 (0 = off), got {softcap}")
    return softcap
