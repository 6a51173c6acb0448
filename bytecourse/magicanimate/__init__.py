"""Chapter 05 — MagicAnimate (Xu et al. 2023, arXiv 2311.16498): a reference image and a pose sequence become a
temporally consistent animation. See ``models.py`` (appearance encoder, pose ControlNet, temporal modules),
``pipeline.py`` (CFG on appearance, overlapping windows, shared noise), ``train.py`` (stages 0–2) and
``evaluate.py`` (the tables and verdicts)."""
