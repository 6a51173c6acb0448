"""EDVT attention: the defining properties, on a tiny random Llama."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bytecourse.vistallama import edvt_logits, enable_edvt


def _tiny(attn="sdpa", theta=100.0):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=theta,
        max_position_embeddings=256,
    )
    cfg._attn_implementation = attn
    return enable_edvt(LlamaForCausalLM(cfg).eval())


def _layer_inputs(model, hidden, positions):
    rot = model.model.rotary_emb(hidden, position_ids=positions[None])
    return model.model.layers[0].self_attn, rot


def test_no_visual_tokens_is_standard_llama():
    model = _tiny()
    ids = torch.randint(0, 40, (2, 12))
    plain = model(input_ids=ids).logits
    masked = model(input_ids=ids, visual_mask=torch.zeros(2, 12)).logits
    assert torch.allclose(plain, masked, atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fused_edvt_equals_the_explicit_rule(attn):
    """q′·k′ through the attention backend equals s_ji = v(i) q·k/√d + (1−v(i)) Rq·Rk/√d, softmax, causal."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    model = _tiny(attn)
    layer = model.model.layers[0].self_attn
    h = torch.randn(1, 10, 32)
    mask = torch.zeros(1, 10)
    mask[0, 2:6] = 1
    pos = torch.arange(10)
    rot = model.model.rotary_emb(h, position_ids=pos[None])
    causal = torch.full((10, 10), float("-inf")).triu(1)
    out, _ = layer(h, position_embeddings=rot, attention_mask=causal[None, None], visual_mask=mask)
    # explicit reference
    q = layer.q_proj(h).view(1, 10, -1, layer.head_dim).transpose(1, 2)
    k = layer.k_proj(h).view(1, 10, -1, layer.head_dim).transpose(1, 2)
    v = layer.v_proj(h).view(1, 10, -1, layer.head_dim).transpose(1, 2)
    qr, kr = apply_rotary_pos_emb(q, k, *rot)
    k, kr, v = (repeat_kv(t, layer.num_key_value_groups) for t in (k, kr, v))
    s = (
        torch.where(mask[:, None, None, :].bool(), q @ k.transpose(-1, -2), qr @ kr.transpose(-1, -2))
        / layer.head_dim**0.5
    )
    ref = layer.o_proj((torch.softmax(s + causal, -1) @ v).transpose(1, 2).reshape(1, 10, -1))
    assert torch.allclose(out, ref, atol=1e-5)


def test_text_to_visual_logits_do_not_depend_on_positions():
    """Moving the visual tokens (or the text query) along the sequence leaves every text→visual logit unchanged under
    EDVT; under RoPE it changes (the control)."""
    model = _tiny(theta=50.0)
    torch.manual_seed(1)
    vis, txt = torch.randn(4, 32), torch.randn(3, 32)
    h = torch.cat([txt[:1], vis, txt[1:]])[None]  # [text, 4 visual, 2 text]
    mask = torch.tensor([[0, 1, 1, 1, 1, 0, 0]], dtype=torch.float)
    results = {}
    for name, positions in {
        "near": torch.tensor([0, 1, 2, 3, 4, 5, 6]),
        "far": torch.tensor([0, 21, 22, 23, 24, 60, 90]),
    }.items():
        layer, rot = _layer_inputs(model, h, positions)
        results[name] = (edvt_logits(layer, h, rot, mask), edvt_logits(layer, h, rot, None))
    text_rows, vis_cols = [5, 6], [1, 2, 3, 4]
    edvt_near, edvt_far = (results[k][0][..., text_rows, :][..., vis_cols] for k in ("near", "far"))
    rope_near, rope_far = (results[k][1][..., text_rows, :][..., vis_cols] for k in ("near", "far"))
    assert torch.allclose(edvt_near, edvt_far, atol=1e-5)
    assert not torch.allclose(rope_near, rope_far, atol=1e-3)
    # text→text logits keep RoPE: they still depend on relative position
    edvt_tt_near, edvt_tt_far = (results[k][0][..., 6, 5] for k in ("near", "far"))
    assert not torch.allclose(edvt_tt_near, edvt_tt_far, atol=1e-3)


