"""Chapter 07 — DREAM-Talk (arXiv 2312.13578): diffusion over expression sequences, then lips refined to the audio."""

from .judges import EmotionClassifier, SyncScorer, frechet_distance
from .models import DreamTalkConfig, EmoDiff, LipRefiner, LSTMRegressor
from .sampling import emodiff_loss, generate

__all__ = [
    "DreamTalkConfig",
    "EmoDiff",
    "EmotionClassifier",
    "LSTMRegressor",
    "LipRefiner",
    "SyncScorer",
    "emodiff_loss",
    "frechet_distance",
    "generate",
]
