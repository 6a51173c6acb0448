"""Chapter 08 COSA: concatenation, the frame embedding's role, the objectives' defining properties, bad input."""

from __future__ import annotations

import pytest
import torch

from bytecourse import text
from bytecourse.cosa import data
from bytecourse.cosa import evaluate as ev
from bytecourse.cosa.evaluate import CHANCE, rank_accuracy, shuffles
from bytecourse.cosa.models import COSAConfig, COSAModel, causal_mask, mask_words, resize_frame_embedding
from bytecourse.worlds.events import EventsConfig, make_events

TINY = COSAConfig(vision_width=16, vision_layers=1, width=16, layers=1, heads=2, contrast_dim=8, frame_embedding=4)


def tiny(frame_embedding: int = 4) -> COSAModel:
    torch.manual_seed(0)
    model = COSAModel(COSAConfig(**(TINY.to_dict() | {"frame_embedding": frame_embedding}))).eval()
    with torch.no_grad():  # weights of a trained model's size (BERT's init, std 0.02, hides the video at first)
        for name, p in model.named_parameters():
            if p.dim() > 1 or name == "frame_embedding":
                p.normal_(0, 0.3)
    return model


def clips(n: int = 3, frames: int = 4):
    return data.events_samples(n, 123, frames)[0]


def test_events_paragraphs_parse_back_to_their_events():
    batch = make_events(16, 5, EventsConfig(frames=6))
    assert batch.videos.shape == (16, 6, 3, 32, 32)
    for paragraph, events, captions in zip(batch.paragraphs, batch.events, batch.frame_captions):
        first, parsed = text.parse_event_paragraph(paragraph)
        assert parsed == events and len(events) == 5 and len(captions) == 6
        assert captions[0] == text.shapes_caption([c for c, _ in first], [s for _, s in first])
    for t in range(5):  # every event changes the picture
        assert (batch.videos[:, t + 1] - batch.videos[:, t]).abs().flatten(1).amax(1).min() > 0


def test_tokenize_round_trip_and_bad_captions():
    ids, pad = data.tokenize(["a red circle then the red circle turns blue"], 16)
    assert ids[0, 0] == data.CLS_ID and pad.sum() == 11
    assert data.detokenize(ids) == ["a red circle then the red circle turns blue"]
    with pytest.raises(ValueError, match="empty"):
        data.tokenize(["a red circle", ""], 16)
    with pytest.raises(ValueError, match="at least one caption"):
        data.tokenize([], 16)
    with pytest.raises(ValueError, match="vocabulary"):
        data.tokenize(["a purple circle"], 16)


def test_partners_draw_distinct_others_with_the_anchor_first():
    g = torch.Generator().manual_seed(0)
    members = data.partners(4, 10, g)
    assert members.shape == (10, 4)
    assert (members[:, 0] == torch.arange(10)).all()
    for row in members.tolist():
        assert len(set(row)) == 4
    keys = torch.tensor([[0, 0]] * 5 + [[1, 1]] * 5)
    similar = data.partners(3, 10, g, "similar", keys)
    assert all((keys[similar[i, 1:]] == keys[i]).all(-1).all() for i in range(10))
    with pytest.raises(ValueError, match="at least K"):
        data.partners(5, 4, g)
    with pytest.raises(ValueError, match="K"):
        data.partners(0, 4, g)


def test_concatenate_joins_frames_and_captions_in_the_same_order():
    samples = data.Samples(torch.arange(5.0)[:, None, None, None, None].expand(5, 1, 3, 2, 2), list("abcde"))
    out = data.concatenate(samples, torch.tensor([[0, 3, 1], [4, 2, 0]]))
    assert out.frames.shape == (2, 3, 3, 2, 2)
    assert out.frames[:, :, 0, 0, 0].tolist() == [[0, 3, 1], [4, 2, 0]]
    assert out.texts == ["a d b", "e c a"]


def test_without_frame_embedding_itm_is_exactly_blind_to_frame_order():
    """Cross-attention is permutation-invariant over its memory: nothing but the frame embedding carries order."""
    c = clips()
    order = torch.tensor([2, 0, 3, 1])
    blind, seeing = tiny(0), tiny(4)
    ids, pad = data.tokenize(c.texts, TINY.max_text)

    def states(model, frames):  # the multimodal states ITM's head reads
        with torch.no_grad():
            return model.text_states(ids, pad, model.video_memory(model.encode_frames(frames)))

    same = states(blind, c.frames), states(blind, c.frames[:, order])
    differ = states(seeing, c.frames), states(seeing, c.frames[:, order])
    torch.testing.assert_close(same[0], same[1], atol=1e-5, rtol=0)
    assert (differ[0] - differ[1]).abs().max() > 1e-3
    with torch.no_grad():
        torch.testing.assert_close(
            blind.itm_score(c.frames, c.texts), blind.itm_score(c.frames[:, order], c.texts), atol=1e-6, rtol=0
        )
    # and ITC's mean-pooled video feature is order-blind for every model
    v1, _ = seeing.retrieval_features(c.frames, c.texts)
    v2, _ = seeing.retrieval_features(c.frames[:, order], c.texts)
    torch.testing.assert_close(v1, v2, atol=1e-5, rtol=0)