def test_model_logits_at_text_positions_ignore_where_the_visual_tokens_sit():
    """Through the whole transformers Llama (every layer, the attention backend, the keyword reaching the layers):
    moving only the visual tokens' position ids leaves the logits at the text positions unchanged with the visual
    mask, and changes them without it. The visual tokens come first here: a visual query reads a *text* key
    before it with RoPE (the rule masks keys), so behind a BOS only the first layer would be exactly invariant."""
    model = _tiny(theta=50.0)
    ids = torch.randint(0, 40, (1, 9))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.float)
    near = torch.arange(9)[None]
    far = torch.tensor([[0, 30, 60, 90, 4, 5, 6, 7, 8]])  # visual tokens moved, text positions kept
    att = torch.ones(1, 9, dtype=torch.long)  # explicit: no packed-sequence guess from the position ids
    with torch.no_grad():
        edvt = [
            model(input_ids=ids, attention_mask=att, position_ids=p, visual_mask=mask).logits[0, 4:]
            for p in (near, far)
        ]
        rope = [model(input_ids=ids, attention_mask=att, position_ids=p).logits[0, 4:] for p in (near, far)]
    assert torch.allclose(edvt[0], edvt[1], atol=1e-5)
    assert (rope[0] - rope[1]).abs().max() > 1e-3


