"""Chapter 10 PixelLM: the world options, the grammar, which hidden state feeds the decoder, token fusion, the
decoder's scale coupling, the losses, the MUSE-style matching, bad input."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch

from bytecourse.pixellm import data
from bytecourse.pixellm import evaluate as ev
from bytecourse.pixellm.models import (
    EncoderConfig,
    ImageEncoder,
    LMConfig,
    PixelLM,
    PixelLMConfig,
    VisionLanguageModel,
    codebook_states,
    dice_loss,
    refinement_loss,
)
from bytecourse.worlds import ShapesConfig, make_shapes

TINY_ENCODER = EncoderConfig(width=16, layers=2, heads=2, deep_layer=-1, shallow_layer=1)
TINY_LM = LMConfig(hidden=32, layers=1, heads=2, visual_positions=False)  # stage 2 without the position table


def tiny_vlm() -> VisionLanguageModel:
    torch.manual_seed(0)
    return VisionLanguageModel(ImageEncoder(TINY_ENCODER), TINY_LM).eval()


def tiny_pixellm(**options) -> PixelLM:
    torch.manual_seed(1)
    config = PixelLMConfig(**({"decoder_dim": 16, "lora_rank": 2} | options))
    sam = ImageEncoder(TINY_ENCODER, 128) if config.lisa else None
    return PixelLM(tiny_vlm(), config, sam).eval()


def test_world_options_repeat_colours_and_touching_pairs():
    config = ShapesConfig(**(data.WORLD.__dict__ | {"touching": True}))
    batch = make_shapes(64, 3, config)
    assert batch.touching is not None and batch.touching.float().mean() > 0.9
    grown = torch.nn.functional.max_pool2d(batch.instance_masks[:, 0, None].float(), 3, 1, 1)[:, 0] > 0
    touching = (grown & batch.instance_masks[:, 1]).flatten(1).any(1)
    assert (touching[batch.touching]).all()
    assert not (batch.instance_masks[:, 0] & batch.instance_masks[:, 1]).any()  # visible masks never overlap
    same = [len(set(c[p].tolist())) < int(p.sum()) for c, p in zip(batch.colours, batch.present)]
    assert any(same)  # colours repeat
    assert make_shapes(4, 3).touching is None  # the default world is untouched
    with pytest.raises(ValueError, match="overlap=False"):
        make_shapes(2, 0, ShapesConfig(touching=True, overlap=True))


def scene() -> data.Scene:
    # red circle left, red square middle, blue square right (lower), a small and a large triangle
    return data.Scene(
        colours=(0, 0, 2, 1, 1),
        shapes=(0, 1, 1, 2, 2),
        centers=((10.0, 10.0), (30.0, 12.0), (50.0, 50.0), (20.0, 40.0), (40.0, 30.0)),
        radii=(5.0, 5.0, 6.0, 4.0, 7.0),
    )


def test_grammar_answers_exactly():
    s = scene()
    assert data.targets_of(s, "segment every red thing") == [0, 1]
    assert data.targets_of(s, "segment every square") == [1, 2]
    assert data.targets_of(s, "segment the green triangles") == [3, 4]
    assert data.targets_of(s, "segment the shapes left of the blue square") == [0, 3, 1, 4]
    assert data.targets_of(s, "segment the shapes above the blue square") == [0, 3, 1, 4]
    assert data.targets_of(s, "segment the largest triangle and everything of its colour") == [3, 4]
    assert data.targets_of(s, "segment everything that is not red") == [3, 4, 2]
    answer = data.answer_text(s, [0, 1], 2)
    assert answer == "red circle top left [SEG0] [SEG1] , red square top centre [SEG0] [SEG1] ."
    assert data.parse_answer(answer) == [(0, 0), (0, 1)]
    with pytest.raises(ValueError, match="not in the grammar"):
        data.parse_question("segment the purple circle")
    with pytest.raises(ValueError, match="unique"):
        data.targets_of(s, "segment the shapes left of the red triangle")


def test_muse_batches_have_one_mask_per_group_and_splits_hold():
    batch = data.make_muse(12, 5, 6)
    for answer, masks, desc in zip(batch.answers, batch.masks, batch.descriptions):
        assert answer.split().count("[SEG0]") == len(masks) == len(desc) >= 1
        assert masks.flatten(1).any(1).all()
    few, many = data.held_out("few", 8, 6), data.held_out("many", 8, 6)
    assert all(1 <= len(m) <= 2 for m in few.masks) and all(len(m) >= 3 for m in many.masks)
    touching = data.held_out("touching", 8, 6)
    assert all(s.touching for s in touching.scenes)
    with pytest.raises(ValueError, match="split"):
        data.held_out("medium", 4, 6)


def test_the_decoder_reads_the_state_before_each_codebook_token():
    ids, _ = data.tokenize(["segment every red thing"], ["red circle top left [SEG0] [SEG1] [SEG2] ."])
    visual = 5
    hidden = torch.arange(visual + ids.shape[1], dtype=torch.float)[None, :, None].expand(1, -1, 3)
    states, counts = codebook_states(hidden, ids, visual, 3)
    seg_at = [t for t, i in enumerate(ids[0].tolist()) if i in data.SEG_IDS]
    assert counts == [1]
    assert states[:, 0].tolist() == [visual + t - 1 for t in seg_at]  # LISA: mask[t] = ids[t + 1] is [SEG]
    broken, _ = data.tokenize(["segment every red thing"], ["red circle top left [SEG0] [SEG2] [SEG1] ."])
    assert codebook_states(hidden[:, : visual + broken.shape[1]], broken, visual, 3)[1] == [0]


def test_arm_starts_from_the_language_model_and_fusion_weights_train():
    model = tiny_pixellm(tokens=3, scales=2)
    batch = data.make_muse(3, 2, 6)
    ids, answer = data.tokenize(batch.questions, batch.answers)
    base = tiny_vlm()(batch.images, ids)[0]  # the same language model, without the arm
    lora = [n for n in model.state_dict() if n.startswith("lora.")]
    assert lora and all(("q_proj" in n) or ("v_proj" in n) for n in lora)
    for d in model.lora.values():  # B = 0: the arm's language model is LLaVA's at initialisation
        assert float(d.up.weight.detach().abs().max()) == 0
    loss, parts = model.loss(batch.images, ids, answer, batch.masks)
    assert set(parts) == {"text", "bce", "dice"}
    loss.backward()
    assert model.fusion.grad is not None and model.fusion.grad.abs().sum() > 0
    assert model.decoder.gamma.grad is not None
    assert all(p.grad is None for p in model.vlm.encoder.parameters())
    assert torch.allclose(base, model(batch.images, ids)["logits"])


def test_visual_position_table_starts_at_zero_trains_and_ships():
    model = tiny_pixellm(tokens=1, scales=1, visual_positions=True)
    batch = data.make_muse(2, 4, 1)
    ids, answer = data.tokenize(batch.questions, batch.answers)
    table = model.vlm.position_table
    assert table.shape == (1, model.vlm.visual_tokens, TINY_LM.hidden) and float(table.detach().abs().max()) == 0
    # zero at initialisation: the arm with the table is the arm without it
    without = tiny_pixellm(tokens=1, scales=1)(batch.images, ids)["logits"]
    assert torch.allclose(without, model(batch.images, ids)["logits"])
    model.loss(batch.images, ids, answer, batch.masks)[0].backward()
    assert table.grad is not None and float(table.grad.abs().sum()) > 0
    from bytecourse.pixellm.train import shipped_state

    assert "vlm.position_table" in shipped_state(model)
    assert tiny_vlm().position_table is None and "position_table" not in dict(tiny_vlm().named_parameters())


def test_a_stage_2_position_table_is_learnt_then_kept_by_the_arm():
    from dataclasses import replace

    assert LMConfig().visual_positions  # the shipped recipe learns the table in stage 2
    torch.manual_seed(0)
    vlm = VisionLanguageModel(ImageEncoder(TINY_ENCODER), replace(TINY_LM, visual_positions=True))
    table = vlm.position_table
    assert table.shape == (1, vlm.visual_tokens, TINY_LM.hidden) and float(table.detach().abs().max()) == 0
    batch = data.make_muse(2, 4, 1)
    ids, answer = data.tokenize(batch.questions, batch.text_answers)
    logits, _, _ = vlm(batch.images, ids)
    vlm.text_loss(logits, ids, answer).backward()
    assert table.grad is not None and float(table.grad.abs().sum()) > 0
    with torch.no_grad():
        table.add_(1.0)  # as if stage 2 had trained it
    frozen = PixelLM(copy.deepcopy(vlm), PixelLMConfig(tokens=1, scales=1, decoder_dim=16, lora_rank=2))
    trained = PixelLM(copy.deepcopy(vlm), PixelLMConfig(tokens=1, scales=1, decoder_dim=16, lora_rank=2,
                                                        visual_positions=True))  # fmt: skip
    for arm, grad in ((frozen, False), (trained, True)):
        assert float(arm.vlm.position_table.detach().min()) == 1.0  # kept, not zeroed
        assert arm.vlm.position_table.requires_grad is grad


def test_exact_answers_need_every_place():
    answer = "blue square bottom centre [SEG0] , red circle top left [SEG0] ."
    assert ev.descriptions_of(answer) == ["blue square bottom centre", "red circle top left"]
    truth = [
        (data.COLOURS.index("blue"), data.SHAPES.index("square")),
        (data.COLOURS.index("red"), data.SHAPES.index("circle")),
    ]
    swapped = "red circle top left [SEG0] , blue square bottom centre [SEG0] ."
    moved = "red circle top left [SEG0] , blue square middle centre [SEG0] ."
    assert ev.text_exact(swapped, answer, truth, 1)  # the order of the targets does not matter
    assert ev.text_correct(moved, truth, 1) and not ev.text_exact(moved, answer, truth, 1)  # a wrong cell does


def test_the_shallower_scale_is_modulated_by_the_deeper_mask():
    model = tiny_pixellm(tokens=1, scales=2)
    dec = model.decoder
    feats = [torch.randn(2, 16, 16, 16), torch.randn(2, 16, 16, 16)]
    owner = torch.tensor([0, 1])
    targets = torch.randn(2, 2, 16)
    with torch.no_grad():
        before = dec(feats, owner, targets)
        dec.hyper[0][-1].weight.mul_(3)  # only level 0's mask changes …
        after = dec(feats, owner, targets)
    assert not torch.allclose(before["levels"][0], after["levels"][0])
    assert not torch.allclose(before["levels"][1], after["levels"][1])  # … and level 1 follows it
    assert before["levels"][1].shape[-1] == 2 * before["levels"][0].shape[-1]
    assert before["masks"].shape == (2, 64, 64)


def test_losses_dice_and_refinement():
    truth = torch.zeros(2, 8, 8)
    truth[0, :, :4] = 1
    truth[1, :, 4:] = 1
    perfect = (truth * 2 - 1) * 20
    assert dice_loss(perfect, truth).max() < 1e-6
    assert float(refinement_loss(perfect, truth, [2])) == 0  # no pixel claimed twice
    both = torch.full((2, 8, 8), 3.0)  # each mask claims everything: all 64 pixels collide
    ref = refinement_loss(both, truth, [2])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(both, truth, reduction="none")
    assert torch.isclose(ref, bce.flatten(1).mean(1).sum() / 2)
    assert float(refinement_loss(both, truth, [1, 1])) == 0  # one mask per question: nothing to separate


def test_hungarian_is_optimal_on_rectangular_costs():
    g = torch.Generator().manual_seed(0)
    for r, c in [(1, 1), (3, 3), (2, 4), (4, 2), (5, 5)]:
        cost = torch.rand(r, c, generator=g)
        pairs = ev.hungarian(cost)
        assert len(pairs) == min(r, c) and len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        if r <= c:
            best = min(
                sum(float(cost[i, j]) for i, j in enumerate(cols)) for cols in itertools.permutations(range(c), r)
            )
        else:
            best = min(
                sum(float(cost[i, j]) for j, i in enumerate(rows)) for rows in itertools.permutations(range(r), c)
            )
        assert abs(sum(float(cost[i, j]) for i, j in pairs) - best) < 1e-9


def test_matched_scores_and_overlap_rate():
    truth = torch.zeros(2, 8, 8, dtype=torch.bool)
    truth[0, :, :3] = True
    truth[1, :, 5:] = True
    logits = torch.stack([truth[1], truth[0]]).float() * 20 - 10  # the right masks, in the wrong order
    scores = ev.score_question(logits, truth)
    assert scores.ious == [1.0, 1.0]
    spare = torch.cat([logits, torch.full((1, 8, 8), -10.0)])  # a third, empty, spurious mask
    assert ev.score_question(spare, truth).ious == [1.0, 1.0, 0.0]
    assert ev.score_question(logits[:1], truth).ious == [1.0, 0.0]  # a missed target
    assert ev.overlap_counts(torch.full((2, 4, 4), 1.0)) == (16.0, 16.0)
    assert ev.text_correct("red circle top left [SEG0] .", [(0, 0)], 1)
    assert not ev.text_correct("red circle top left .", [(0, 0)], 1)  # no group
    assert not ev.text_correct("blue circle top left [SEG0] .", [(0, 0)], 1)


def test_answers_come_with_one_mask_per_group_and_bad_input():
    model = tiny_pixellm(tokens=1, scales=1)
    batch = data.make_muse(2, 9, 1)
    got = ev.answer(model, batch.images, batch.questions, max_new=12)
    assert len(got["texts"]) == 2
    for text, masks in zip(got["texts"], got["masks"]):
        assert masks.shape[0] == text.split().count("[SEG0]") and masks.shape[1:] == (64, 64)
    with pytest.raises(ValueError, match="grammar"):
        ev.answer(model, batch.images, ["segment the purple circle", batch.questions[1]])
    with pytest.raises(ValueError, match="empty batch"):
        ev.answer(model, batch.images[:0], [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.answer(model, batch.images * 2, batch.questions)
    for bad in ({"tokens": 0}, {"scales": 0}, {"tokens": 4, "scales": 2}, {"lisa": True}):
        with pytest.raises(ValueError):
            PixelLMConfig(**bad).validate()


def test_lisa_baseline_decodes_from_a_second_encoder_at_twice_the_resolution():
    model = tiny_pixellm(tokens=1, scales=1, lisa=True)
    images = data.make_muse(1, 3, 1).images
    assert model.decoder_features(images, model.vlm.encoder(images))[0].shape[-1] == 32


def test_a_short_run_of_an_arm_finishes(tmp_path: Path):
    from bytecourse.pixellm.train import arm_config, train_arm

    config = arm_config("n2_l2", 0, steps=2, warmup=1, batch=2)
    model, summary = train_arm(config, run_dir=tmp_path, ship=False, vlm=tiny_vlm(), device="cpu", progress=False)
    assert summary["finished"] and torch.isfinite(torch.tensor(summary["final_loss"]))


def _runs(values: dict[str, dict[str, float]]) -> dict:
    from bytecourse.pixellm.evaluate import BUCKET_METRICS, TABLE_METRICS

    runs = {}
    for arm, v in values.items():
        for seed in range(3):
            extra = [k for k in v if k.startswith("template_")]
            metrics = {m: v.get(m, 0.5) + 0.001 * seed for m in (*TABLE_METRICS, *BUCKET_METRICS, *extra)}
            runs[f"{arm}/seed{seed}"] = {
                "seed": seed,
                "metrics": metrics,
                "flops": {"gflops": v.get("gflops", 0.3), "decoder_share": 0.1},
                "wall_time_s": 60.0,
                "trainable": 1,
            }
    return runs


def test_verdicts_can_say_reproduced_and_not_reproduced():
    good = ev.arm_tables(
        _runs(
            {
                "n3_l2": {"many_giou": 0.7, "few_giou": 0.8, "few_text": 0.9, "touching_overlap": 0.2},
                "n1_l1": {"many_giou": 0.5, "few_giou": 0.75},
                "n3_l2_refine": {"touching_overlap": 0.1},
                "lisa": {"many_giou": 0.71, "few_giou": 0.81, "gflops": 0.9},
            }
        )
    )
    assert [v["outcome"] for v in ev.verdicts(good)] == ["reproduced"] * 4
    bad = ev.arm_tables(
        _runs(
            {
                "n3_l2": {"many_giou": 0.4, "few_giou": 0.5, "few_text": 0.5, "touching_overlap": 0.2},
                "n1_l1": {"many_giou": 0.5, "few_giou": 0.75},
                "n3_l2_refine": {"touching_overlap": 0.3},
                "lisa": {"many_giou": 0.71, "few_giou": 0.81, "gflops": 0.9},
            }
        )
    )
    assert [v["outcome"] for v in ev.verdicts(bad)] == ["not reproduced"] * 4
    assert ev.verdicts(ev.arm_tables({}))[0]["outcome"] == "inconclusive"


def test_widget_callbacks_pick_type_and_change_the_image():
    from bytecourse.pixellm import widget

    view = widget.segmentation_explorer({"n1_l1": tiny_pixellm(tokens=1, scales=1)})
    first = view.refresh()
    assert first is not None and first["settings"]["question"] == view.controls["question"].value
    options = list(view.controls["question"].options)
    assert all(data.targets_of(widget.world_image(0)[1], q) for q in options)
    view.controls["question"].value = options[-1]
    assert view.result["settings"]["question"] == options[-1]
    assert len(view.result["truth"]) == len(view.result["rows"][0]["ious"])
    view.controls["typed"].value = "segment the purple circle"
    assert view.result is None and "not in the grammar" in view.status.value
    view.controls["typed"].value = ""
    view.controls["image"].value = 3
    assert view.result["settings"]["image"] == 3
    assert list(view.controls["question"].options) == widget.questions_for(widget.world_image(3)[1])
    calls = view.calls
    view.controls["touching"].value = True
    assert view.calls == calls + 1 and view.result["settings"]["touching"]


def test_hard_negative_captions_change_one_kind_then_one_colour():
    batch = make_shapes(6, 11, data.WORLD)
    true = data.contrastive_captions(batch)
    negatives = data.hard_negative_captions(batch, torch.Generator().manual_seed(0))
    assert len(negatives) == 2 * len(true)
    for b, caption in enumerate(true):
        for k, vocabulary in enumerate((data.SHAPES, data.COLOURS)):
            diff = [(a, n) for a, n in zip(caption.split(), negatives[2 * b + k].split()) if a != n]
            assert len(diff) == 1 and all(w in vocabulary for w in diff[0])


@pytest.mark.parametrize("arch", ["conv", "vit"])
def test_both_encoder_towers_give_two_levels_on_the_grid_at_one_and_two_times_the_resolution(arch: str):
    config = EncoderConfig(arch=arch, width=16, layers=2, heads=2, deep_layer=-1, shallow_layer=1)
    images = torch.rand(2, 3, 64, 64)
    for size, grid in ((None, 16), (128, 32)):
        out = ImageEncoder(config, size)(images)
        assert out["deep"].shape == out["shallow"].shape == (2, 16, grid, grid)
        assert out["cls"].shape == (2, 16)
    with pytest.raises(ValueError, match="arch"):
        EncoderConfig(arch="resnet").validate()
    with pytest.raises(ValueError, match="power of 2"):
        EncoderConfig(patch=6, image_size=48, arch="conv").validate()


def test_region_term_pools_each_object_and_names_its_phrase():
    from bytecourse.pixellm.models import CLIPPretrainer

    batch = make_shapes(3, 5, data.WORLD)
    phrases, labels = data.region_phrases(), data.region_labels(batch)
    for b, k in zip(*torch.nonzero(batch.present, as_tuple=True)):  # each object's phrase is its colour and kind
        scene = data.scenes_of(batch)[int(b)]
        assert phrases[int(labels[b, k])] == " ".join(data.describe(scene, int(k)).split()[:2])
    torch.manual_seed(0)
    model = CLIPPretrainer(TINY_ENCODER).eval()
    deep = model.image(batch.images)["deep"]
    got = model.region_loss(deep, batch.instance_masks, labels, phrases)
    # by hand: mean of the deep map over each visible object's (area-resized) mask, projected, against every phrase
    m = torch.nn.functional.interpolate(batch.instance_masks.float(), size=deep.shape[-2:], mode="area")
    losses = []
    for b, k in zip(*torch.nonzero(m.flatten(2).sum(-1) > 0, as_tuple=True)):
        f = (deep[b] * m[b, k]).sum((1, 2)) / m[b, k].sum()
        r = torch.nn.functional.normalize(model.region_proj(f), dim=-1)
        logits = model.log_scale.exp() * r @ model.text_features(phrases).T
        losses.append(torch.nn.functional.cross_entropy(logits[None], labels[b, k][None]))
    assert torch.allclose(got, torch.stack(losses).mean(), atol=1e-5)


def test_the_template_table_and_its_paragraph_follow_the_recorded_runs():
    values = {f"template_{t}_text": 0.9 for t in data.TEMPLATES} | {"template_kind_text": 0.3}
    runs = _runs({"n3_l2": values})
    tables = ev.arm_tables(runs)
    (row,) = tables["by_template"]["rows"]
    assert row["metrics"]["template_kind_text"]["mean"] == pytest.approx(0.301, abs=1e-9)
    assert any('"segment every {shape}" in 0.30' in p for p in ev.analysis(tables))
    for r in runs.values():  # runs recorded before the template metrics existed: no table, no paragraph
        r["metrics"] = {k: v for k, v in r["metrics"].items() if not k.startswith("template_")}
    assert ev.arm_tables(runs)["by_template"]["rows"] == []


def test_runs_of_an_earlier_recipe_stay_out_of_the_tables():
    from bytecourse.pixellm.train import ArmTrainConfig

    runs = _runs({"n3_l2": {}, "n1_l1": {}, "lisa": {}})
    steps, lm = ArmTrainConfig().steps, LMConfig().to_dict()
    for k, r in runs.items():
        r["config"] = {"steps": steps if k.startswith(("n3_l2", "lisa")) else steps // 2, "lm": lm}
        if k.startswith("lisa"):  # the right budget, on an earlier stage-2 model (no visual position table)
            r["config"]["lm"] = lm | {"visual_positions": False}
    current, stale = ev.split_by_recipe(runs)
    assert current and all(k.startswith("n3_l2") for k in current)
    assert stale == sorted(k for k in runs if not k.startswith("n3_l2"))
    assert [r["arm"] for r in ev.arm_tables(current)["arms"]["rows"]] == ["n3_l2"]
