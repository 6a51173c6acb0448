"""``python -m bytecourse train magicvideo --stage i2v|v2v|vfi``: the cascade's three trained stages.

Each stage is one resumable command of ≤45 min on the 2-core CPU (``--max-minutes``, ``--resume``) and ships only what
it adds to the shared models (the primer's image model and the course's inflated video model, frozen):

- ``i2v``: the reference encoder, the decoupled reference keys/values and ControlNet-lite
  (:class:`~bytecourse.magicvideo.models.I2V`) on Motion clips whose reference is their own first frame, with
  image–video joint training (a share ``p_image`` of the batches are single Shapes images as one-frame clips, each
  its own reference — MagicVideo-V2 §2). Caption and reference are each dropped with probability 0.1 for CFG.
  The loss is the ε-MSE weighted as the v-loss, half the levels drawn from t ≥ 700, as the video model's stage 2
  (:mod:`~bytecourse.diffusion.videomotion`: a clip's layout and motion are decided at high noise).
- ``v2v``: 32 → 64 px (:class:`~bytecourse.magicvideo.models.V2V`), from the finished I2V stage: the 64-px render of
  a clip is the target, the same clip rendered at 32 px and upsampled bicubically the condition, with Gaussian
  conditioning augmentation (cascaded diffusion, Ho et al. 2022 §3: the stage must repair what the stage below
  gets wrong, not just copy it) and the clip's first 32-px frame as the reference. V2V predicts x̂₀ as a correction
  to the upsampled clip, so its loss is the x̂₀-MSE weighted 1 + min(SNR, 5): the v-loss (which is 1 + SNR in x̂₀
  terms) truncated where SNR is large, since there an ε-error is an x̂₀-error multiplied by up to 10⁴.
  Measured (4 held-out clips of evaluation seed 0, PSNR per frame against the exact 64-px render; bicubic 33.2 dB):

  - the first V2V (3,000 steps, 36 min, no full-resolution path): its one-step x̂₀ was *below* bicubic at every
    level — 31.3 dB at t = 999, 32.3 dB at t = 10 from the true x_t — and sampling from noise gave 28.5 dB;
  - the shipped V2V (2,000 steps, 25 min, with :class:`~bytecourse.magicvideo.models.FineRefiner` and the
    augmentation level as an input): sampling from noise 30.6 dB (+2.1), one-step x̂₀ 30.0 dB at t = 999 and 31.5 dB
    at t = 10, where x_t itself is at 37.5 dB. Looking inside: the backbone's correction r drifted to a 17-dB
    estimate (mean |r| 0.27) and the refiner learnt to cancel it (mean |f| 0.27);
  - tried and not shipped: EDM's preconditioning around the upsampled clip (Karras et al. 2022, Eq. 7:
    x̂₀ = low + c_skip·(x_t/√ᾱ_t − low) + c_out·(r + f), σ_d² = 0.085² + σ_aug², loss weight 1/c_out², uniform
    levels; 2,000 steps, 32 min). Its one-step x̂₀ beat x_t where x_t is nearly clean (38.4 dB at t = 10, x_t 37.4)
    and was 31.3 dB at t = 999, but its samples kept the noise the skip path passes through: at DDIM 20 the last
    level is t = 49, where c_skip ≈ 0.42 lets 0.42·σ·ε through unless the network cancels it, and it had not learnt
    to. On evaluation seeds 0–2 (8 clips each) its SSIM was 0.661 against the shipped design's 0.950 and bicubic's
    0.970, PSNR 28.0 dB per clip (bicubic 29.5), and its sharpness ratio 0.95 was partly that noise. A V2V trained
    the same way without the reference modules scored the same (PSNR 27.96 against 27.97 dB, SSIM 0.666 against
    0.661), so with that design the reference claim was not reproduced either.

  Why V2V's PSNR stays below bicubic whatever the design (measured this session): the world's renderer is aliased
  (7 distinct pixel values at 32 and at 64 px), so the 32-px render fixes a 64-px edge only to within a pixel, and a
  plain 4-layer CNN *regressor* trained with MSE on the same pairs (1,200 steps) also stayed below bicubic (31.9
  against 33.2 dB; 29.1 against 29.4 on training-like clips). The squared-error optimum is a blurred edge, close to
  what bicubic draws; a good sampler draws one sharp edge and puts some a pixel off (the perception–distortion
  trade-off, Blau & Michaeli 2018) — which is why ``eval magicvideo`` scores V2V for sharpness as well. The shipped
  V2V does neither well: on evaluation seeds 0–2 it is *blurrier* than bicubic (sharpness ratio 0.28 against 0.49)
  and 0.45 dB below it (PSNR per clip 29.03 against 29.48): it learnt an average, not a sample. Next suspects: a
  V2V that samples sharp edges without passing noise through (EDM's skip with more steps near t = 0, or a final
  denoising step at the lowest level), and an anti-aliased 64-px render so PSNR can reward the right edge.
- ``vfi``: the frame interpolator on exact middle frames: 15-frame renders at 64 px, odd frames predicted from their
  even neighbours, L1 loss.
- ``v2v_noref`` (an ablation, not shipped): V2V without the reference encoder and ControlNet, for the report's claim
  that reusing them lowers structural error. The one run so far was of the EDM design above; until one of the
  shipped design is trained, ``eval magicvideo`` compares V2V with its reference against the same V2V without one.
- ``vfi_adv`` (the report's interpolator is GAN-based; the issue asks whether an adversarial term measurably
  sharpens): the shipped ``vfi`` fine-tuned with L1 + w·hinge-GAN against a conditional PatchGAN critic
  (:class:`~bytecourse.magicvideo.models.AdversarialVFI`), shipped as its own checkpoint and scored beside the L1
  interpolator (``eval magicvideo``'s VFI table, with the sharpness ratio). Measured (w = 0.01, 1,500 steps,
  7.8 min; evaluation seeds 0–2): it sharpens — sharpness ratio 0.91 against 0.87 — and pays for it in distortion,
  PSNR 30.7 against 32.3 dB per clip, SSIM 0.977 against 0.985. The cascade keeps the L1 interpolator; the critic's
  hinge loss stayed near 2 (it never separated real from interpolated frames by much), so a stronger critic or a
  larger w is the next knob.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoints, seeds, text
from ..configs import JSONConfig
from ..diffusion.sampling import to_model_space
from ..diffusion.schedule import make_train_scheduler
from ..diffusion.training import loss_weights
from ..diffusion.videomotion import CHECKPOINT as VIDEO_CHECKPOINT
from ..diffusion.videomotion import load_inflated_video_model
from ..trainer import seeded_init, train_and_ship
from ..worlds import ShapesConfig, make_shapes
from ..worlds.motion import MotionConfig, make_motion
from .models import I2V, V2V, AdversarialVFI, FrameInterpolator, MagicVideoConfig

STAGES = ("i2v", "v2v", "vfi", "v2v_noref")
CHECKPOINTS = {s: f"magicvideo_{s}" for s in STAGES + ("vfi_adv",)}
#: the joint-training claim's regimes (trained, evaluated and recorded in the manifest; not shipped): I2V on a fixed
#: pool of N clips; on N/10 of them; on N/10 of them plus single images — equal steps
JOINT_STAGES = ("i2v_pool", "i2v_scarce", "i2v_scarce_joint")
#: the VFI's adversarial fine-tuning (the report's interpolator is GAN-based): shipped as its own checkpoint and
#: evaluated beside the L1 interpolator (kept out of STAGES so that the other stages' seeds do not move)
ADV_STAGE = "vfi_adv"
ALL_STAGES = STAGES + JOINT_STAGES + (ADV_STAGE,)
POOL_BATCHES = {"i2v_pool": 100, "i2v_scarce": 10, "i2v_scarce_joint": 10}  # batches of 8 clips: N = 800, N/10 = 80
#: the motion kinds of the chapter: a reference image shows its object, so "enters from the left" (an empty first
#: frame) is left out of training and evaluation alike
KINDS = ("linear", "curved", "bouncing", "leaving")


@dataclass(frozen=True)
class StageSpec(JSONConfig):
    steps: int
    lr: float
    batch: int
    warmup: int = 100


@dataclass(frozen=True)
class MagicVideoTrainConfig(JSONConfig):
    model: MagicVideoConfig = field(default_factory=MagicVideoConfig)
    i2v: StageSpec = StageSpec(steps=3000, lr=5e-4, batch=8)
    v2v: StageSpec = StageSpec(steps=2000, lr=5e-4, batch=4)
    vfi: StageSpec = StageSpec(steps=2500, lr=1e-3, batch=8)
    v2v_noref: StageSpec = StageSpec(steps=2000, lr=5e-4, batch=4)
    vfi_adv: StageSpec = StageSpec(steps=1500, lr=2e-4, batch=8)
    vfi_adv_weight: float = 0.01  # w of the interpolator's adversarial term (pix2pix: L1 × 100 beside GAN × 1)
    i2v_pool: StageSpec = StageSpec(steps=1000, lr=5e-4, batch=8)
    i2v_scarce: StageSpec = StageSpec(steps=1000, lr=5e-4, batch=8)
    i2v_scarce_joint: StageSpec = StageSpec(steps=1000, lr=5e-4, batch=8)
    p_image_joint: float = 0.5  # the scarce regime's share of image batches
    p_image: float = 0.2  # image–video joint training: share of I2V batches that are single images
    p_uncond: float = 0.1  # caption dropped (CFG)
    p_noref: float = 0.1  # reference dropped (CFG)
    high_noise: tuple[float, int] = (0.5, 700)
    max_loss_weight: float = 20.0
    low_noise: float = 0.2  # V2V conditioning augmentation: σ ~ U(0, low_noise) in model space
    v2v_snr_cap: float = 5.0  # V2V's x̂₀ loss weight 1 + min(SNR, cap): the v-loss, truncated at the low-noise end
    max_objects: int = 2
    object_probs: tuple[float, ...] = (0.6, 0.4)
    ema_decay: float = 0.999
    seed: int = 0

    def spec(self, stage: str) -> StageSpec:
        return getattr(self, stage)

    def world(self, frames: int = 8, size: int = 32) -> MotionConfig:
        return MotionConfig(
            frames=frames,
            size=size,
            max_objects=self.max_objects,
            object_probs=self.object_probs,
            kinds=KINDS,
            caption_length=24,
        )


def _data_seed(config: MagicVideoTrainConfig, stage: str, step: int) -> int:
    if stage == ADV_STAGE:
        return seeds.MAGICVIDEO_DATA + 9_000_000 + config.seed * 100_000 + step
    if stage in JOINT_STAGES:  # noise, levels and images: the regime's own stream
        return (
            seeds.MAGICVIDEO_DATA
            + (len(STAGES) + JOINT_STAGES.index(stage)) * 1_000_000
            + config.seed * 100_000
            + step
        )
    return seeds.MAGICVIDEO_DATA + STAGES.index(stage) * 1_000_000 + config.seed * 100_000 + step


def _pool_seed(config: MagicVideoTrainConfig, stage: str, step: int) -> int:
    """The clip batch of a joint-claim regime at ``step``: batch ``step mod POOL_BATCHES[stage]`` of one fixed pool
    (every regime's first ten batches are the same clips, so the scarce set is part of the large one)."""
    return seeds.MAGICVIDEO_DATA + 4_900_000 + config.seed * 1_000 + step % POOL_BATCHES[stage]


def _levels(config: MagicVideoTrainConfig, b: int, g: torch.Generator, scheduler):
    total = scheduler.config.num_train_timesteps
    t = torch.randint(0, total, (b,), generator=g)
    p, t_from = config.high_noise
    high = torch.randint(t_from, total, (b,), generator=g)
    return torch.where(torch.rand(b, generator=g) < p, high, t)


def _weighted_mse(config, scheduler, eps: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    w = loss_weights(scheduler.alphas_cumprod.to(eps.device)[t].float(), "v", config.max_loss_weight)
    return (w * (eps.float() - noise.float()).pow(2).flatten(1).mean(1)).mean()


def _drop(tokens: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    drop = torch.rand(tokens.shape[0], generator=g) < p
    return torch.where(drop[:, None], torch.full_like(tokens, text.PAD_ID), tokens)


def i2v_loss(config: MagicVideoTrainConfig, stage: str = "i2v"):
    scheduler = make_train_scheduler()
    spec, world = config.spec(stage), config.world()
    images = ShapesConfig(size=32, max_objects=config.max_objects, object_probs=config.object_probs, caption_length=24)

    p_image = {"i2v": config.p_image, "i2v_scarce_joint": config.p_image_joint}.get(stage, 0.0)

    def loss_fn(model: I2V, step: int, device) -> torch.Tensor:
        s = _data_seed(config, stage, step)
        g = torch.Generator().manual_seed(s + seeds.NOISE_SUBSTREAM)
        if float(torch.rand((), generator=g)) < p_image:  # joint training: images as one-frame clips
            batch = make_shapes(spec.batch * world.frames, s, images)
            x0, tokens = to_model_space(batch.images)[:, None], batch.tokens
        else:
            clip_seed = _pool_seed(config, stage, step) if stage in JOINT_STAGES else s
            batch = make_motion(spec.batch, clip_seed, world)
            x0, tokens = to_model_space(batch.videos), batch.tokens
        ref = x0[:, 0]
        b = x0.shape[0]
        t = _levels(config, b, g, scheduler)
        noise = torch.randn(x0.shape, generator=g)
        tokens = _drop(tokens, config.p_uncond, g)
        keep = torch.rand(b, generator=g) >= config.p_noref
        x0, t, noise, tokens, ref = (v.to(device) for v in (x0, t, noise, tokens, ref))
        xt = scheduler.add_noise(x0, noise, t)
        eps = torch.empty_like(xt)
        k, d = keep.nonzero()[:, 0].to(device), (~keep).nonzero()[:, 0].to(device)
        if len(k):  # a dropped reference reads no reference at all (not a zero one): the groups run apart
            eps[k] = model(xt[k], t[k], tokens[k], ref[k])
        if len(d):
            eps[d] = model(xt[d], t[d], tokens[d], None)
        return _weighted_mse(config, scheduler, eps, noise, t)

    return loss_fn


def upsample(clip: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Bicubic upsampling of ``(B, T, C, h, w)`` clips to ``size`` (the V2V condition and the baseline's 64 px)."""
    b, t = clip.shape[:2]
    up = F.interpolate(clip.flatten(0, 1).float(), size=(size, size), mode="bicubic", align_corners=False)
    return up.view(b, t, clip.shape[2], size, size).to(clip.dtype)


def v2v_loss(config: MagicVideoTrainConfig, stage: str = "v2v"):
    scheduler = make_train_scheduler()
    spec = config.spec(stage)

    def loss_fn(model: V2V, step: int, device) -> torch.Tensor:
        s = _data_seed(config, stage, step)
        g = torch.Generator().manual_seed(s + seeds.NOISE_SUBSTREAM)
        hi = make_motion(spec.batch, s, config.world(size=64))
        lo = make_motion(spec.batch, s, config.world(size=32))  # the same clips (the world scales exactly)
        x0 = to_model_space(hi.videos)
        low = upsample(to_model_space(lo.videos))
        sigma = torch.rand(spec.batch, 1, 1, 1, 1, generator=g) * config.low_noise
        low = low + sigma * torch.randn(low.shape, generator=g)
        ref = to_model_space(lo.videos[:, 0])
        t = _levels(config, spec.batch, g, scheduler)
        noise = torch.randn(x0.shape, generator=g)
        tokens = _drop(hi.tokens, config.p_uncond, g)
        keep = torch.rand(spec.batch, generator=g) >= config.p_noref
        x0, t, noise, tokens, ref, low = (v.to(device) for v in (x0, t, noise, tokens, ref, low))
        xt = scheduler.add_noise(x0, noise, t)
        x0_hat = torch.empty_like(xt)
        k, d = keep.nonzero()[:, 0].to(device), (~keep).nonzero()[:, 0].to(device)
        aug = sigma.flatten().to(device)
        if len(k):
            x0_hat[k] = model(xt[k], t[k], tokens[k], low[k], ref[k], return_x0=True, aug=aug[k])[1]
        if len(d):
            x0_hat[d] = model(xt[d], t[d], tokens[d], low[d], None, return_x0=True, aug=aug[d])[1]
        acp = scheduler.alphas_cumprod.to(device)[t].float()
        w = 1 + (acp / (1 - acp)).clamp(max=config.v2v_snr_cap)  # the v-loss in x̂₀ terms, 1 + SNR, SNR truncated
        return (w * (x0_hat.float() - x0.float()).pow(2).flatten(1).mean(1)).mean()

    return loss_fn


def _vfi_triplets(config: MagicVideoTrainConfig, stage: str, step: int, device) -> tuple[torch.Tensor, ...]:
    """Neighbours a, b and the exact middle frame of a batch of 15-frame 64-px renders, each ``(N, 3, 64, 64)``."""
    world = replace(config.world(frames=15, size=64), kinds=KINDS)
    clips = make_motion(config.spec(stage).batch, _data_seed(config, stage, step), world).videos
    a, mid, b = clips[:, 0:-2:2], clips[:, 1::2], clips[:, 2::2]
    return tuple(v.flatten(0, 1).to(device) for v in (a, b, mid))


def vfi_loss(config: MagicVideoTrainConfig):
    def loss_fn(model: FrameInterpolator, step: int, device) -> torch.Tensor:
        a, b, mid = _vfi_triplets(config, "vfi", step, device)
        return F.l1_loss(model(a, b), mid)

    return loss_fn


def vfi_adv_loss(config: MagicVideoTrainConfig):
    """L_G + L_D of :class:`~bytecourse.magicvideo.models.AdversarialVFI` (each network moves by its own loss)."""

    def loss_fn(model: AdversarialVFI, step: int, device) -> torch.Tensor:
        g, d = model.losses(*_vfi_triplets(config, ADV_STAGE, step, device))
        return g + d

    return loss_fn


def build(config: MagicVideoTrainConfig, stage: str, parents: dict | None = None):
    """The model a stage trains; its parents are the shipped checkpoints, or ``parents["i2v"]`` (an I2V delta) in
    memory — the notebooks' fallback of short live runs."""
    parents = parents or {}
    if stage == "vfi":
        return FrameInterpolator(config.model.vfi_channels)
    if stage == ADV_STAGE:  # fine-tunes the shipped L1 interpolator
        vfi = FrameInterpolator(config.model.vfi_channels)
        vfi.load_state_dict(parents.get("vfi") or checkpoints.load_checkpoint(CHECKPOINTS["vfi"])[0])
        return AdversarialVFI(vfi, config.vfi_adv_weight)
    video, _, _ = load_inflated_video_model()
    i2v = I2V(video, config.model)
    if stage == "i2v" or stage in JOINT_STAGES:
        for m in i2v.trainable():
            m.requires_grad_(True)
        return i2v
    i2v.load_delta(parents.get("i2v") or checkpoints.load_checkpoint(CHECKPOINTS["i2v"])[0])
    model = V2V(i2v, config.model, use_reference=stage == "v2v")
    model.requires_grad_(False)
    for m in model.trainable():
        m.requires_grad_(True)
    return model


def train_stage(
    config: MagicVideoTrainConfig,
    stage: str,
    *,
    run_dir: Path | None = None,
    ship: bool = True,
    device: str = "auto",
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
    on_step=None,
    parents: dict | None = None,
):
    """Train (or continue) one stage; ship it when it completes and ``ship``."""
    if stage not in ALL_STAGES:
        raise ValueError(f"stage must be one of {ALL_STAGES}, got {stage!r}")
    spec = config.spec(stage)
    model = seeded_init(config.seed + ALL_STAGES.index(stage), lambda: build(config, stage, parents))
    if stage == "vfi":
        loss_fn, state_dict = vfi_loss(config), None
    elif stage == ADV_STAGE:
        loss_fn, state_dict = vfi_adv_loss(config), lambda m: m.interpolator.state_dict()
    elif stage == "i2v" or stage in JOINT_STAGES:
        loss_fn, state_dict = i2v_loss(config, stage), lambda m: m.delta_state_dict()
    else:
        loss_fn, state_dict = v2v_loss(config, stage), lambda m: m.delta_state_dict()
    parent_names = (
        []
        if stage == "vfi"
        else ["magicvideo_vfi"]
        if stage == ADV_STAGE
        else ["primer_unet", VIDEO_CHECKPOINT] + (["magicvideo_i2v"] if stage in ("v2v", "v2v_noref") else [])
    )

    def entry(_state) -> dict:
        return {"parents": {n: checkpoints.manifest_entry(n)["sha256"] for n in parent_names}, "stage": stage}

    return train_and_ship(
        model,
        loss_fn,
        target="magicvideo",
        checkpoint=CHECKPOINTS.get(stage),
        config=config.to_dict() | {"stage": stage},
        total_steps=spec.steps,
        lr=spec.lr,
        run_dir=run_dir or Path("runs/magicvideo") / f"seed{config.seed}" / stage,
        seed=config.seed,
        ship=ship,
        state_dict=state_dict,
        entry=entry,
        command=f"python -m bytecourse train magicvideo --stage {stage}"
        + (f" --seed {config.seed}" if config.seed else ""),
        warmup=spec.warmup,
        ema_decay=config.ema_decay,
        resume=resume,
        max_minutes=max_minutes,
        device=device,
        progress=progress,
        on_step=on_step,
    )


def cli_train(options) -> dict:
    """One stage (``--stage``), or i2v → v2v → vfi in order; ``--steps`` overrides the steps (smoke tests)."""
    config = MagicVideoTrainConfig(seed=options.seed)
    if options.steps:
        config = replace(config, **{s: replace(config.spec(s), steps=options.steps) for s in ALL_STAGES})
    if options.stage in JOINT_STAGES:
        return train_joint_regime(
            config, options.stage, device=options.device, resume=options.resume, max_minutes=options.max_minutes
        )
    stages = [options.stage] if options.stage else ["i2v", "v2v", "vfi"]
    deadline = None if options.max_minutes is None else time.time() + 60 * options.max_minutes
    out = {}
    for stage in stages:
        left = None if deadline is None else max(0.01, (deadline - time.time()) / 60)
        run_dir = Path("runs/magicvideo") / f"seed{config.seed}" / stage
        resume = bool(options.resume) and (run_dir / "state.json").exists()
        _, summary = train_stage(config, stage, device=options.device, resume=resume, max_minutes=left)
        out[stage] = summary
        if not summary["finished"]:
            break
    return out


def load_models(device: str | torch.device = "cpu", ablations: bool = True) -> dict:
    """The cascade's models, frozen: ``primer`` (T2I), ``video`` (the single-stage baseline), ``i2v``, ``v2v``,
    ``vfi``, and with ``ablations`` those of ``v2v_noref`` and ``vfi_adv`` that are shipped."""
    from ..diffusion.image_model import load_image_model

    config = MagicVideoTrainConfig()
    primer, _ = load_image_model()
    video, _, _ = load_inflated_video_model()
    i2v = I2V(load_inflated_video_model()[0], config.model)
    i2v.load_delta(checkpoints.load_checkpoint(CHECKPOINTS["i2v"])[0])
    v2v = V2V(i2v, config.model)
    v2v.load_delta(checkpoints.load_checkpoint(CHECKPOINTS["v2v"])[0])
    vfi = FrameInterpolator(config.model.vfi_channels)
    vfi.load_state_dict(checkpoints.load_checkpoint(CHECKPOINTS["vfi"])[0])
    models = {"primer": primer, "video": video, "i2v": i2v, "v2v": v2v, "vfi": vfi}
    if ablations and checkpoints.checkpoint_available(CHECKPOINTS["v2v_noref"]):
        noref = V2V(i2v, config.model, use_reference=False)
        noref.load_delta(checkpoints.load_checkpoint(CHECKPOINTS["v2v_noref"])[0])
        models["v2v_noref"] = noref
    if ablations and checkpoints.checkpoint_available(CHECKPOINTS[ADV_STAGE]):
        models[ADV_STAGE] = FrameInterpolator(config.model.vfi_channels)
        models[ADV_STAGE].load_state_dict(checkpoints.load_checkpoint(CHECKPOINTS[ADV_STAGE])[0])
    return {k: m.to(device).eval().requires_grad_(False) for k, m in models.items()}


def train_joint_regime(config: MagicVideoTrainConfig, stage: str, *, seeds_: tuple[int, ...] = (0, 1, 2), **options):
    """One regime of the joint-training claim: train it (not shipped: three more I2V deltas would not fit the chapter's
    share), evaluate it on the held-out clips (:func:`~bytecourse.magicvideo.evaluate.joint_seed`) and record the
    run, its command, wall time and per-seed metrics in the manifest (``runs.magicvideo``), where ``eval magicvideo``
    reads them."""
    from .evaluate import joint_seed

    model, summary = train_stage(config, stage, ship=False, **options)
    if not summary["finished"]:
        return summary
    t0 = time.time()
    per_seed = [joint_seed(model.eval(), s) for s in seeds_]
    record = {
        "command": f"python -m bytecourse train magicvideo --stage {stage}"
        + (f" --seed {config.seed}" if config.seed else ""),
        "config": config.to_dict() | {"stage": stage},
        "seed": config.seed,
        "device": checkpoints.device_description(torch.device(summary["device"])),
        "wall_time_s": summary["wall_time_s"],
        "eval_time_s": round(time.time() - t0, 1),
        "eval_seeds": list(seeds_),
        "per_seed": per_seed,
        "parents": {n: checkpoints.manifest_entry(n)["sha256"] for n in ("primer_unet", VIDEO_CHECKPOINT)},
    }
    checkpoints.record_run("magicvideo", f"joint/{stage}", record)
    return summary | {"per_seed": per_seed}


def quick_train(stage: str = "i2v", steps: int = 15, device: str = "auto"):
    """A short live run of ``stage``'s own training code (nothing written to ``data/``): the notebook's *Train* demo.
    Its parents are the shipped checkpoints."""
    from ..trainer import quick_run

    config = MagicVideoTrainConfig()
    config = replace(config, **{stage: replace(config.spec(stage), steps=steps, warmup=min(5, steps))})
    return quick_run(lambda c, **o: train_stage(c, stage, progress=False, device=device, **o), config)


def quick_models(steps: int = 20, device: str = "cpu") -> dict:
    """Every stage's own training code for ``steps`` steps, parents in memory, nothing written to ``data/``: the
    notebook's fallback when a checkpoint is not shipped (expect a cascade that barely differs from its parents)."""
    from ..diffusion.image_model import load_image_model
    from ..trainer import quick_run

    config = MagicVideoTrainConfig()
    config = replace(config, **{s: replace(config.spec(s), steps=steps, warmup=min(5, steps)) for s in STAGES})

    def run(stage: str, parents: dict | None = None):
        return quick_run(
            lambda c, **o: train_stage(c, stage, progress=False, device=device, parents=parents, **o), config
        )[0]

    i2v = run("i2v")
    v2v = run("v2v", {"i2v": i2v.delta_state_dict()})
    models = {"primer": load_image_model()[0], "video": load_inflated_video_model()[0], "i2v": i2v, "v2v": v2v}
    models["vfi"] = run("vfi")
    return {k: m.to(device).eval().requires_grad_(False) for k, m in models.items()}


def get_models(device: str = "cpu") -> tuple[dict, str]:
    """The shipped models when every checkpoint of the cascade is present; otherwise short live runs of the same code
    (and the string says so)."""
    if all(checkpoints.checkpoint_available(CHECKPOINTS[s]) for s in ("i2v", "v2v", "vfi")):
        return load_models(device), "shipped checkpoints"
    return quick_models(device=device), "no shipped checkpoints: short live runs of the training code (20 steps each)"