def test_cached_decoding_equals_the_full_forward():
    model = _tiny()
    ids = torch.randint(0, 40, (1, 9))
    mask = torch.zeros(1, 9)
    mask[0, 1:5] = 1
    full = model(input_ids=ids, visual_mask=mask).logits
    out = model(input_ids=ids[:, :6], visual_mask=mask[:, :6], use_cache=True)
    cache, steps = out.cache if hasattr(out, "cache") else out.past_key_values, [out.logits]
    for i in range(6, 9):
        out = model(input_ids=ids[:, i : i + 1], visual_mask=mask[:, i : i + 1], cache=cache, use_cache=True)
        steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_bad_input():
    model = _tiny()
    with pytest.raises(ValueError):
        model(input_ids=torch.randint(0, 40, (1, 5)), visual_mask=torch.zeros(1, 4))
    with pytest.raises(ValueError):
        enable_edvt(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------ the sequential projector

from bytecourse.vistallama.projector import ProjectorConfig, SequentialProjector  # noqa: E402

TINY_P = ProjectorConfig(image_size=16, patch=4, feat_dim=16, dim=16, queries=3, layers=1, heads=2, lm_dim=24)


def _projector(sequential):
    torch.manual_seed(0)
    return SequentialProjector(ProjectorConfig(**{**TINY_P.to_dict(), "sequential": sequential})).eval()


def test_projector_shapes_and_bad_input():
    p = _projector(True)
    out = p(torch.rand(2, 5, 3, 16, 16))
    assert out.shape == (2, 5 * 3, 24)
    with pytest.raises(ValueError):
        p(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError):
        SequentialProjector(ProjectorConfig(patch=3))


def test_independent_projector_has_no_frame_order_sequential_does():
    """Independent: frame t's tokens depend on frame t only, so reversing the frames reverses the token blocks.
    Sequential: frame t's tokens also see frame t−1's (the recurrence carries order)."""
    video = torch.rand(1, 4, 3, 16, 16)
    rev = video.flip(1)
    for sequential in (False, True):
        p = _projector(sequential)
        a = p(video).view(1, 4, 3, 24)
        b = p(rev).view(1, 4, 3, 24).flip(1)
        same = torch.allclose(a, b, atol=1e-5)
        assert same is (not sequential)
        assert torch.allclose(
            a[:, 0], p(video[:, :1]).view(1, 1, 3, 24)[:, 0], atol=1e-5
        )  # frame 1 needs nothing earlier


def test_previous_frame_enters_with_a_stopped_gradient():
    p = _projector(True).train()
    video = torch.rand(1, 3, 3, 16, 16, requires_grad=True)
    out = p(video).view(1, 3, 3, 24)
    (g,) = torch.autograd.grad(out[:, 2].sum(), video)
    assert g[:, 2].abs().sum() > 0 and g[:, :2].abs().sum() == 0  # x_3 is not differentiated through x_2


# ------------------------------------------------------------------------------------ narrations and the narrator

from bytecourse.vistallama.data import (  # noqa: E402
    check_narration,
    decode_ids,
    encode_words,
    hallucination_rate,
    make_episodes,
    order_question,
)
from bytecourse.vistallama.narrator import LMConfig, Narrator, build_lm  # noqa: E402


def test_episodes_and_the_narration_oracle():
    ep = make_episodes(8, 3, (2, 4))
    again = make_episodes(8, 3, (2, 4))
    assert ep.narrations == again.narrations and torch.equal(ep.videos, again.videos)
    assert ep.videos.shape == (8, 12, 3, 32, 32)
    for i in range(8):
        facts = check_narration(ep.narrations[i], ep, i)
        assert len(facts) == 2 * int(ep.segments[i]) and hallucination_rate(facts) == 0.0
        assert decode_ids(encode_words(ep.narrations[i].split())) == ep.narrations[i]
    # swap the first two items: the order is wrong, so both object facts become false (unless the objects are equal)
    i = next(i for i in range(8) if ep.phrases[i][0].split()[1:3] != ep.phrases[i][1].split()[1:3])
    swapped = " then ".join([ep.phrases[i][1], ep.phrases[i][0], *ep.phrases[i][2:]])
    wrong = [f for f in check_narration(swapped, ep, i) if not f.true]
    assert {f.item for f in wrong if f.kind == "object"} == {0, 1}
    extra = check_narration(ep.narrations[i] + " then a red circle bounces", ep, i)
    assert [f.true for f in extra][-2:] == [False, False]
    # the motion phrase is read wherever it stands: without the article, or with a stray word before it
    first = ep.phrases[i][0].split()  # a <colour> <shape> <motion ...>
    for variant in (first[1:], first[:3] + ["a"] + first[3:], first[:3] + ["and"] + first[3:]):
        facts = check_narration(" ".join(variant), ep, i)
        motion = next(f for f in facts if f.kind == "motion")
        assert motion.true and motion.stated == " ".join(first[3:]), (variant, motion)
    for j in range(8):
        q = order_question(ep, j, torch.Generator().manual_seed(j))
        if q is None:
            continue
        words = q[0].split()  # which came first the C S or the C S
        named = [" ".join(words[4:6]), " ".join(words[8:10])]
        objects = [" ".join(p.split()[1:3]) for p in ep.phrases[j]]
        answer = " ".join(q[1].split()[1:])
        other = named[1] if answer == named[0] else named[0]
        assert answer in named and objects.index(answer) < objects.index(other)
    with pytest.raises(ValueError):
        make_episodes(4, 0, (3, 2))
    with pytest.raises(ValueError):
        encode_words(["purple"])


def test_narrator_trains_only_the_projector_and_decodes():
    lm = build_lm(LMConfig(hidden=32, layers=1, heads=2))
    proj = SequentialProjector(
        ProjectorConfig(image_size=32, feat_dim=16, dim=16, queries=2, layers=1, heads=2, lm_dim=32)
    )
    ep = make_episodes(2, 0, (2, 2))
    for attention in ("rope", "edvt"):
        nar = Narrator(lm, proj, attention)
        loss = nar(
            ep.videos[:, :6],
            [0, 3],
            [encode_words(["describe"])] * 2,
            [encode_words(n.split()) + [2] for n in ep.narrations],
        ).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is None for p in lm.parameters()) and any(p.grad is not None for p in proj.parameters())
        ids, mass = nar.generate(
            ep.videos[:1, :6], [2], [encode_words(["describe"])], max_new=4, output_attentions=True
        )
        assert 1 <= len(ids) <= 4 and len(mass) == len(ids) and all(0 <= m <= 1 for m in mass)
        proj.zero_grad()
    with pytest.raises(ValueError):
        Narrator(lm, proj, "alibi")
    with pytest.raises(ValueError):
        Narrator(lm, proj, "edvt").generate(ep.videos[:, :6], [0, 0], [[4], [4]])


