"""Chapter 08 — COSA (Chen et al., ICLR 2024, arXiv 2306.09085): concatenated image–text samples teach a
vision–language model about time without video data.

- :mod:`.data` — the vocabulary, the pretraining stream, **concatenation** (random or "similar" partners) and the
  Events clips (``bytecourse.worlds.events``) the regimes are evaluated on;
- :mod:`.models` — the frame encoder, the frame embedding, one BERT in three modes, ITC / ITM / MLM / captioning;
- :mod:`.train` / :mod:`.evaluate` — the regimes at an equal budget over training seeds, the fine-tune, the metrics
  (order-sensitive retrieval among them) and computed verdicts;
- :mod:`.widget` — the chapter's explorer; :mod:`.solutions` — its exercises.
"""

from .data import concatenate, partners, tokenize
from .models import COSAConfig, COSAModel, itc_loss

__all__ = ["COSAConfig", "COSAModel", "concatenate", "itc_loss", "partners", "tokenize"]
