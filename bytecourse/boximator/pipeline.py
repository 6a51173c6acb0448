"""A frozen video model + the control module: the training step (self-tracking stages) and guided sampling.

Training (Boximator §3.2–3.3). Only the control module trains; each clip of a batch is drawn as the paper
draws it:

- 25% of clips carry no boxes (all slots null), so the model still generates from the caption alone;
- 50% are conditioned on their first frame (F0): frame 0 of the noisy input is overwritten by the *clean*
  frame, and frame 0 is left out of the loss (there is nothing to denoise);
- every present object's box on every frame (:func:`~.boxes.to_frame`: a line on the border while it is
  outside), hard, or with probability ``p_soft`` per box widened by Beta(1, 8) margins and flagged soft, with a
  random ID colour per object and clip;
- with **self-tracking** the target video has each constrained object's box outlined in its ID colour
  (:func:`~.boxes.draw_outlines`): the model learns to draw a box that follows its object, and to put that
  box where the constraint says — the association the paper found essential. Clips without boxes keep clean
  targets, and a given first frame is the clean frame.

Issue 14 traced the first version's ignored boxes to five suspects, all fixed here: fixed ID colours (the slot
index, predictable from the caption), outlines in clips without boxes, outlines on the given F0 frame, seven
identical unmasked null tokens (:class:`~.control.BoximatorControl`'s ``masked_slots``), and uniform levels with
L_simple (``StageConfig.high_noise``/``weighting``). With all five fixed, on the inflated base, stage 1 still had
not bound its boxes after 1,000 steps (seed-0 probe, 8 clips, DDIM 20, CFG 2: AP50 0.007 with the clips' boxes,
0.010 with other clips' boxes; attention of tokens inside vs outside a box on its slot at t = 900: 0.049 vs
0.059). The box-overlap attention bias (:class:`~.control.BoxSelfAttention`'s ``box_bias``) bound them within
600 steps (same probe: AP50 0.124 vs 0.000; attention 0.55 vs 0.13). The five fixes were measured together here;
:mod:`.probe` leaves each out in turn (``python -m bytecourse eval boximator --part fixes``).

Sampling (§3.4): DDIM with classifier-free guidance whose negative condition keeps the caption and replaces
every box token by the null token, ε̂ = ε(c, ∅_box) + w_box (ε(c, boxes) − ε(c, ∅_box)); with ``guidance_scale ≠ 1``
caption guidance is added on top, ε̂ += (guidance_scale − 1)(ε(c, ∅_box) − ε(∅, ∅_box)). F0 overwrites frame 0 of
x_t with the clean given frame before every step (and of the result), exactly as in training: the base was
frozen, so the control module learnt to read a clean frame 0 next to noisy frames; a frame re-noised to t
would be a second, untrained convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.sampling import SamplerHook, StepState, ddim_sample, initial_noise, to_image_space, to_model_space
from ..diffusion.schedule import make_train_scheduler
from ..diffusion.training import drop_condition
from ..text import PAD_ID
from ..worlds.motion import MotionBatch
from .boxes import SLOTS, BoxConditions, draw_outlines, empty_conditions, soften, to_frame
from .control import BoximatorControl, BoxTokens


class BoximatorModel(nn.Module):
    """``forward(x, t, tokens, box_tokens=None)``: the base video denoiser with the control attached."""

    def __init__(self, base: nn.Module, control: BoximatorControl):
        super().__init__()
        self.base = base
        self.control = control.attach(base)

    @property
    def config(self):
        return self.base.config

    def forward(
        self, x: torch.Tensor, t, tokens: torch.Tensor, box_tokens: BoxTokens | torch.Tensor | None = None
    ) -> torch.Tensor:
        b, frames = x.shape[:2]
        if box_tokens is None:
            box_tokens = self.control.null_tokens(b * frames)
        return self.base(x, t, tokens, extra={"box_tokens": box_tokens})

    def box_tokens(self, cond: BoxConditions | None, batch: int, frames: int) -> BoxTokens:
        return self.control.tokens(cond, batch, frames)


def clip_shape(model: nn.Module) -> tuple[int, int, int, int]:
    """``(T, C, H, W)`` of the clips a base video denoiser (or a :class:`BoximatorModel` on it) draws."""
    base = model.base if isinstance(model, BoximatorModel) else model
    if hasattr(base, "spatial"):  # the inflated image model
        c = base.spatial.config
        return base.config.frames, c.channels, c.image_size, c.image_size
    c = base.config
    return c.frames, c.channels, c.image_size, c.image_size


@dataclass(frozen=True)
class StageConfig:
    """One training stage (Boximator Table "three stages": hard boxes → 80% soft → no self-tracking).

    ``high_noise = (p, t_from)``: a share p of each batch's levels is drawn from [t_from, T) instead of
    uniformly, and ``weighting``/``max_weight`` weigh the ε-MSE per level
    (:func:`~bytecourse.diffusion.training.loss_weights`; ``"v"`` weighs a clean-clip error equally at every
    level up to the cap). Both aim the control's training signal at the high-noise steps where a clip's layout
    is decided (issue 14, suspect 5); ``(0, 0)`` and ``"eps"`` are the paper's uniform L_simple."""

    name: str
    steps: int
    lr: float
    p_soft: float
    self_tracking: bool
    high_noise: tuple[float, int] = (0.0, 0)
    weighting: str = "eps"
    max_weight: float = 20.0


