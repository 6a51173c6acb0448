"""The shared diffusion substrate: schedules, the training step, samplers with hooks, tiny denoisers."""

from .attention import Attention, SDPAProcessor
from .sampling import (
    RecordTrajectory,
    SamplerHook,
    StepState,
    ddim_sample,
    ddpm_sample,
    guided_eps,
    initial_noise,
    null_tokens_like,
    to_image_space,
    to_model_space,
)
from .schedule import make_ddim_scheduler, make_train_scheduler
from .training import EMA, diffusion_loss, drop_condition
from .unet import ImageDenoiser, UNetConfig

__all__ = [
    "EMA",
    "Attention",
    "RecordTrajectory",
    "ImageDenoiser",
    "SDPAProcessor",
    "SamplerHook",
    "StepState",
    "UNetConfig",
    "ddim_sample",
    "ddpm_sample",
    "diffusion_loss",
    "drop_condition",
    "guided_eps",
    "initial_noise",
    "make_ddim_scheduler",
    "make_train_scheduler",
    "null_tokens_like",
    "to_image_space",
    "to_model_space",
]
