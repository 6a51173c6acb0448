"""Equal-distance visual tokens (EDVT): Vista-LLaMA's attention rule (arXiv 2312.08870, §3.1).

For a query j and key i, with q, k *unrotated*, R_p the RoPE rotation at position p, d the head width and
v(i) = 1 when key i is a visual token:

    s_ji = v(i) · (q_j · k_i)/√d  +  (1 − v(i)) · (R_j q_j · R_i k_i)/√d,      A = softmax(s + causal mask)

Text↔text logits keep RoPE; every logit against a visual key is position-free, so all visual tokens sit at the
*same distance* from every query — however long the generated text grows. (Visual tokens still occupy sequence
positions, so text–text distances count them; the rule applies to every layer and head; the causal mask is
unchanged.)

**How it is computed with fused attention.** transformers' attention interface receives q and k *already rotated*
(and the KV cache stores rotated keys), so we hook in one step earlier, where the unrotated vectors exist, and
feed the interface widened vectors (our construction, exact):

    q′ = [q, R q],   k′ = [m·k, (1 − m)·R k]   ⇒   q′·k′ = m (q·k) + (1 − m) (Rq·Rk)

with m the 0/1 visual mask over keys and the scale kept at 1/√d of the *original* width. Any attention backend
(SDPA, eager) then computes exactly the EDVT logits; the cache stores k′ (so each key's rule is fixed when it is
written) and V. With no visual token (m = 0) this is standard Llama attention.

Use :func:`enable_edvt` on a ``LlamaForCausalLM`` / ``LlamaModel``; pass ``visual_mask`` (B, S) of the *current*
tokens as a keyword to the model's forward to switch EDVT on for that call (omit it for plain RoPE attention).
"""

from __future__ import annotations

import torch
from transformers.models.llama import modeling_llama as llama

__all__ = ["EDVTLlamaAttention", "edvt_logits", "enable_edvt", "widened_qk"]


def widened_qk(
    attn: llama.LlamaAttention, hidden_states: torch.Tensor, position_embeddings, visual_mask: torch.Tensor
):
    """(q′, k′, v) for one attention layer: q′ = [q, Rq], k′ = [m·k, (1−m)·Rk] (heads first, like the HF layer)."""
    input_shape = hidden_states.shape[:-1]
    if visual_mask.shape != input_shape:
        raise ValueError(
            f"visual_mask must have the tokens' shape {tuple(input_shape)}, got {tuple(visual_mask.shape)}"
        )
    if visual_mask.dtype != torch.bool and not bool(((visual_mask == 0) | (visual_mask == 1)).all()):
        raise ValueError(
            f"visual_mask must be 0/1 (or bool): 1 on visual tokens, 0 on text; got values "
            f"{sorted(set(visual_mask.flatten().tolist()))[:6]}"
        )
    hidden_shape = (*input_shape, -1, attn.head_dim)
    q = attn.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    k = attn.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    v = attn.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    cos, sin = position_embeddings
    q_rot, k_rot = llama.apply_rotary_pos_emb(q, k, cos, sin)
    m = visual_mask[:, None, :, None].to(k.dtype)
    return torch.cat([q, q_rot], dim=-1), torch.cat([m * k, (1 - m) * k_rot], dim=-1), v


class EDVTLlamaAttention(llama.LlamaAttention):
    """``LlamaAttention`` with the EDVT rule when a ``visual_mask`` keyword is given (weights unchanged)."""

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        visual_mask = kwargs.pop("visual_mask", None)
        if visual_mask is None:
            return super().forward(hidden_states, position_embeddings, attention_mask, cache, **kwargs)
        input_shape = hidden_states.shape[:-1]
        q2, k2, v = widened_qk(self, hidden_states, position_embeddings, visual_mask)
        if cache is not None:
            k2, v = cache.update(k2, v, self.layer_idx)
        interface = llama.ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, llama.eager_attention_forward
        )
        out, weights = interface(
            self,
            q2,
            k2,
            v,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )  # 1/√d of the original head width
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), weights


def enable_edvt(model: torch.nn.Module) -> torch.nn.Module:
    """Swap every ``LlamaAttention`` in ``model`` to :class:`EDVTLlamaAttention` in place (same parameters)."""
    count = 0
    for module in model.modules():
        if type(module) is llama.LlamaAttention:
            module.__class__ = EDVTLlamaAttention
            count += 1
    if count == 0 and not any(isinstance(m, EDVTLlamaAttention) for m in model.modules()):
        raise ValueError("no LlamaAttention layer found: enable_edvt expects a transformers Llama model")
    return model


def edvt_logits(
    attn: llama.LlamaAttention, hidden_states: torch.Tensor, position_embeddings, visual_mask: torch.Tensor | None
) -> torch.Tensor:
    """Pre-softmax logits (B, H, S, S) of one layer, before the causal mask: EDVT with a mask, plain RoPE without."""
    if visual_mask is None:  # m = 0: exactly the RoPE logits
        visual_mask = torch.zeros(hidden_states.shape[:-1], device=hidden_states.device)
    q2, k2, _ = widened_qk(attn, hidden_states, position_embeddings, visual_mask)
    k2 = llama.repeat_kv(k2, attn.num_key_value_groups)
    return q2 @ k2.transpose(-1, -2) * attn.scaling