def conditions_from_batch(
    batch: MotionBatch, p_soft: float, p_no_boxes: float, generator: torch.Generator, random_ids: bool = True
) -> BoxConditions:
    """Ground-truth constraints for a Motion batch: object ``j`` in slot ``j`` on every frame.

    ``random_ids``: each object's ID colour is drawn at random per clip (distinct within a clip), as the paper
    assigns IDs; with ``False`` it is the slot index, i.e. the caption order, and a self-tracking outline's colour
    is then predictable from the caption without reading the box token that carries it (issue 14, suspect 1)."""
    b, t, k, _ = batch.boxes_full.shape
    if k > SLOTS:
        raise ValueError(f"the world has {k} objects per clip but there are only {SLOTS} slots")
    boxes = to_frame(batch.boxes_full)
    soft = torch.rand(b, t, k, generator=generator) < p_soft
    boxes = torch.where(soft[..., None], soften(boxes, generator), boxes)
    cond = empty_conditions(b, t)
    cond.boxes[:, :, :k] = boxes
    cond.hard[:, :, :k] = (~soft).float()
    if random_ids:
        ids = torch.stack([torch.randperm(SLOTS, generator=generator)[:k] for _ in range(b)])
    else:
        ids = torch.arange(k).expand(b, k)
    no_boxes = torch.rand(b, generator=generator) < p_no_boxes
    boxed = batch.present & ~no_boxes[:, None]
    cond.ids[:, :k] = torch.where(boxed, ids, -1)
    cond.active[:, :, :k] = boxed[:, None, :].expand(b, t, k)
    return cond


def sample_levels(b: int, scheduler, high_noise: tuple[float, int], generator: torch.Generator) -> torch.Tensor:
    """Training levels ``(b,)``: uniform on [0, T), except a share ``high_noise[0]`` drawn from [t_from, T)."""
    steps = scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (b,), generator=generator)
    p, t_from = high_noise
    if p > 0:
        high = torch.randint(t_from, steps, (b,), generator=generator)
        t = torch.where(torch.rand(b, generator=generator) < p, high, t)
    return t


