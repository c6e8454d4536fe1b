"""Normalising the Python-level arguments every entry point shares (flash-attn's conventions).

The op takes float32 scores and int32 windows: a number that cannot be represented there is
refused here, naming the argument, rather than rounded to something else (1e300 would become inf
in float32, 2**32 + 5 would become 5 in int32). The C++ checks (common/attention_inputs.cpp) apply
the same rules to the op itself."""

from __future__ import annotations

import numbers
import operator
from typing import Sequence, Union

import torch

FLOAT32_MAX = 3.4028234663852886e38
# A positive value at most half of float32's smallest subnormal (2**-149) rounds to 0 there.
FLOAT32_ROUNDS_TO_ZERO = 2.0**-150
INT32_MAX = 2**31 - 1


def _finite_float32(value, name: str) -> float:
    """`value` as a Python float that float32 represents without becoming inf. Comparisons only
    (false for NaN), so that torch.compile traces it on a symbolic float too."""
    if isinstance(value, torch.SymFloat):
        x = value
    else:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (-FLOAT32_MAX <= x <= FLOAT32_MAX):
        raise ValueError(f"{name} must be a finite float32 value (|{name}| <= {FLOAT32_MAX:.4g}), "
                         f"got {value!r}")
    return x


def resolve_scale(softmax_scale: float | None, q: torch.Tensor,
                  name: str = "softmax_scale") -> float:
    if softmax_scale is None:
        if q.shape[-1] == 0:  # the op refuses it too, but 0 ** -0.5 would fail first
            raise ValueError("head_dim of q must be a multiple of 8 between 8 and 512, got 0")
        return q.shape[-1] ** -0.5
    return _finite_float32(softmax_scale, name)


def _window_entry(value, window_size) -> int:
    if isinstance(value, bool):
        raise ValueError(f"window_size entries must be integers, got {window_size!r}")
    try:
        entry = operator.index(value)
    except TypeError:
        raise ValueError(f"window_size entries must be integers, got {window_size!r}") from None
    if entry < -1:
        raise ValueError(f"window_size entries must be >= -1 (-1 = unbounded), got {window_size!r}")
    if entry > INT32_MAX:
        raise ValueError(f"window_size entries must fit in int32 (<= 2**31 - 1; any window at "
                         f"least as wide as the sequence is unbounded), got {window_size!r}")
    return entry


def resolve_window(window_size: Sequence[int], causal: bool) -> tuple[int, int]:
    """(left, right) with -1 for unbounded; causal is a right window of 0 (bottom-right). A window
    wider than every sequence is unbounded: the op clamps it (it knows the sequences' bounds)."""
    if len(window_size) != 2:
        raise ValueError(f"window_size must be a pair (left, right), got {window_size!r}")
    left, right = (_window_entry(w, window_size) for w in window_size)
    if causal:
        right = 0
    return left, right


def resolve_max_seqlen(value: Union[int, torch.Tensor], name: str) -> int:
    """transformers passes 0-dim integer tensors; the op takes a Python int (a numpy integer is
    one; torch.compile's symbolic int stays symbolic, so a new max_seqlen does not recompile)."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_floating_point() or value.is_complex():
            raise ValueError(
                f"{name} must be an int or a 0-dim integer tensor, got a {value.dtype} tensor "
                f"of shape {tuple(value.shape)}"
            )
        return int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int or a 0-dim integer tensor, got {value!r}")
    return int(value)


def resolve_softcap(softcap: float, name: str = "softcap") -> float:
    x = _finite_float32(softcap, name)
    if x < 0.0:
        raise ValueError(f"{name} must be >= 0 (0 = off), got {softcap!r}")
    if 0.0 < x <= FLOAT32_ROUNDS_TO_ZERO:
        # It would reach the kernels as 0, which means "off": the opposite of a tiny cap.
        raise ValueError(f"{name} is positive but below float32's smallest value, got {softcap!r}")
    return x
