"""Every seed offset of the course in one registry.

A seed names a stream of data: training batches, held-out evaluation captions and noise, a chapter's own
examples. Each stream starts at its offset below, so no evaluation ever draws a training batch and no two
chapters' streams collide silently (``tests/test_project.py`` checks that the ranges are disjoint). Library code
draws every random number from a ``torch.Generator`` seeded from here; it never seeds or reads the global
generator (:func:`bytecourse.trainer.seeded_init` builds parameters inside :func:`torch.random.fork_rng`).

``STREAMS`` lists each offset with the width of the range its users may add to it (``offset + seed`` for a
handful of evaluation seeds, ``offset + seed * TRAIN_SEED_STRIDE + step`` for training).
"""

from __future__ import annotations

TRAIN_SEED_STRIDE = 1_000_003  # training batch of run seed s at step k: s * TRAIN_SEED_STRIDE + (stream) + k
NOISE_SUBSTREAM = 7  # the diffusion loss's generator is seeded from the batch's seed + 7 (t, ε, CFG dropout)
STAGE_STRIDE = 500_000  # a multi-stage run's stage k draws its batches from k * STAGE_STRIDE on

# held-out evaluation streams: offset + evaluation seed
PRIMER_EVAL = 10_000  # the image model's evaluation captions and noise (primer, SAG, AdjointDPM)
VIDEO_EVAL = 20_000  # the video models' evaluation clips and noise (eval video)
BOXIMATOR_EVAL = 30_000  # Boximator's evaluation clips
ADJOINTDPM_EFFECT = 70_000  # AdjointDPM (b): examples of the effect to learn
ADJOINTDPM_STYLE = 80_000  # AdjointDPM (c): stylisation fine-tuning captions
ADJOINTDPM_STYLE_NOISE = 85_000  # AdjointDPM (c): its noise
ADJOINTDPM_WORD_NOISE = 90_000  # AdjointDPM (b): noise for samples with the learnt word
CLASSIFIER_HELDOUT = 50_000_000  # the clean-image classifier's held-out images
VISTALLAMA_LM = 10_000_000  # Vista-LLaMA: LM pretraining narrations (+ seed * 100_000 + step)
VISTALLAMA_NARRATOR = 20_000_000  # Vista-LLaMA: narrator training episodes (+ seed * 100_000 + step)
VISTALLAMA_EVAL = 30_000_000  # Vista-LLaMA: evaluation episodes (+ 500_000 / 700_000 / 900_000 per table)
DREAMTALK_DATA = 40_000_000  # DREAM-Talk: training clips (+ run * 1_000_000 + seed * 100_000 + step)
DREAMTALK_EVAL = 51_000_000  # DREAM-Talk: evaluation clips and sampling noise (+ 1_000 * seed + table offsets)
METAPROMPTS_DATA = 60_000_000  # Meta Prompts: perception training images (+ seed * 100_000 + step), every arm the same
METAPROMPTS_PRETRAIN = (
    61_000_000  # Meta Prompts: the diffusion fine-tune on perception images (+ seed * stride + step)
)
METAPROMPTS_EVAL = 72_000_000  # Meta Prompts: held-out perception images (+ 1_000 * seed + image batch)
COSA_DATA = 80_000_000  # COSA: pretraining images (+ seed * 100_000 + step), every regime the same
COSA_FINETUNE = 81_000_000  # COSA: Events clips of the fine-tune (+ seed * 100_000 + step)
COSA_EVAL = 82_000_000  # COSA: held-out Events clips and Shapes images (+ 1_000 * seed + table offsets)
PIXELLM_PRETRAIN = 90_000_000  # PixelLM: the image encoders' contrastive pretraining (+ seed * 100_000 + step)
PIXELLM_LM = 91_000_000  # PixelLM: the language model's text-answer stage (+ seed * 100_000 + step)
PIXELLM_DATA = 92_000_000  # PixelLM: the arms' training questions (+ seed * 100_000 + step), every arm the same
PIXELLM_EVAL = 93_000_000  # PixelLM: held-out questions (+ 1_000 * eval seed + 100 * split)
MAGICANIMATE_DATA = 100_000_000  # MagicAnimate: training clips (+ run * 1_000_000 + seed * 100_000 + step)
MAGICANIMATE_EVAL = 105_000_000  # MagicAnimate: held-out sequences and noise (+ 1_000 * seed + table offsets)
MAGICVIDEO_DATA = 110_000_000  # MagicVideo-V2: training clips (+ stage * 1_000_000 + seed * 100_000 + step)
MAGICVIDEO_EVAL = 115_000_000  # MagicVideo-V2: held-out captions, clips and noise (+ 1_000 * seed + table offsets)
BOXIMATOR_DATA = 500_000  # Boximator's control-training clips (+ seed * TRAIN_SEED_STRIDE + stage * 100_000 + step)

STYLE_REFERENCE = 5  # the textured world image ("a cyan square") that SAG and AdjointDPM stylise towards

STREAMS: dict[str, tuple[int, int]] = {  # name: (offset, width of the range its users draw from)
    "primer eval": (PRIMER_EVAL, 1_000),
    "video eval": (VIDEO_EVAL, 1_000),
    "boximator eval": (BOXIMATOR_EVAL, 1_000),
    "adjointdpm effect": (ADJOINTDPM_EFFECT, 10_000),
    "adjointdpm style": (ADJOINTDPM_STYLE, 5_000),
    "adjointdpm style noise": (ADJOINTDPM_STYLE_NOISE, 5_000),
    "adjointdpm word noise": (ADJOINTDPM_WORD_NOISE, 1_000),
    "vistallama lm": (VISTALLAMA_LM, 10_000_000),
    "vistallama narrator": (VISTALLAMA_NARRATOR, 10_000_000),
    "vistallama eval": (VISTALLAMA_EVAL, 1_000_000),
    "classifier heldout": (CLASSIFIER_HELDOUT, 1_000),
    "dreamtalk data": (DREAMTALK_DATA, 10_000_000),
    "dreamtalk eval": (DREAMTALK_EVAL, 1_000_000),
    "metaprompts data": (METAPROMPTS_DATA, 1_000_000),
    "metaprompts pretrain": (METAPROMPTS_PRETRAIN, 10_000_000),
    "metaprompts eval": (METAPROMPTS_EVAL, 100_000),
    "cosa data": (COSA_DATA, 1_000_000),
    "cosa finetune": (COSA_FINETUNE, 1_000_000),
    "cosa eval": (COSA_EVAL, 100_000),
    "pixellm pretrain": (PIXELLM_PRETRAIN, 1_000_000),
    "pixellm lm": (PIXELLM_LM, 1_000_000),
    "pixellm data": (PIXELLM_DATA, 1_000_000),
    "pixellm eval": (PIXELLM_EVAL, 100_000),
    "magicanimate data": (MAGICANIMATE_DATA, 5_000_000),
    "magicanimate eval": (MAGICANIMATE_EVAL, 100_000),
    "magicvideo data": (MAGICVIDEO_DATA, 5_000_000),
    "magicvideo eval": (MAGICVIDEO_EVAL, 100_000),
}
