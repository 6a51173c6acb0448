"""Chapter 09 — Vista-LLaMA: equal-distance visual tokens for a video narrator (Ma et al., arXiv 2312.08870).

Work in progress: :mod:`.attention` holds the EDVT attention rule for transformers' Llama and :mod:`.projector` the
frame encoder and sequential visual projector (both tested); the narrator's training, the narration oracle, the
tables and the notebook follow.
"""

from .attention import EDVTLlamaAttention, edvt_logits, enable_edvt, widened_qk
from .projector import FrameEncoder, ProjectorConfig, SequentialProjector

__all__ = ["EDVTLlamaAttention", "FrameEncoder", "ProjectorConfig", "SequentialProjector", "edvt_logits", "enable_edvt", "widened_qk"]
