"""Chapter 03 exercises: self-checks (with tolerances) and reference solutions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..diffusion.unet import ImageDenoiser, UNetConfig
from ..exercises import attempt, report
from .evaluate import iou_from_confusion
from .models import MetaPromptsConfig, UNetBackbone, rearrange, silog_loss


# Exercise 1 — re-arrangement
def check_rearrange(fn: Callable, tol: float = 1e-5):
    """``fn(features (B, C, H, W), prompts (N, C)) → (B, N, H, W)`` with F′[b, n, h, w] = Σ_c F[b, c, h, w]·P[n, c]."""
    g = torch.Generator().manual_seed(0)
    f, p = torch.randn(2, 8, 5, 6, generator=g), torch.randn(4, 8, generator=g)
    got = attempt("rearrange", fn, f.clone(), p.clone())
    if got is None:
        return False, float("nan")
    want = rearrange(f, p)
    if tuple(got.shape) != tuple(want.shape):
        print(f"rearrange: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        return False, float("inf")
    return report("rearrange", float((got - want).abs().max()), tol)


def solution_rearrange(features, prompts):
    return torch.einsum("bchw,nc->bnhw", features, prompts)


# Exercise 2 — the SiLog loss
def check_silog(fn: Callable, tol: float = 1e-5):
    """``fn(pred, target, lam) → scalar``: √(mean g² − λ·(mean g)²), g = log pred − log target over target > 0."""
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(3, 16, 16, generator=g) + 0.1, torch.rand(3, 16, 16, generator=g) + 0.1
    target[0, :4] = 0  # invalid pixels
    errs = []
    for lam in (0.0, 0.5, 0.85):
        got = attempt("silog", fn, pred.clone(), target.clone(), lam)
        if got is None:
            return False, float("nan")
        errs.append(abs(float(got) - float(silog_loss(pred, target, lam))))
    return report("silog", max(errs), tol)


def solution_silog(pred, target, lam):
    valid = target > 0
    g = torch.log(pred[valid]) - torch.log(target[valid])
    return torch.sqrt(g.pow(2).mean() - lam * g.mean() ** 2)


# Exercise 3 — recurrent refinement
def _tiny_backbone(loops: int = 3) -> UNetBackbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        unet = ImageDenoiser(UNetConfig(widths=(16, 16, 16), text_dim=16, heads=2, text_layers=1))
        torch.nn.init.normal_(unet.out[-1].weight, std=0.05)
        return UNetBackbone(unet, MetaPromptsConfig(n_prompts=4, loops=loops, per_loop_prompts=True)).eval()


def check_refinement(fn: Callable, tol: float = 1e-5):
    """``fn(unet, x, prompts (L, N, d), time (L, temb)) → the last loop's final features`` (stage ``up7``): loop 1
    reads ``x``, loop i > 1 reads the UNet's output of loop i − 1; loop i's context is ``prompts[i]`` and its time
    embedding ``time[i]``."""
    bb = _tiny_backbone()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        prompts = torch.stack([bb.context(i) for i in range(3)])
        want = bb(x)["up7"]
        got = attempt("refinement", fn, bb.unet, x.clone(), prompts, bb.time.detach().clone())
    if got is None:
        return False, float("nan")
    return report("refinement", float((got - want).abs().max()), tol)


def solution_refinement(unet, x, prompts, time):
    kept = {}

    def keep(name, h):
        if name == "up7":
            kept["up7"] = h
        return h

    z = x
    for i in range(len(prompts)):
        with torch.no_grad():
            z = unet(z, None, None, after_stage=keep, context=prompts[i][None], time_embedding=time[i : i + 1])
    return kept["up7"]


# Exercise 4 — mIoU from a confusion matrix
def check_miou(fn: Callable, tol: float = 1e-6):
    """``fn(conf (K, K), rows = truth) → mIoU`` over the classes that occur in the prediction or the truth."""
    g = torch.Generator().manual_seed(4)
    conf = torch.randint(0, 50, (5, 5), generator=g)
    conf[3] = 0
    conf[:, 3] = 0  # class 3 never occurs: it must not count
    got = attempt("miou", fn, conf.clone())
    if got is None:
        return False, float("nan")
    return report("miou", abs(float(got) - float(iou_from_confusion(conf).nanmean())), tol)


def solution_miou(conf):
    inter = conf.diag().double()
    union = conf.sum(0) + conf.sum(1) - conf.diag()
    keep = union > 0
    return (inter[keep] / union[keep]).mean()


EXERCISES = {
    "rearrange": (check_rearrange, solution_rearrange),
    "silog": (check_silog, solution_silog),
    "refinement": (check_refinement, solution_refinement),
    "miou": (check_miou, solution_miou),
}