def test_rank_accuracy_gives_ties_a_fair_share():
    scores = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0], [0.5] * 5])
    assert rank_accuracy(scores).tolist() == pytest.approx([1.0, 0.0, CHANCE])
    perms = shuffles(4, 4, torch.Generator().manual_seed(0))
    assert len({tuple(p.tolist()) for p in perms}) == 4 and all(p.tolist() != [0, 1, 2, 3] for p in perms)


def test_captioning_is_causal():
    """With the causal mask the caption logits at position j do not depend on words after j."""
    model = tiny()
    c = clips(2)
    ids, pad = data.tokenize(c.texts, model.config.max_text)
    memory = model.video_memory(model.encode_frames(c.frames))
    changed = ids.clone()
    changed[:, 6:] = torch.where(pad[:, 6:], data.FIRST_WORD_ID, changed[:, 6:])
    with torch.no_grad():
        a = model.text_states(ids, pad, memory, causal=True)
        b = model.text_states(changed, pad, memory, causal=True)
        c_bi = model.text_states(changed, pad, memory, causal=False)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-5, rtol=0)
    assert (a[:, :6] - c_bi[:, :6]).abs().max() > 1e-4  # bidirectional: the later words do matter
    assert causal_mask(pad)[0, 0, 2, 3].item() is False


def test_mask_words_never_touches_special_tokens_and_follows_bert_rule():
    ids, _ = data.tokenize(["a red circle and a blue square and a green triangle"] * 400, 16)
    g = torch.Generator().manual_seed(0)
    inputs, labels = mask_words(ids, 0.15, g, bert_rule=True)
    chosen = labels != -100
    assert not chosen[ids < data.FIRST_WORD_ID].any()
    assert chosen.any(1).all()
    rate = chosen.sum() / (ids >= data.FIRST_WORD_ID).sum()
    assert 0.13 < float(rate) < 0.19
    masked = (inputs == data.MASK_ID) & chosen
    assert 0.75 < float(masked.sum() / chosen.sum()) < 0.85
    inputs, labels = mask_words(ids, 0.6, g, bert_rule=False)
    assert ((inputs == data.MASK_ID) == (labels != -100)).all()


