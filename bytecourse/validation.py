"""Checks at the library's public boundary: one clear ``ValueError`` naming the argument, the value given and
what is allowed — instead of a traceback from deep inside, or worse, a silently wrong result.

Learners call the library from notebooks with whatever they type; these helpers are what every public entry
point runs first. Images and videos are checked for shape, dtype and value range where a wrong one would
silently change a result (an image in [−1, 1] makes the oracle find the wrong objects; a ``uint8`` image makes
it find none).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a bool, not 2.5, not "3") in ``[lo, hi]``; returned as a Python ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if (
            isinstance(value, torch.Tensor)
            and value.numel() == 1
            and not value.is_floating_point()
            and value.dtype != torch.bool
        ):
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer{_range(lo, hi)}, got {_show(value)}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an integer{_range(lo, hi)}, got {value}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number in ``[lo, hi]``; returned as a Python ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        else:
            raise ValueError(f"{name} must be a number{_range(lo, hi)}, got {_show(value)}")
    value = float(value)
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be a finite number{_range(lo, hi)}, got {value}")
    return value


def check_flag(name: str, value: Any) -> bool:
    """A bool (or 0/1)."""
    if isinstance(value, bool) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {_show(value)}")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {_show(value)}")
    return value


def check_strings(name: str, values: Any, allow_empty_strings: bool = False) -> list[str]:
    """A non-empty list (or tuple) of strings — not a bare string, which would be read letter by letter."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a list of strings, got {_show(values)}; wrap a single caption as [caption]")
    if not values:
        raise ValueError(f"{name} must not be empty")
    for i, v in enumerate(values):
        if not isinstance(v, str) or (not allow_empty_strings and not v.strip()):
            raise ValueError(f"{name}[{i}] must be a non-empty string, got {_show(v)}")
    return list(values)


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {_show(x)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_images(
    name: str, images: Any, *, dims: int = 4, channels: int = 3, layout: str = "(B, 3, H, W)"
) -> torch.Tensor:
    """Float images in [0, 1] with ``channels`` channels in dimension ``dims − 3`` (``(B,3,H,W)`` or
    ``(B,T,3,H,W)``). Rejects integer images (convert with ``x.float() / 255``) and images in [−1, 1]
    (convert with ``to_image_space``)."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a tensor {layout} in [0, 1], got {_show(images)}")
    if images.dim() != dims or images.shape[dims - 3] != channels or images.shape[0] == 0:
        raise ValueError(f"{name} must be {layout} with B ≥ 1, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"{name} must be floating point in [0, 1], got dtype {images.dtype} (for 8-bit images use x.float() / 255)"
        )
    check_finite(name, images)
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (model-space images in [−1, 1]: convert with to_image_space)" if lo >= -1.001 and hi <= 1.001 else ""
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}]{hint}")
    return images


def check_boxes(name: str, boxes: Any) -> torch.Tensor:
    """Boxes ``(N, 4)`` as finite (x0, y0, x1, y1)."""
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must be a tensor (N, 4) of (x0, y0, x1, y1) boxes, got {_show(boxes)}")
    return check_finite(name, boxes)


def check_tokens(name: str, tokens: Any, vocab_size: int, length: int | None = None) -> torch.Tensor:
    """Token ids ``(B, L)`` of an integer dtype, each in ``[0, vocab_size)``."""
    if (
        not isinstance(tokens, torch.Tensor)
        or tokens.dim() != 2
        or tokens.is_floating_point()
        or tokens.dtype == torch.bool
    ):
        raise ValueError(f"{name} must be integer token ids (B, L), got {_show(tokens)}")
    if length is not None and tokens.shape[1] != length:
        raise ValueError(f"{name} must have {length} positions, got shape {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(
            f"{name} must hold ids in [0, {vocab_size}), got ids in [{int(tokens.min())}, {int(tokens.max())}]"
        )
    return tokens


def _range(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""
