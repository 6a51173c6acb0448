"""The Talking world: a proxy avatar's blendshape-like coefficients per frame, driven by a spoken "sentence" and an
emotion, with audio features that must be *learnt* to be read (DREAM-Talk's setting, chapter 07).

**Coefficients** (``D = 11`` per frame, ARKit-like and roughly in [−1, 1]):

- mouth (4): ``jaw_open``, ``lip_width``, ``lip_round``, ``mouth_corner`` (smile > 0 > frown);
- upper face (4): ``brow_raise``, ``brow_furrow``, ``eye_open`` (0 = normally open, −1 = shut), ``cheek_raise``;
- head pose (3): ``pitch``, ``yaw``, ``roll``.

**A sentence** is a phoneme sequence with durations (2–6 frames each, starting with silence, with occasional
pauses; the clip's end cuts the last phoneme). Each phoneme has a mouth
target (jaw, width, rounding); the frame-level targets are smoothed along time (Gaussian, ``coarticulation``
frames) — coarticulation: a mouth is already moving towards the next sound.

**Emotion** ∈ :data:`EMOTIONS` with an intensity ``I ∈ [0, 1]`` and a per-clip scale ``s`` (how strongly this clip
shows it) sets

- upper-face and pose offsets ``I·s·offset[e]`` (a frown furrows the brows, sadness bows the head);
- the dynamics: every upper-face and pose coefficient adds a noise-driven damped oscillator whose amplitude and
  frequency move from neutral's towards the emotion's with ``I·s`` (anger is jerky, sadness slow and small), plus
  blinks at a rate that does the same — at intensity 0 every emotion is neutral;
- **the mouth as well**: ``jaw ← jaw·(1 + I·s·g[e]) + I·s·j[e]``, ``width += I·s·w[e]``, ``corner += I·s·c[e]`` (a
  smile widens the lips and lifts the corners, sadness narrows the articulation and lowers them), so lip sync and
  emotion compete for the same coefficients, as they do on real faces.

The **mouth target** of a clip (``TalkingBatch.mouth_target``) is its noise-free mouth: the coarticulated phoneme
targets shaped by the clip's emotion. The clip's mouth adds a small smooth jitter to it.

**Audio features** (``F = 16`` per frame) are *not* the phoneme ids: a fixed spectral-like template per phoneme,
smoothed along time like the mouth, passed through a per-clip **speaker** transform (a random near-identity linear
map, a bias and a gain) plus noise. A model has to learn audio → phoneme → mouth, across speakers. The audio does
not depend on the emotion (so a model that wants the emotion must read the style clip).

**A style clip** (DREAM-Talk's *emotion style*) is another clip of the same emotion and intensity with a different
sentence, speaker and per-clip scale.

:func:`resample_dynamics` redraws what the world leaves to chance once the inputs are fixed (oscillator velocities
and innovations, blinks, mouth jitter) while keeping the sentence, speaker, emotion, scale and the whole first frame:
it measures the world's own variation *given the inputs a model sees*, the yardstick of a generative model's
diversity.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch

from ..validation import check_choice, check_float, check_int

EMOTIONS: tuple[str, ...] = ("neutral", "happy", "angry", "sad", "surprised")
MOUTH: tuple[str, ...] = ("jaw_open", "lip_width", "lip_round", "mouth_corner")
UPPER: tuple[str, ...] = ("brow_raise", "brow_furrow", "eye_open", "cheek_raise")
POSE: tuple[str, ...] = ("pitch", "yaw", "roll")
COEFFICIENTS: tuple[str, ...] = MOUTH + UPPER + POSE
MOUTH_DIMS = slice(0, len(MOUTH))
UPPER_DIMS = slice(len(MOUTH), len(MOUTH) + len(UPPER))
POSE_DIMS = slice(len(MOUTH) + len(UPPER), len(COEFFICIENTS))
D = len(COEFFICIENTS)
FPS = 25

PHONEMES: tuple[str, ...] = ("sil", "AA", "IY", "UW", "M", "F", "OW", "EH", "S", "L")
# mouth targets per phoneme: (jaw_open, lip_width, lip_round)
_ARTICULATION = torch.tensor(
    [
        [0.05, 0.0, 0.0],  # sil
        [0.9, 0.1, 0.0],  # AA  "father"
        [0.25, 0.8, 0.0],  # IY  "see"
        [0.2, -0.5, 0.9],  # UW  "you"
        [0.0, 0.0, 0.0],  # M   lips closed (as sil, but voiced: only the audio tells them apart)
        [0.15, 0.25, 0.0],  # F   lower lip to teeth
        [0.6, -0.3, 0.7],  # OW  "go"
        [0.55, 0.45, 0.0],  # EH  "bed"
        [0.15, 0.55, 0.0],  # S   teeth together, lips spread
        [0.4, 0.1, 0.1],  # L
    ]
)

# emotion → mouth shaping (jaw gain g, jaw offset j, width w, rounding r, corner c), times I·s
_MOUTH_SHAPING = torch.tensor(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],  # neutral
        [0.1, 0.0, 0.45, 0.0, 0.7],  # happy: wide, corners up
        [0.15, 0.0, 0.15, 0.0, -0.3],  # angry: tense, bigger articulation, corners down
        [-0.35, 0.0, -0.1, 0.0, -0.6],  # sad: mumbled, corners down
        [0.3, 0.25, -0.2, 0.2, 0.0],  # surprised: mouth hangs open, rounded
    ]
)
# emotion → upper-face offsets (brow_raise, brow_furrow, eye_open, cheek_raise) and pose offsets (pitch, yaw, roll)
_UPPER_OFFSET = torch.tensor(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.2, 0.0, -0.15, 0.7],
        [-0.3, 0.8, 0.1, 0.1],
        [0.35, 0.3, -0.35, -0.1],
        [0.8, -0.1, 0.5, 0.0],
    ]
)
_POSE_OFFSET = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.05], [-0.1, 0.0, 0.0], [-0.3, 0.0, -0.05], [0.2, 0.0, 0.0]])
# emotion → dynamics: upper-face amplitude, pose amplitude (added to a neutral base, times I), frequency (Hz), blinks
_DYNAMICS = torch.tensor(
    [
        # upper amp, pose amp, upper Hz, pose Hz, blinks per second
        [0.0, 0.0, 0.5, 0.4, 0.4],  # neutral
        [0.12, 0.14, 1.6, 1.4, 0.4],  # happy: lively, nodding
        [0.10, 0.18, 2.2, 2.4, 0.2],  # angry: jerky
        [0.02, 0.02, 0.4, 0.3, 0.7],  # sad: slow, small, blinking
        [0.16, 0.10, 1.0, 0.9, 0.1],  # surprised: wide-eyed, rarely blinking
    ]
)
_BASE_UPPER_AMP, _BASE_POSE_AMP = 0.04, 0.05
_DAMPING = 0.25
_TEMPLATE_SEED = 20231221  # the audio templates are part of the world: fixed, the same on every machine
AUDIO_DIM = 16


@dataclass(frozen=True)
class TalkingConfig:
    """Toy defaults. ``intensity_range`` is where clips' intensities are drawn (neutral clips ignore it)."""

    frames: int = 40
    audio_dim: int = AUDIO_DIM
    duration_range: tuple[int, int] = (2, 6)
    intensity_range: tuple[float, float] = (0.15, 1.0)
    scale_spread: float = 0.15  # per-clip scale s ~ U(1 − spread, 1 + spread)
    coarticulation: float = 1.3  # Gaussian σ, in frames, of the mouth-target and audio smoothing
    speaker_spread: float = 0.25
    audio_noise: float = 0.15
    mouth_jitter: float = 0.02
    pause_prob: float = 0.1

    def validate(self) -> None:
        check_int("frames", self.frames, 8, 512)
        check_int("audio_dim", self.audio_dim, 4, 256)
        lo, hi = (check_int(f"duration_range[{i}]", v, 1, 64) for i, v in enumerate(self.duration_range))
        if lo > hi:
            raise ValueError(f"duration_range must be (lo, hi) with lo <= hi, got {self.duration_range}")
        a, b = (check_float(f"intensity_range[{i}]", v, 0.0, 1.0) for i, v in enumerate(self.intensity_range))
        if a > b:
            raise ValueError(f"intensity_range must be (lo, hi) with lo <= hi, got {self.intensity_range}")
        check_float("scale_spread", self.scale_spread, 0.0, 0.9)
        check_float("coarticulation", self.coarticulation, 0.0, 10.0)
        for name in ("speaker_spread", "audio_noise", "mouth_jitter"):
            check_float(name, getattr(self, name), 0.0, 10.0)
        check_float("pause_prob", self.pause_prob, 0.0, 1.0)


