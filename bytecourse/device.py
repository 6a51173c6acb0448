"""Device choice (cuda → mps → cpu), bf16 autocast on CUDA, and seeding."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

_DEVICES = ("auto", "cpu", "cuda", "mps")


def default_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; other names are checked for availability."""
    if name not in _DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"device must be one of {_DEVICES} or 'cuda:N', got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available on this machine")
    return torch.device(name)


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU autocast is slower than fp32 on small models)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch's global generators and return a fresh CPU ``torch.Generator``.

    Library code never reads global random state; this is for notebooks and scripts."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
