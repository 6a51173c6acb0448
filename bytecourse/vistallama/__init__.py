"""Chapter 09 — Vista-LLaMA: equal-distance visual tokens for a video narrator (Ma et al., arXiv 2312.08870).

Work in progress: :mod:`.attention` holds the EDVT attention rule for transformers' Llama (tested); the narrator,
the sequential projector, the narration oracle and the notebook follow.
"""

from .attention import EDVTLlamaAttention, edvt_logits, enable_edvt, widened_qk

__all__ = ["EDVTLlamaAttention", "edvt_logits", "enable_edvt", "widened_qk"]