def control_loss(
    model: BoximatorModel,
    batch: MotionBatch,
    stage: StageConfig,
    scheduler,
    generator: torch.Generator,
    *,
    p_no_boxes: float = 0.25,
    p_first_frame: float = 0.5,
    p_uncond: float = 0.1,
    random_ids: bool = True,
    outline_unboxed: bool = False,
    outline_first_frame: bool = False,
) -> torch.Tensor:
    """The (weighted) ε-MSE of one training batch under a stage's rules (see the module docstring).

    Self-tracking draws an outline only around the objects whose box the model is given (a clip without boxes
    keeps its clean target: :func:`~.boxes.draw_outlines` draws nothing for ID −1), and an F0 clip's given first
    frame is the clean frame, as at inference (only the frames the model generates carry outlines).

    ``outline_unboxed`` and ``outline_first_frame`` re-enact the first version's two bugs (issue 14, suspects 2
    and 3: outlines also around objects without a box, in their slot's colour, and on the given first frame), for
    :mod:`.probe`, which measures what fixing each was worth."""
    from ..diffusion.training import loss_weights

    device = next(model.parameters()).device
    cond = conditions_from_batch(batch, stage.p_soft, p_no_boxes, generator, random_ids)
    clean = to_model_space(batch.videos).to(device)
    x0 = clean
    if stage.self_tracking:
        ids = cond.ids[:, : batch.present.shape[1]]
        if outline_unboxed:  # suspect 2: every present object outlined, a box or not
            ids = torch.where(batch.present, torch.where(ids >= 0, ids, torch.arange(ids.shape[1])), -1)
        x0 = to_model_space(
            draw_outlines(batch.videos, batch.boxes, batch.visible, ids, keep=batch.instance_masks.any(2))
        ).to(device)
    b, frames = x0.shape[:2]
    t = sample_levels(b, scheduler, stage.high_noise, generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device, x0.dtype)
    xt = scheduler.add_noise(x0, noise, t)
    f0 = (torch.rand(b, generator=generator) < p_first_frame).to(device)
    given = x0[:, 0] if outline_first_frame else clean[:, 0]  # suspect 3: the given frame carried outlines
    xt[:, 0] = torch.where(f0[:, None, None, None], given, xt[:, 0])
    tokens = drop_condition(batch.tokens, p_uncond, generator).to(device)
    eps = model(xt, t, tokens, model.box_tokens(cond.to(device), b, frames))
    weight = torch.ones(b, frames, device=device)
    weight[:, 0] = (~f0).float()
    level = loss_weights(scheduler.alphas_cumprod.to(device)[t], stage.weighting, stage.max_weight)
    per_frame = F.mse_loss(eps.float(), noise.float(), reduction="none").mean(dim=(2, 3, 4))
    return (per_frame * weight * level[:, None]).sum() / weight.sum()


class FirstFrame(SamplerHook):
    """F0: overwrite frame 0 of x_t with the clean given frame (model space) before each step and at the end."""

    def __init__(self, frame: torch.Tensor):
        self.frame = frame

    def _put(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, 0] = self.frame.to(x)
        return x

    def on_step_start(self, state: StepState) -> torch.Tensor:
        return self._put(state.x)

    def on_step_end(self, state: StepState) -> torch.Tensor:
        return self._put(state.x_prev)


