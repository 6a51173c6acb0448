"""Low-rank deltas on a frozen network (LoRA, Hu et al. 2022, Eq. 3): W x + (α/r)·B A x, with B = 0 at first.

A delta is a separate module that adds itself to its base layer's output through a forward hook, so the base keeps
its parameter names (a checkpoint of the base still loads) and the delta ships on its own, small. :class:`LoRA`
wraps an ``nn.Linear``; :class:`ConvLoRA` an ``nn.Conv2d`` (A is a conv with the base's kernel, stride and padding
into r channels, B a 1×1 conv back — the usual "LoCon" form), so the delta of a conv layer is again a conv layer and
:func:`merge_lora` can fold it exactly into the base weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRA(nn.Module):
    """A low-rank delta ``(α/r)·B A x`` on a frozen ``nn.Linear`` (Hu et al. 2022, Eq. 3), added by a forward
    hook so that the base layer's parameter names stay the primer's. ``B = 0`` at initialisation."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.scale = (alpha or rank) / rank
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        base.register_forward_hook(self.add_delta)  # a bound method, so a deep copy (the EMA) hooks its own copy

    def add_delta(self, _base: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        return out + self.scale * self.up(self.down(inputs[0]))

    def delta_weight(self) -> torch.Tensor:
        return self.scale * self.up.weight @ self.down.weight


class ConvLoRA(nn.Module):
    """The conv form: ``A`` = conv(in → r) with the base's kernel, stride and padding, ``B`` = 1×1 conv(r → out)."""

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if base.groups != 1:
            raise ValueError("ConvLoRA supports ungrouped convolutions only")
        self.scale = (alpha or rank) / rank
        self.down = nn.Conv2d(
            base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation, bias=False
        )
        self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        base.register_forward_hook(self.add_delta)

    def add_delta(self, _base: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        return out + self.scale * self.up(self.down(inputs[0]))

    def delta_weight(self) -> torch.Tensor:
        return self.scale * torch.einsum("or,rikl->oikl", self.up.weight[:, :, 0, 0], self.down.weight)


def lora_key(path: str) -> str:
    return path.replace(".", "__")


def add_lora(model: nn.Module, rank: int, *, skip: tuple[str, ...] = (), alpha: float | None = None) -> nn.ModuleDict:
    """A :class:`LoRA` / :class:`ConvLoRA` on every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` whose dotted path
    does not start with one of ``skip``; returned as a ``ModuleDict`` keyed by the path (dots → ``__``), which the
    caller keeps (and trains, and ships) — ``model`` itself is not changed but for the hooks."""
    deltas = nn.ModuleDict()
    for path, module in list(model.named_modules()):
        if any(path == s or path.startswith(s + ".") for s in skip):
            continue
        if isinstance(module, nn.Linear):
            deltas[lora_key(path)] = LoRA(module, rank, alpha)
        elif isinstance(module, nn.Conv2d) and module.groups == 1:
            deltas[lora_key(path)] = ConvLoRA(module, rank, alpha)
    return deltas


@torch.no_grad()
def merge_lora(model: nn.Module, deltas: nn.ModuleDict) -> nn.Module:
    """Fold every delta into its base weight (exact: W ← W + (α/r)·B A), returning a plain copy of ``model`` without
    hooks. ``deltas`` must have been made by :func:`add_lora` on ``model``."""
    import copy

    merged = copy.deepcopy(model)
    for path, module in merged.named_modules():
        module._forward_hooks.clear()
        key = lora_key(path)
        if key in deltas:
            module.weight += deltas[key].delta_weight().to(module.weight.dtype)
    return merged