@dataclass
class TalkingBatch:
    """coeffs (B,T,D); audio (B,T,F); phonemes (B,T) frame-level ids into PHONEMES; mouth_target (B,T,4), the
    noise-free mouth; emotion (B,) into EMOTIONS; intensity (B,); scale (B,); style (B,T,D), another clip of the same
    emotion and intensity; sentences: per clip the list of (phoneme, frames). ``latent`` holds what
    :func:`resample_dynamics` needs (the oscillators' state at frame 0 and the world config)."""

    coeffs: torch.Tensor
    audio: torch.Tensor
    phonemes: torch.Tensor
    mouth_target: torch.Tensor
    emotion: torch.Tensor
    intensity: torch.Tensor
    scale: torch.Tensor
    style: torch.Tensor
    sentences: list[list[tuple[str, int]]]
    latent: dict

    @property
    def initial(self) -> torch.Tensor:
        """The initial state, DREAM-Talk's first-frame expression: (B, D)."""
        return self.coeffs[:, 0]

    def __len__(self) -> int:
        return self.coeffs.shape[0]


@functools.lru_cache(maxsize=4)
def audio_templates(audio_dim: int = AUDIO_DIM) -> torch.Tensor:
    """One spectral-like template (F,) per phoneme: a few smooth formant bumps over the F bands and a voicing level
    (silence is quiet). Fixed by the world, so every machine hears the same phonemes."""
    g = torch.Generator().manual_seed(_TEMPLATE_SEED)
    bands = torch.linspace(0, 1, audio_dim)
    out = []
    for p in PHONEMES:
        centres = torch.rand(3, generator=g)
        widths = 0.05 + 0.1 * torch.rand(3, generator=g)
        heights = 0.6 + 0.8 * torch.rand(3, generator=g)
        t = (heights[:, None] * torch.exp(-0.5 * ((bands[None] - centres[:, None]) / widths[:, None]) ** 2)).sum(0)
        t = t + 0.3 * torch.randn(audio_dim, generator=g)
        out.append(0.1 * t if p == "sil" else t)
    return torch.stack(out)