def guided_eps_model(
    model: nn.Module,
    box_tokens: BoxTokens | None,
    null_tokens: BoxTokens | None,
    box_guidance_scale: float,
    guidance_scale: float,
):
    """``eps(x, t, caption_tokens)`` with Boximator's CFG (negative: null box tokens) and caption CFG, all
    branches in one batched call. ``box_tokens=None``: no constraints (the base alone if ``null_tokens`` is
    None too, i.e. a model without a control module).

    With w_box = ``box_guidance_scale`` and w = ``guidance_scale`` (Boximator §3.4, CFG of Ho & Salimans):
    ε̂ = ε(c, ∅_box) + w_box (ε(c, B) − ε(c, ∅_box)) + (w − 1)(ε(c, ∅_box) − ε(∅, ∅_box)).

    Every scale uses this one formula (continuous in w_box): the branch ε(c, ∅_box) is skipped only when neither
    term needs it (w_box = 1 and w = 1). An earlier version also skipped it at w_box = 1 with caption guidance on,
    reading ε(c, B) in the caption term, so w_box 1 and 2 gave the same ε̂ at w = 2."""
    boxed = box_tokens is not None
    need_nobox = boxed and (box_guidance_scale != 1.0 or guidance_scale != 1.0)

    def eps(x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        uncond = torch.full_like(tokens, PAD_ID)
        # branch 0: ε(c, B) — or ε(c, ∅_box) when there are no boxes
        xs, ts, caps, toks = [x], [t], [tokens], [box_tokens if boxed else null_tokens]
        # branch 1 (with boxes, when a guidance term needs it): ε(c, ∅_box)
        if need_nobox:
            xs, ts, caps, toks = xs + [x], ts + [t], caps + [tokens], toks + [null_tokens]
        # last branch (caption CFG only): ε(∅, ∅_box)
        if guidance_scale != 1.0:
            xs, ts, caps, toks = xs + [x], ts + [t], caps + [uncond], toks + [null_tokens]
        kwargs = {} if null_tokens is None else {"box_tokens": BoxTokens.cat(toks)}
        out = model(torch.cat(xs), torch.cat(ts), torch.cat(caps), **kwargs).chunk(len(xs))
        e_main, e_nobox, i = out[0], out[0], 1
        if need_nobox:
            e_nobox = out[1]
            # ε(c, ∅_box) + w_box (ε(c, B) − ε(c, ∅_box))
            e_main = e_nobox + box_guidance_scale * (out[0] - e_nobox)
            i = 2
        if guidance_scale != 1.0:
            # + (w − 1)(ε(c, ∅_box) − ε(∅, ∅_box))
            e_main = e_main + (guidance_scale - 1.0) * (e_nobox - out[i])
        return e_main

    return eps


@torch.no_grad()
def generate_video(
    model: nn.Module,
    tokens: torch.Tensor,
    cond: BoxConditions | None = None,
    *,
    first_frame: torch.Tensor | None = None,
    steps: int = 20,
    box_guidance_scale: float = 1.0,
    guidance_scale: float = 2.0,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Videos ``(B, T, 3, H, W)`` in [0, 1]. ``model`` is a :class:`BoximatorModel` or a bare base video
    denoiser (then ``cond`` must be None); ``first_frame (B, 3, H, W)`` in [0, 1] turns on F0."""
    from ..device import autocast

    frames, channels, height, width = clip_shape(model)
    device = next(model.parameters()).device
    b = tokens.shape[0]
    shape = (b, frames, channels, height, width)
    boxed_model = isinstance(model, BoximatorModel)
    if cond is not None and not boxed_model:
        raise ValueError("box conditions need a BoximatorModel (the base model has no control module)")
    box_tokens = model.box_tokens(cond.to(device), b, frames) if (boxed_model and cond is not None) else None
    null_tokens = model.control.null_tokens(b * frames) if boxed_model else None
    hook = None
    if first_frame is not None:
        if first_frame.shape != (b, *shape[2:]):
            raise ValueError(f"first_frame must be {(b, *shape[2:])}, got {tuple(first_frame.shape)}")
        hook = FirstFrame(to_model_space(first_frame).to(device))
    noise = initial_noise(shape, seed, device)
    eps = guided_eps_model(model, box_tokens, null_tokens, box_guidance_scale, guidance_scale)
    with autocast(device):
        x = ddim_sample(  # with the primer's cure: ε̂ recomputed from the clipped x̂₀ (issue 15)
            eps, noise, tokens.to(device), make_train_scheduler(), steps=steps, hook=hook, seed=seed, progress=progress
        )
    if hook is not None:
        x = hook._put(x)
    return to_image_space(x.float())