def test_frame_embedding_is_resampled_by_nearest_neighbour():
    e = torch.arange(4.0)[None, :, None]
    assert resize_frame_embedding(e, 8)[0, :, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resize_frame_embedding(e, 6)[0, :, 0].tolist() == [0, 0, 1, 2, 2, 3]
    assert resize_frame_embedding(torch.ones(1, 1, 2), 3).shape == (1, 3, 2)


def test_losses_are_finite_and_reach_every_part():
    model = tiny().train()
    g = torch.Generator().manual_seed(0)
    single, keys = data.pretraining_batch(6, 0, 0)
    joined = data.concatenate(single, data.partners(4, 6, g))
    losses = model.losses(single, ("ret",), g) | {
        f"c{k}": v for k, v in model.losses(joined, ("ret", "cap", "mlm"), g).items()
    }
    assert set(losses) == {"itc", "itm", "citc", "citm", "ccap", "cmlm"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name in (
        "frame_embedding",
        "log_inv_temperature",
        "itm_head.weight",
        "vision.embeddings.patch_embeddings.projection.weight",
    ):
        param = dict(model.named_parameters())[name]
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_input_raises_one_clear_value_error():
    model = tiny()
    with pytest.raises(ValueError, match="frames must be"):
        model.encode_frames(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="at least one video"):
        model.encode_frames(torch.zeros(0, 4, 3, 32, 32))
    with pytest.raises(ValueError, match="longer than the frame embedding"):
        model.encode_frames(torch.zeros(1, 17, 3, 32, 32))
    with pytest.raises(ValueError, match="frame_embedding"):
        COSAConfig(frame_embedding=20).validate()
    from bytecourse.cosa.train import regime_config

    with pytest.raises(ValueError, match="regime must be one of"):
        regime_config("cosa_k8")
    with pytest.raises(ValueError, match="larger than the batch"):
        regime_config("k4", batch=2)


def test_generate_returns_words_of_the_vocabulary():
    model = tiny()
    out = model.generate(clips(2).frames, max_words=5)
    assert len(out) == 2 and all(len(s.split()) <= 5 for s in out)
    assert all(w in data.WORD_TO_ID for s in out for w in s.split())


def test_widget_callbacks_reorder_shuffle_and_reject_bad_orders():
    from bytecourse.cosa.widget import order_explorer, parse_order, random_order

    models = {"k4": tiny(4), "k4_no_frame_embedding": tiny(0)}
    view = order_explorer(models)
    view.refresh()
    assert view.result["identity"] and view.result["settings"]["order"] == "0 1 2 3 4 5"
    view.shuffle()
    assert not view.result["identity"]
    blind = next(r for r in view.result["rows"] if r["regime"] == "k4_no_frame_embedding")
    assert blind["true_order"] == pytest.approx(blind["this_order"], abs=1e-5)  # exactly blind to order
    seeing = next(r for r in view.result["rows"] if r["regime"] == "k4")
    assert seeing["true_order"] != pytest.approx(seeing["this_order"], abs=1e-5)
    view.controls["frames"].value = 4  # back to the true order of a 4-frame clip
    assert view.result["settings"] == {"clip": 0, "frames": 4, "order": "0 1 2 3"}
    view.controls["order"].value = "0 0 1 2"
    assert view.result is None and "once" in view.status.value
    with pytest.raises(ValueError, match="separated by spaces"):
        parse_order("a b", 2)
    assert random_order(5, 0) != "0 1 2 3 4"


def _tables(k4: list[float], sst: list[float], similar: list[float]) -> dict:
    from bytecourse.evaluation import summarise

    def row(regime, vals):
        per_seed = [{m: v for m in ev.METRICS} for v in vals]
        return {"setting": regime, "regime": regime, "seeds": list(range(len(vals))), "metrics": summarise(per_seed)}

    rows = [row("k4", k4), row("sst", sst), row("k4_similar", similar)]
    return {p: {"rows": rows} for p in ("zero_shot", "finetuned")}


def test_verdicts_can_say_reproduced_not_reproduced_and_inconclusive():
    good = {v["claim"]: v["outcome"] for v in ev.verdicts(_tables([0.8, 0.85, 0.9], [0.3, 0.35, 0.4], [0.5] * 3))}
    assert set(good.values()) == {"reproduced"}
    bad = {v["claim"]: v["outcome"] for v in ev.verdicts(_tables([0.21, 0.22, 0.23], [0.5, 0.6, 0.7], [0.9] * 3))}
    assert set(bad.values()) == {"not reproduced"}
    overlap = ev.verdicts(_tables([0.3, 0.6, 0.9], [0.4, 0.5, 0.6], [0.5] * 3))
    assert {v["outcome"] for v in overlap} == {"inconclusive"}
    two_seeds = ev.verdicts(_tables([0.8, 0.9], [0.3, 0.4], [0.5, 0.5]))
    assert {v["outcome"] for v in two_seeds} == {"inconclusive"}


def test_caption_likelihood_is_order_blind_only_without_a_frame_embedding():
    c = clips(2)
    order = torch.tensor([3, 1, 0, 2])
    blind, seeing = tiny(0), tiny(4)
    a, b = blind.caption_logprob(c.frames, c.texts), blind.caption_logprob(c.frames[:, order], c.texts)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    x, y = seeing.caption_logprob(c.frames, c.texts), seeing.caption_logprob(c.frames[:, order], c.texts)
    assert (x - y).abs().max() > 1e-4 and torch.isfinite(x).all() and (x < 0).all()


def test_hard_negatives_follow_albef_text_to_video_and_video_to_text():
    """sim[i, j] = video i · text j: text i draws its negative video from column i, video i its text from row i."""
    from bytecourse.cosa.models import hard_negatives

    b = 6
    sim = torch.zeros(b, b)
    for i in range(b):
        sim[(i + 1) % b, i] = (
            50.0  # column i: video i + 1 is most like text i; so row i: text i − 1 is most like video i
        )
    neg_video, neg_text = hard_negatives(sim, 3, torch.Generator().manual_seed(0))
    assert neg_video.tolist() == [1, 2, 3] and neg_text.tolist() == [5, 0, 1]
    sim = torch.eye(b) * 50  # only the positives are similar: they are never drawn
    neg_video, neg_text = hard_negatives(sim, 6, torch.Generator().manual_seed(0))
    assert (neg_video != torch.arange(6)).all() and (neg_text != torch.arange(6)).all()


def test_runs_of_an_earlier_recipe_stay_out_of_the_tables():
    from bytecourse.cosa.train import RegimeConfig

    recipe = RegimeConfig()
    metrics = {p: {m: 0.5 for m in ev.METRICS} for p in ("zero_shot", "finetuned")}

    def run(seed, **config):
        return {"seed": seed, "wall_time_s": 60.0, "metrics": metrics, "config": recipe.to_dict() | config}

    runs = {
        "k4/seed0": run(0),
        "k4/seed1": run(1, finetune_steps=recipe.finetune_steps // 9),  # the 400-step fine-tune of the first recipe
        "sst/seed0": run(0, steps=recipe.steps + 1),
    }
    current, stale = ev.split_by_recipe(runs)
    assert list(current) == ["k4/seed0"] and stale == ["k4/seed1", "sst/seed0"]
    tables = ev.evaluate_cosa({}, runs)
    assert tables["stale_runs"] == stale
    assert [(r["regime"], r["seeds"]) for r in tables["finetuned"]["rows"]] == [("k4", [0])]
