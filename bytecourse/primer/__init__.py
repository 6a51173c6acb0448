"""Chapter 00 — the primer: DDPM training, DDIM/DDPM sampling and classifier-free guidance on the Shapes world.

The mechanism (schedules, the ε-loss, samplers, guidance, the image denoiser) is the shared substrate in
:mod:`bytecourse.diffusion`, because every later chapter builds on it; this folder holds what is chapter 00's own:

- :mod:`~bytecourse.primer.train` — ``python -m bytecourse train primer`` (and the notebook's live run);
- :mod:`~bytecourse.primer.evaluate` — ``python -m bytecourse eval primer``: the sampler, guidance and
  object-count tables, and the notebook's live slice;
- :mod:`~bytecourse.primer.widget` — the guidance explorer;
- :mod:`~bytecourse.primer.solutions` — the exercises' self-checks and reference solutions.
"""