# ------------------------------------------------------------------------ frame selection, 2×2 arms, tables


def test_frame_selection_keeps_every_nth_output_ending_at_the_last_frame():
    """keep_every = n hands the LM the recurrence's outputs at frames T−1, T−1−n, … (the official code's rule); the
    recurrence itself is unchanged, so they equal those frames' blocks of the every-frame output."""
    full = _projector(True)
    sel = SequentialProjector(ProjectorConfig(**{**TINY_P.to_dict(), "keep_every": 3}))
    sel.load_state_dict(full.state_dict())
    video = torch.rand(2, 7, 3, 16, 16)
    a = full(video).view(2, 7, 3, 24)
    b = sel.eval()(video).view(2, -1, 3, 24)
    assert b.shape[1] == 3  # frames 0, 3, 6
    assert torch.allclose(b, a[:, [0, 3, 6]], atol=1e-6)
    with pytest.raises(ValueError):
        ProjectorConfig(keep_every=0)
    from bytecourse.vistallama.projector import kept_frames

    assert kept_frames(12, 3) == [2, 5, 8, 11] and kept_frames(5, 1) == [0, 1, 2, 3, 4] and kept_frames(2, 4) == [1]


def test_arm_configs_span_the_two_by_two():
    from bytecourse.vistallama.train import ARMS, narrator_config

    cells = {(narrator_config(a).attention, narrator_config(a).projector.sequential) for a in ARMS}
    assert cells == {("rope", True), ("rope", False), ("edvt", True), ("edvt", False)}
    sel = narrator_config("edvt_select")
    # the selection arm reads as many tokens per segment (3 frames) as the every-frame arms
    assert sel.projector.queries == 3 * narrator_config("edvt").projector.queries
    with pytest.raises(ValueError):
        narrator_config("alibi")


def _tiny_narrator(attention):
    torch.manual_seed(0)
    lm = build_lm(LMConfig(hidden=32, layers=2, heads=2)).eval()
    proj = SequentialProjector(
        ProjectorConfig(image_size=32, feat_dim=16, dim=16, queries=2, layers=1, heads=2, lm_dim=32)
    )
    return Narrator(lm, proj.eval(), attention)


@torch.no_grad()
def test_attention_profile_mass_matches_the_softmax():
    """The profile's mass, computed from the raw logits, equals the attention probabilities eager attention returns
    (so the raw-logit columns describe the same attention the model runs)."""
    from bytecourse.vistallama.evaluate import attention_profile

    for attention in ("rope", "edvt"):
        nar = _tiny_narrator(attention)
        prof = attention_profile(nar, (0,), segments=2, fill=4, n=2)
        assert set(prof) == {"mass", "visual_logit", "text_logit", "text_keys"}
        assert all(0 < m < 1 for m in prof["mass"])
        assert prof["text_keys"] == sorted(prof["text_keys"])  # more text keys further on
        # the same mass from eager attention probabilities, first episode, first narration position
        ep = make_episodes(2, __import__("bytecourse").seeds.VISTALLAMA_EVAL + 700_000, (2, 2))
        answer = encode_words(ep.narrations[0].split())
        x, _, vmask, _ = nar.embed(ep.videos[:1, :6], [4], [encode_words(["describe"])], [answer])
        nar.lm.config._attn_implementation = "eager"
        kw = {"visual_mask": vmask} if attention == "edvt" else {}
        att = nar.lm(inputs_embeds=x, output_attentions=True, **kw).attentions
        nar.lm.config._attn_implementation = "sdpa"
        start = x.shape[1] - len(answer) - 1
        eager = torch.stack([a[0, :, start][:, vmask[0].bool()].sum(-1) for a in att]).mean()
        one = attention_profile(nar, (0,), segments=2, fill=4, n=1)
        assert abs(one["mass"][0] - float(eager)) < 1e-4


