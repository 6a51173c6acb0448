"""Chapter 09 — Vista-LLaMA: equal-distance visual tokens for a video narrator (Ma et al., arXiv 2312.08870).

- :mod:`.attention` — the EDVT attention rule inside transformers' Llama (fused, cached)
- :mod:`.projector` — the frame encoder and the sequential visual projector
- :mod:`.data` — narrated Motion-world episodes, frame-order questions and the narration oracle
- :mod:`.narrator` — the tiny frozen Llama + projector narrator, its training and cached greedy decoding
- :mod:`.train` — ``python -m bytecourse train vistallama`` (and loading the shipped narrators)
- :mod:`.evaluate` — ``python -m bytecourse eval vistallama``: the tables and the live slice
- :mod:`.widget` — the attention explorer
"""

from .attention import EDVTLlamaAttention, edvt_logits, enable_edvt, widened_qk
from .projector import FrameEncoder, ProjectorConfig, SequentialProjector

__all__ = [
    "EDVTLlamaAttention",
    "FrameEncoder",
    "ProjectorConfig",
    "SequentialProjector",
    "edvt_logits",
    "enable_edvt",
    "widened_qk",
]