def smooth_along_time(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing along dim 1 of (B, T, C), replicate-padded."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, -1).expand(x.shape[-1], 1, -1)
    xp = torch.nn.functional.pad(x.transpose(1, 2), (r, r), mode="replicate")
    return torch.nn.functional.conv1d(xp, k, groups=x.shape[-1]).transpose(1, 2)


def _sentences(batch: int, config: TalkingConfig, g: torch.Generator) -> tuple[torch.Tensor, list]:
    """Frame-level phoneme ids (B, T) and the (phoneme, frames) list of each clip: silence, then phonemes (with
    occasional pauses) until the clip is full, the last one cut by the clip's end."""
    lo, hi = config.duration_range
    ids = torch.zeros(batch, config.frames, dtype=torch.long)
    sentences = []
    for b in range(batch):
        lead = int(torch.randint(1, 4, (1,), generator=g))
        t = lead
        while t < config.frames:
            pause = float(torch.rand((), generator=g)) < config.pause_prob
            p = 0 if pause else int(torch.randint(1, len(PHONEMES), (1,), generator=g))
            d = min(int(torch.randint(lo, hi + 1, (1,), generator=g)), config.frames - t)
            ids[b, t : t + d] = p
            t += d
        sentences.append(_runs(ids[b]))  # consecutive repeats of one phoneme (or of silence) merge into one
    return ids, sentences


def _oscillators(z0, v0, amp, omega, steps: int, g: torch.Generator) -> torch.Tensor:
    """Noise-driven damped oscillators, one per (clip, coefficient): v ← (1 − c) v − ω² z + σ η, then z ← z + v, with
    σ = amp·√(2 c) ω so that the stationary std of z is ≈ amp (the continuous-time value σ²/(2cω²)).
    Returns z over ``steps`` frames starting at z0 (B, C)."""
    sigma = amp * math.sqrt(2 * _DAMPING) * omega
    z, v, out = z0, v0, [z0]
    for _ in range(steps - 1):
        v = (1 - _DAMPING) * v - omega**2 * z + sigma * torch.randn(z.shape, generator=g)
        z = z + v  # semi-implicit (symplectic) Euler: stable for ω < 2
        out.append(z)
    return torch.stack(out, 1)


def _dynamics_params(emotion: torch.Tensor, intensity: torch.Tensor, scale: torch.Tensor):
    dyn = _DYNAMICS[emotion]
    k = (intensity * scale)[:, None]
    n_upper, n_pose = len(UPPER), len(POSE)
    amp = torch.cat(
        [
            (_BASE_UPPER_AMP + k * dyn[:, :1]).expand(-1, n_upper),
            (_BASE_POSE_AMP + k * dyn[:, 1:2]).expand(-1, n_pose),
        ],
        1,
    )
    # frequencies and blink rates move from neutral's towards the emotion's with the intensity, so that at intensity
    # 0 every emotion is neutral (a classifier cannot tell them apart by their rhythm alone)
    neutral = _DYNAMICS[0]
    mix = neutral + k * (dyn - neutral)
    hz = torch.cat([mix[:, 2:3].expand(-1, n_upper), mix[:, 3:4].expand(-1, n_pose)], 1)
    omega = 2 * math.pi * hz / FPS
    blink_rate = mix[:, 4] / FPS
    return amp, omega, blink_rate


def _stationary_start(amp, omega, g: torch.Generator, burn_in: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Oscillator state (z, v) after a burn-in from rest: a draw from (close to) the stationary distribution."""
    z = torch.zeros_like(amp)
    v = torch.zeros_like(amp)
    sigma = amp * math.sqrt(2 * _DAMPING) * omega
    for _ in range(burn_in):
        v = (1 - _DAMPING) * v - omega**2 * z + sigma * torch.randn(z.shape, generator=g)
        z = z + v
    return z, v


def _blinks(rate: torch.Tensor, frames: int, g: torch.Generator) -> torch.Tensor:
    """(B, T) eyelid dips: each blink closes the eye over three frames (0.5, 0.95, 0.5)."""
    starts = (torch.rand(rate.shape[0], frames, generator=g) < rate[:, None]).float()
    k = torch.tensor([0.5, 0.95, 0.5]).view(1, 1, 3)
    dip = torch.nn.functional.conv1d(torch.nn.functional.pad(starts[:, None], (2, 0)), k.flip(-1))[:, 0]
    return dip.clamp(max=1.0)


def _mouth_target(phonemes, emotion, intensity, scale, config: TalkingConfig) -> torch.Tensor:
    art = smooth_along_time(_ARTICULATION[phonemes], config.coarticulation)  # (B, T, 3)
    sh = _MOUTH_SHAPING[emotion] * (intensity * scale)[:, None]  # (B, 5)
    jaw = art[..., 0] * (1 + sh[:, None, 0]) + sh[:, None, 1]
    width = art[..., 1] + sh[:, None, 2]
    rnd = art[..., 2] + sh[:, None, 3]
    corner = sh[:, None, 4].expand_as(jaw)
    return torch.stack([jaw, width, rnd, corner], -1)


def _compose(phonemes, emotion, intensity, scale, z0, v0, config: TalkingConfig, g: torch.Generator):
    """Coefficients (B, T, D) and the mouth target from the inputs and the oscillator start (z0, v0)."""
    b, frames = phonemes.shape
    target = _mouth_target(phonemes, emotion, intensity, scale, config)
    mouth = target + smooth_along_time(
        config.mouth_jitter * 2.0 * torch.randn(b, frames, len(MOUTH), generator=g), 1.5
    )
    amp, omega, blink_rate = _dynamics_params(emotion, intensity, scale)
    osc = _oscillators(z0, v0, amp, omega, frames, g)  # (B, T, 7)
    k = (intensity * scale)[:, None, None]
    upper = k * _UPPER_OFFSET[emotion][:, None] + osc[..., : len(UPPER)]
    upper[..., UPPER.index("eye_open")] -= _blinks(blink_rate, frames, g)
    pose = k * _POSE_OFFSET[emotion][:, None] + osc[..., len(UPPER) :]
    return torch.cat([mouth, upper, pose], -1), target


def _audio(phonemes: torch.Tensor, config: TalkingConfig, g: torch.Generator) -> torch.Tensor:
    b, frames = phonemes.shape
    f = config.audio_dim
    clean = smooth_along_time(audio_templates(f)[phonemes], config.coarticulation * 0.8)
    mix = torch.eye(f) + config.speaker_spread * torch.randn(b, f, f, generator=g) / math.sqrt(f)
    bias = config.speaker_spread * torch.randn(b, 1, f, generator=g)
    gain = 1 + config.speaker_spread * (2 * torch.rand(b, 1, 1, generator=g) - 1)
    return (
        gain * torch.einsum("btf,bgf->btg", clean, mix)
        + bias
        + config.audio_noise * torch.randn(b, frames, f, generator=g)
    )


def sentence_frames(sentence, frames: int) -> torch.Tensor:
    """Frame-level phoneme ids (T,) of a given sentence, a list of (phoneme, frames) pairs; cut at ``frames`` or
    filled with silence up to it."""
    if not isinstance(sentence, (list, tuple)) or not sentence:
        raise ValueError(f"sentence must be a non-empty list of (phoneme, frames) pairs, got {sentence!r}")
    ids: list[int] = []
    for i, item in enumerate(sentence):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"sentence[{i}] must be a (phoneme, frames) pair, got {item!r}")
        p, d = item
        ids += [PHONEMES.index(check_choice(f"sentence[{i}] phoneme", p, PHONEMES))] * check_int(
            f"sentence[{i}] frames", d, 1, 10_000
        )
    ids = (ids + [0] * frames)[:frames]
    return torch.tensor(ids, dtype=torch.long)


def _runs(ids: torch.Tensor) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for i in ids.tolist():
        if out and out[-1][0] == PHONEMES[i]:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((PHONEMES[i], 1))
    return out


def _draw_clips(emotion, intensity, config: TalkingConfig, g: torch.Generator, sentence=None) -> dict:
    b = emotion.shape[0]
    phonemes, sentences = _sentences(b, config, g)
    if sentence is not None:
        phonemes = sentence_frames(sentence, config.frames).expand(b, -1).clone()
        sentences = [_runs(phonemes[0]) for _ in range(b)]
    lo = 1 - config.scale_spread
    scale = lo + 2 * config.scale_spread * torch.rand(b, generator=g)
    amp, omega, _ = _dynamics_params(emotion, intensity, scale)
    z0, v0 = _stationary_start(amp, omega, g)
    coeffs, target = _compose(phonemes, emotion, intensity, scale, z0, v0, config, g)
    audio = _audio(phonemes, config, g)
    return {
        "coeffs": coeffs,
        "target": target,
        "audio": audio,
        "phonemes": phonemes,
        "sentences": sentences,
        "scale": scale,
        "z0": z0,
    }


def make_talking(
    batch: int,
    seed: int = 0,
    config: TalkingConfig | None = None,
    *,
    emotion: str | int | torch.Tensor | None = None,
    intensity: float | torch.Tensor | None = None,
    sentence: list[tuple[str, int]] | None = None,
) -> TalkingBatch:
    """A seeded batch of the Talking world (same seed → same batch on every machine). ``emotion`` (a name, an index
    or a (B,) tensor) and ``intensity`` fix those inputs; otherwise they are drawn (emotion uniform, intensity in
    ``config.intensity_range``). ``sentence`` (a list of (phoneme, frames) pairs) makes every clip speak it; the
    style clips keep sentences of their own."""
    config = config or TalkingConfig()
    if not isinstance(config, TalkingConfig):
        raise ValueError(f"config must be a TalkingConfig, got {type(config).__name__}")
    config.validate()
    batch = check_int("batch", batch, 1)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    emo = torch.randint(0, len(EMOTIONS), (batch,), generator=g)
    if emotion is not None:
        emo = _emotion_ids(emotion, batch)
    lo, hi = config.intensity_range
    inten = lo + (hi - lo) * torch.rand(batch, generator=g)
    if intensity is not None:
        if isinstance(intensity, torch.Tensor) and intensity.dim() == 1:
            if intensity.shape != (batch,) or not bool(((intensity >= 0) & (intensity <= 1)).all()):
                raise ValueError(f"intensity must be ({batch},) values in [0, 1], got {tuple(intensity.shape)}")
            inten = intensity.float()
        else:
            inten = torch.full((batch,), check_float("intensity", intensity, 0.0, 1.0))
    main = _draw_clips(emo, inten, config, g, sentence)
    style = _draw_clips(emo, inten, config, g)
    return TalkingBatch(
        coeffs=main["coeffs"],
        audio=main["audio"],
        phonemes=main["phonemes"],
        mouth_target=main["target"],
        emotion=emo,
        intensity=inten,
        scale=main["scale"],
        style=style["coeffs"],
        sentences=main["sentences"],
        latent={"z0": main["z0"], "config": config},
    )


def _emotion_ids(emotion, batch: int) -> torch.Tensor:
    if isinstance(emotion, torch.Tensor):
        if emotion.shape != (batch,) or emotion.is_floating_point():
            raise ValueError(f"emotion must be ({batch},) integer ids, got {tuple(emotion.shape)} {emotion.dtype}")
        if int(emotion.min()) < 0 or int(emotion.max()) >= len(EMOTIONS):
            raise ValueError(f"emotion ids must be in [0, {len(EMOTIONS)}), got {emotion.tolist()}")
        return emotion.long()
    if isinstance(emotion, str):
        return torch.full((batch,), EMOTIONS.index(check_choice("emotion", emotion, EMOTIONS)), dtype=torch.long)
    return torch.full((batch,), check_int("emotion", emotion, 0, len(EMOTIONS) - 1), dtype=torch.long)


def resample_dynamics(batch: TalkingBatch, seed: int) -> torch.Tensor:
    """The world's own variation given a model's inputs: new coefficients (B, T, D) with the same sentence, audio,
    emotion, intensity, per-clip scale and first frame, and fresh oscillator innovations, blinks and mouth jitter.
    The oscillators restart from the same positions with velocities drawn afresh from the stationary distribution
    (independently of the positions: a close approximation of the exact conditional, since the world's velocities
    are nearly uncorrelated with its positions)."""
    config: TalkingConfig = batch.latent["config"]
    g = torch.Generator().manual_seed(check_int("seed", seed, 0, 2**63 - 1))
    amp, omega, _ = _dynamics_params(batch.emotion, batch.intensity, batch.scale)
    _, v0 = _stationary_start(amp, omega, g)
    coeffs, _ = _compose(
        batch.phonemes, batch.emotion, batch.intensity, batch.scale, batch.latent["z0"], v0, config, g
    )
    coeffs[:, 0] = batch.coeffs[:, 0]
    return coeffs


def emotion_directions() -> torch.Tensor:
    """(5, D) per emotion: the unit direction, in coefficient space, along which the world moves a face's mean
    expression as the intensity grows (its upper-face, pose and mouth-corner offsets; zero for neutral)."""
    d = torch.zeros(len(EMOTIONS), D)
    d[:, UPPER_DIMS] = _UPPER_OFFSET
    d[:, POSE_DIMS] = _POSE_OFFSET
    d[:, MOUTH.index("mouth_corner")] = _MOUTH_SHAPING[:, 4]
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-9)


def expressed_emotion(coeffs: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
    """How strongly each clip (B, T, D) shows ``emotion`` (B,): its mean expression projected on the emotion's
    direction (:func:`emotion_directions`). Exact for the world's clips up to the oscillators' mean over the clip:
    ≈ intensity · scale · ‖offset‖. Neutral clips score 0."""
    if coeffs.dim() != 3 or coeffs.shape[-1] != D or emotion.shape != coeffs.shape[:1]:
        raise ValueError(
            f"coeffs must be (B, T, {D}) with emotion (B,), got {tuple(coeffs.shape)}, {tuple(emotion.shape)}"
        )
    return (coeffs.mean(1) * emotion_directions()[emotion]).sum(-1)


@functools.lru_cache(maxsize=4)
def coefficient_statistics(config: TalkingConfig = TalkingConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coefficient mean and std (D,) over 4,096 clips of a fixed seed: the models' normalisation."""
    b = make_talking(4096, seed=7, config=config)
    flat = b.coeffs.reshape(-1, D)
    return flat.mean(0), flat.std(0).clamp_min(1e-3)


def select(batch: TalkingBatch, index) -> TalkingBatch:
    """A sub-batch (``index``: a slice, a list or a tensor of indices)."""
    idx = torch.arange(len(batch))[index]
    return replace(
        batch,
        coeffs=batch.coeffs[idx],
        audio=batch.audio[idx],
        phonemes=batch.phonemes[idx],
        mouth_target=batch.mouth_target[idx],
        emotion=batch.emotion[idx],
        intensity=batch.intensity[idx],
        scale=batch.scale[idx],
        style=batch.style[idx],
        sentences=[batch.sentences[i] for i in idx.tolist()],
        latent={"z0": batch.latent["z0"][idx], "config": batch.latent["config"]},
    )


__all__ = [
    "AUDIO_DIM",
    "COEFFICIENTS",
    "EMOTIONS",
    "MOUTH",
    "MOUTH_DIMS",
    "PHONEMES",
    "POSE",
    "POSE_DIMS",
    "UPPER",
    "UPPER_DIMS",
    "TalkingBatch",
    "TalkingConfig",
    "audio_templates",
    "coefficient_statistics",
    "emotion_directions",
    "expressed_emotion",
    "make_talking",
    "resample_dynamics",
    "select",
    "sentence_frames",
    "smooth_along_time",
]