def test_rope_theta_probe_changes_rope_and_restores():
    from bytecourse.vistallama.evaluate import rope_theta

    nar = _tiny_narrator("rope")
    before = nar.lm.model.rotary_emb.inv_freq.clone()
    ids = torch.randint(4, 20, (1, 12))
    base = nar.lm(input_ids=ids).logits
    with rope_theta(nar.lm, 20.0):
        assert not torch.allclose(nar.lm(input_ids=ids).logits, base)
    assert torch.equal(nar.lm.model.rotary_emb.inv_freq, before)
    assert torch.allclose(nar.lm(input_ids=ids).logits, base)
    with pytest.raises(ValueError):
        with rope_theta(nar.lm, 0.0):
            pass


def _fake_run(arm, seed, within, beyond, order):
    by_k = {
        str(k): {"hallucination": [within if k <= 4 else beyond] * 3, "fact_recall": [0.5] * 3, "items": [k] * 3}
        for k in (2, 4, 6, 8)
    }
    positions = {str(k): {str(i): [2, 16] for i in range(k)} for k in (2, 4, 6, 8)}
    profile = {"mass": [0.5, 0.4], "visual_logit": [0.1, 0.0], "text_logit": [0.2, 0.2], "text_keys": [10, 11]}
    return f"{arm}/seed{seed}", {
        "seed": seed,
        "metrics": {
            "hallucination_within": within,
            "hallucination_beyond": beyond + 0.01 * seed,
            "order_accuracy": order,
            "by_k": by_k,
            "positions": positions,
            "attention": profile,
        },
    }


def test_vistallama_verdicts_can_say_reproduced_and_not_reproduced():
    from bytecourse.vistallama.evaluate import analysis, tables_from_runs, verdicts

    def runs(edvt_beyond, edvt_order):
        out = {}
        for s in range(3):
            for arm, b, o in (
                ("rope", 0.8, 0.6),
                ("edvt", edvt_beyond, edvt_order),
                ("rope_independent", 0.85, 0.5),
                ("edvt_independent", edvt_beyond + 0.05, 0.3),
            ):
                k, v = _fake_run(arm, s, 0.4, b, o)
                out[k] = v
        return out

    good = tables_from_runs(runs(0.5, 0.7))
    assert [v["outcome"] for v in verdicts(good)] == ["reproduced"] * 3
    bad = tables_from_runs(runs(0.95, 0.1))
    assert [v["outcome"] for v in verdicts(bad)] == ["not reproduced"] * 3
    assert [r["setting"] for r in good["arms"]["rows"]] == ["rope", "edvt", "rope_independent", "edvt_independent"]
    assert {r["K"] for r in good["length"]["rows"]} == {2, 4, 6, 8}
    assert all(r["metrics"]["hallucination"]["mean"] == 0.125 for r in good["positions"]["rows"])
    assert any("2×2 attribution" in line for line in analysis(good))
    two = {k: v for k, v in runs(0.5, 0.7).items() if not k.endswith("seed2")}
    assert verdicts(tables_from_runs(two))[0]["outcome"] == "inconclusive"  # fewer than 3 training seeds


def test_widget_callbacks_switch_narrator_and_length():
    """The explorer's controls without a browser: the narrator toggle and the segments slider change what is shown
    (a longer episode shows more frames), the token slider moves along the narration."""
    from bytecourse.vistallama.widget import narration_explorer

    narrators = {"rope": _tiny_narrator("rope"), "edvt": _tiny_narrator("edvt")}
    view = narration_explorer(narrators)
    first = view.refresh()
    assert first["view"]["variant"] == "edvt" and first["view"]["per_frame"].shape[1] == 4 * 3
    view.controls["segments"].value = 6
    assert view.result["view"]["segments"] == 6 and view.result["view"]["per_frame"].shape[1] == 6 * 3
    view.controls["variant"].value = "rope"
    assert view.result["view"]["variant"] == "rope"
    view.controls["position"].value = 2
    assert view.result["position"] == 2
