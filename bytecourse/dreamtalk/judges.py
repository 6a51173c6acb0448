"""The chapter's evaluation models, trained on the Talking world's ground truth and used only to evaluate.

**Lip-sync scorer**, in the spirit of SyncNet (Chung & Zisserman 2016) and the LSE metrics talking-face papers
report (Prajwal et al. 2020, Wav2Lip §4.1): an audio encoder and a mouth encoder map a short window around each
frame (±2 frames) to unit vectors, trained contrastively (InfoNCE) so that in-sync pairs are close and off-sync
pairs (other frames of the same clip, other clips) are far. For a clip, d(δ) is the mean distance between audio
window t and mouth window t + δ over the frames, for offsets δ ∈ [−6, 6]; then

    LSE-D = min_δ d(δ)            (lower: audio and mouth agree),
    LSE-C = median_δ d(δ) − LSE-D   (higher: the in-sync offset stands out — the scorer's *confidence*).

**Emotion classifier**: a 1-D CNN over the whole-face sequence (all D coefficients) with mean and std pooling over
time (an emotion is in the offsets *and* in the dynamics), a 64-d feature layer and a 5-way head. Its features
define a **Fréchet distance** between sets of sequences (as FID does with Inception features, Heusel et al. 2017):

    FD = ‖μ_1 − μ_2‖² + Tr(Σ_1 + Σ_2 − 2 (Σ_1^{1/2} Σ_2 Σ_1^{1/2})^{1/2}).
"""

from __future__ import annotations

import torch
from torch import nn

from ..worlds.talking import AUDIO_DIM, EMOTIONS, MOUTH_DIMS, D, TalkingConfig, coefficient_statistics

SYNC_OFFSETS = 6
N_MOUTH = MOUTH_DIMS.stop - MOUTH_DIMS.start


def _window_encoder(inputs: int, dim: int = 64, out: int = 32) -> nn.Sequential:
    """Two kernel-3 convolutions over time: each output frame sees a 5-frame window."""
    return nn.Sequential(
        nn.Conv1d(inputs, dim, 3, padding=1),
        nn.GELU(),
        nn.Conv1d(dim, dim, 3, padding=1),
        nn.GELU(),
        nn.Conv1d(dim, out, 1),
    )


class SyncScorer(nn.Module):
    """``embed(audio (B,T,F), mouth (B,T,4)) → (a, m)``, each (B,T,32) unit vectors per frame window."""

    def __init__(self, audio_dim: int = AUDIO_DIM):
        super().__init__()
        mean, std = coefficient_statistics(TalkingConfig(audio_dim=audio_dim))
        self.register_buffer("mean", mean[MOUTH_DIMS].clone())
        self.register_buffer("std", std[MOUTH_DIMS].clone())
        self.audio = _window_encoder(audio_dim)
        self.mouth = _window_encoder(N_MOUTH)
        self.log_temperature = nn.Parameter(torch.tensor(-2.0))

    def embed(self, audio: torch.Tensor, mouth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.audio(audio.transpose(1, 2)).transpose(1, 2)
        m = self.mouth(((mouth - self.mean) / self.std).transpose(1, 2)).transpose(1, 2)
        return nn.functional.normalize(a, dim=-1), nn.functional.normalize(m, dim=-1)

    def loss(self, audio: torch.Tensor, mouth: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over every (clip, frame) window of the batch: the positive of audio window (b, t) is mouth
        window (b, t); every other window — the same clip off-sync included — is a negative. The two border frames
        on each side (padded windows) are left out."""
        a, m = self.embed(audio, mouth)
        a, m = a[:, 2:-2].reshape(-1, a.shape[-1]), m[:, 2:-2].reshape(-1, m.shape[-1])
        logits = a @ m.T / self.log_temperature.exp()
        labels = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))

    @torch.no_grad()
    def lse(self, audio: torch.Tensor, mouth: torch.Tensor, offsets: int = SYNC_OFFSETS) -> dict[str, torch.Tensor]:
        """Per clip: ``lse_d`` and ``lse_c`` (B,), and the best offset (B,) in frames."""
        a, m = self.embed(audio, mouth)
        frames = a.shape[1]
        lo, hi = offsets + 2, frames - offsets - 2  # audio frames whose every shifted mouth window is inside
        dists = torch.stack(
            [(a[:, lo:hi] - m[:, lo + d : hi + d]).norm(dim=-1).mean(1) for d in range(-offsets, offsets + 1)], 1
        )
        return lse_from_distances(dists) | {"offset": dists.argmin(1) - offsets}


def lse_from_distances(dists: torch.Tensor) -> dict[str, torch.Tensor]:
    """SyncNet's two numbers from per-clip distances at each offset, ``dists`` (B, offsets):
    LSE-D = min over offsets, LSE-C = median − min."""
    dmin = dists.min(1).values
    return {"lse_d": dmin, "lse_c": dists.median(1).values - dmin}


class EmotionClassifier(nn.Module):
    """``forward(coeffs (B,T,D)) → logits (B,5)``; ``features`` gives the 64-d layer the Fréchet distance uses."""

    def __init__(self, coeff_dim: int = D, frames: int = 40):
        super().__init__()
        mean, std = coefficient_statistics(TalkingConfig(frames=frames))
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.conv = nn.Sequential(
            nn.Conv1d(coeff_dim, 64, 5, padding=2), nn.GELU(), nn.Conv1d(64, 64, 5, padding=2, stride=2), nn.GELU()
        )
        self.feature = nn.Sequential(nn.Linear(128, 64), nn.GELU())
        self.head = nn.Linear(64, len(EMOTIONS))

    def features(self, coeffs: torch.Tensor) -> torch.Tensor:
        h = self.conv(((coeffs - self.mean) / self.std).transpose(1, 2))
        return self.feature(torch.cat([h.mean(-1), h.std(-1)], -1))

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(coeffs))


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between two feature sets (N, d) under Gaussian fits (float64)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"frechet_distance needs two (N ≥ 2, d) feature sets, got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.double(), b.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * torch.trace(cross))


__all__ = ["SYNC_OFFSETS", "EmotionClassifier", "SyncScorer", "frechet_distance", "lse_from_distances"]
