"""Noise schedules through diffusers' schedulers.

Training uses ``DDPMScheduler`` (its ``add_noise`` is q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I), DDPM Eq. 4);
sampling builds a ``DDIMScheduler`` from the same config so both share one ᾱ_t table.
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler

NUM_TRAIN_TIMESTEPS = 1000


def make_train_scheduler(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_schedule: str = "squaredcos_cap_v2"
) -> DDPMScheduler:
    """The forward process. The cosine schedule (Nichol & Dhariwal 2021) suits 32×32 images better than
    the linear one: the linear schedule destroys small images' information too early."""
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type="epsilon",
        clip_sample=False,
    )


def make_ddim_scheduler(
    train_scheduler: DDPMScheduler, steps: int, clip_x0: bool = True, clip_range: float = 1.0
) -> DDIMScheduler:
    """A DDIM sampler over ``steps`` timesteps of the same schedule.

    "trailing" spacing starts at t = T − 1 (pure noise) for every step count, so few-step samplers do not
    begin from a partly clean level that pure noise does not match (Lin et al. 2024, "Common diffusion
    noise schedules and sample steps are flawed", Table 2).

    ``clip_x0`` clips the clean estimate x̂₀ to the data range [−1, 1] before each update, as pixel-space
    DDPM/DDIM samplers do (Ho et al. 2020's ``clip_denoised``). It matters here: the cosine schedule ends at
    ᾱ_999 ≈ 2·10⁻⁹, so the first step's x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t multiplies any error in ε̂ by ~2·10⁴.
    Pass ``False`` for the exact probability-flow ODE map (the adjoint chapters do). ``clip_range``: the bound, for
    data that is not in [−1, 1] (DREAM-Talk's normalised coefficients)."""
    n = train_scheduler.config.num_train_timesteps
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be in [1, {n}], got {steps}")
    sched = DDIMScheduler.from_config(
        train_scheduler.config,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        steps_offset=0,
        clip_sample=clip_x0,
        clip_sample_range=clip_range,
    )
    sched.set_timesteps(steps)
    return sched
