"""Chapter 03 Meta Prompts: the mechanism's defining properties on tiny configs (no shipped checkpoint needed)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import torch

from bytecourse.diffusion.lora import add_lora, merge_lora
from bytecourse.diffusion.unet import ImageDenoiser, UNetConfig
from bytecourse.metaprompts import evaluate as ev
from bytecourse.metaprompts.models import (
    FEATURE_POINTS,
    ConvBackbone,
    MetaPromptsConfig,
    MetaPromptsModel,
    UNetBackbone,
    count_flops,
    rearrange,
    silog_loss,
)

TINY = UNetConfig(widths=(16, 16, 16), text_dim=16, heads=2, text_layers=1)


def tiny_unet(seed: int = 0) -> ImageDenoiser:
    """A random tiny UNet whose output layer is not zero (a fresh ImageDenoiser starts it at zero, so that a trained
    one's is what carries one loop's features into the next)."""
    torch.manual_seed(seed)
    unet = ImageDenoiser(TINY)
    torch.nn.init.normal_(unet.out[-1].weight, std=0.05)
    return unet


def tiny_model(**kw) -> MetaPromptsModel:
    cfg = MetaPromptsConfig(n_prompts=4, head_dim=8, **kw)
    torch.manual_seed(1)
    return MetaPromptsModel(UNetBackbone(tiny_unet(), cfg), cfg)


def batch(n: int = 2):
    g = torch.Generator().manual_seed(0)
    return (
        torch.rand(n, 3, 32, 32, generator=g),
        torch.randint(0, 4, (n, 32, 32), generator=g),
        0.1 + torch.rand(n, 32, 32, generator=g),
    )


def test_rearrange_is_a_per_pixel_dot_product_with_every_prompt():
    f, p = torch.randn(2, 5, 3, 4), torch.randn(7, 5)
    out = rearrange(f, p)
    assert out.shape == (2, 7, 3, 4)
    assert torch.allclose(out[1, 3, 2, 1], (f[1, :, 2, 1] * p[3]).sum(), atol=1e-5)
    per_sample = rearrange(f, p[None].expand(2, -1, -1))
    assert torch.allclose(per_sample, out, atol=1e-5)
    with pytest.raises(ValueError):
        rearrange(f, torch.randn(7, 6))


def test_silog_matches_its_formula_and_ignores_invalid_pixels():
    pred, target = torch.rand(50) + 0.1, torch.rand(50) + 0.1
    g = pred.log() - target.log()
    assert torch.allclose(silog_loss(pred, target), (g.pow(2).mean() - 0.5 * g.mean() ** 2).sqrt(), atol=1e-6)
    assert silog_loss(target, target) < 1e-2
    # with λ = 1 the loss is blind to a global scale; with the paper's λ = 0.5 it is not
    assert silog_loss(2 * target, target, lam=1.0) < 1e-2 < silog_loss(2 * target, target)
    masked = target.clone()
    masked[:10] = 0
    assert torch.allclose(silog_loss(pred, masked), silog_loss(pred[10:], target[10:]), atol=1e-6)


def test_context_and_time_overrides_reproduce_the_normal_forward():
    unet = tiny_unet().eval()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 500])
    tokens = torch.randint(1, 5, (2, TINY.caption_length))
    from bytecourse.diffusion.layers import timestep_embedding

    ref = unet(x, t, tokens)
    temb = unet.time_mlp(timestep_embedding(t, TINY.widths[0]))
    out = unet(x, None, None, context=unet.text(tokens), time_embedding=temb)
    assert torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError):
        unet(x, t, None, context=torch.randn(2, 5, TINY.text_dim + 1))


def test_only_the_last_loop_is_supervised_but_gradients_reach_every_loop():
    model = tiny_model(loops=3, per_loop_prompts=True)
    model.parameter_groups(1.0)
    images, labels, depth = batch()
    model.loss(images, labels, depth).backward()
    bb = model.backbone
    assert all(bb.time.grad[i].abs().sum() > 0 for i in range(3))  # every loop's time vector
    assert all(bb.prompts.prompts.grad[i].abs().sum() > 0 for i in range(3))  # every loop's own prompts
    # running fewer loops at inference leaves the later loops' parameters out of the graph
    model.zero_grad()
    out = model(images, loops=1)
    out["depth"].sum().backward()
    assert bb.time.grad[1:].abs().sum() == 0 and bb.time.grad[0].abs().sum() > 0


def test_each_loop_reads_what_the_output_layer_made_of_the_last_features():
    model = tiny_model(loops=2).eval()
    bb = model.backbone
    seen, outputs = [], []
    h1 = bb.unet.conv_in.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    h2 = bb.unet.unstem.register_forward_hook(lambda m, i, o: outputs.append(o))
    images = batch()[0]
    with torch.no_grad():
        model(images)
    h1.remove()
    h2.remove()
    assert torch.allclose(seen[0], bb.unet.stem(images * 2 - 1))  # loop 1: the clean image, no noise
    assert torch.allclose(seen[1], bb.unet.stem(outputs[0]))  # loop 2: OutProj(features of loop 1)


def test_rearrangement_makes_the_head_channels_the_prompts():
    model = tiny_model(loops=1)
    feats = {}
    model.segmentation.project[0].register_forward_hook(lambda m, i, o: feats.setdefault("proj", o))
    with torch.no_grad():
        model(batch()[0])
        prompts = model.backbone.head_prompts()
    assert prompts.shape == (4, TINY.text_dim)
    plain = tiny_model(loops=1, rearrange=False)
    assert model.segmentation.ppm_fuse[0].in_channels - 2 * 8 == 4  # N prompts in
    assert plain.segmentation.ppm_fuse[0].in_channels - 2 * 8 == TINY.text_dim  # d channels in


def test_fixed_prompt_variants_use_the_caption_encoder_once_and_drop_it():
    for kind in ("null", "classnames"):
        model = tiny_model(prompts=kind, rearrange=False, loops=1)
        assert model.backbone.unet.text is None and model.backbone.prompts is None
        assert model.backbone.fixed_context.shape == (TINY.caption_length, TINY.text_dim)
    a = tiny_model(prompts="null", rearrange=False, loops=1).backbone.fixed_context
    b = tiny_model(prompts="classnames", rearrange=False, loops=1).backbone.fixed_context
    assert not torch.allclose(a, b)


def test_lora_arm_tunes_only_its_delta_and_ships_only_what_it_adds():
    model = tiny_model(loops=1)
    groups = model.parameter_groups(0.25)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.25]
    frozen = model.backbone.unet.down[0][0].conv1.weight
    assert not frozen.requires_grad and model.backbone.unet.out[-1].weight.requires_grad
    shipped = model.shipped_state()
    assert "backbone.unet.down.0.0.conv1.weight" not in shipped
    assert any(k.startswith("backbone.deltas.") for k in shipped) and "backbone.time" in shipped
    assert sum(v.numel() for v in shipped.values()) < sum(v.numel() for v in model.state_dict().values()) / 2


def test_conv_lora_merges_exactly():
    unet = tiny_unet().eval()
    deltas = add_lora(unet, 2, skip=("text",))
    with torch.no_grad():
        for d in deltas.values():
            d.up.weight.normal_(std=0.1)
    x, tokens = torch.randn(1, 3, 32, 32), torch.randint(1, 5, (1, TINY.caption_length))
    hooked = unet(x, 10, tokens)
    merged = merge_lora(unet, deltas)(x, 10, tokens)
    assert torch.allclose(hooked, merged, atol=1e-4)
    assert not torch.allclose(hooked, tiny_unet().eval()(x, 10, tokens), atol=1e-3)


def test_conv_backbone_gives_the_same_feature_points():
    conv = ConvBackbone(0.25)
    feats = conv(torch.randn(1, 3, 32, 32))
    assert list(feats) == list(FEATURE_POINTS)
    assert [f.shape[-1] for f in feats.values()] == [32 // conv.strides[p] for p in FEATURE_POINTS]
    cfg = MetaPromptsConfig(backbone="conv", rearrange=False, loops=1, tune="full", head_dim=8)
    model = MetaPromptsModel(conv, cfg)
    assert model(torch.rand(1, 3, 32, 32))["logits"].shape == (1, 4, 32, 32)
    assert count_flops(model) > 0


def test_bad_input_raises_one_clear_value_error():
    model = tiny_model(loops=2)
    with pytest.raises(ValueError, match="images must be"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="loops"):
        model(torch.rand(1, 3, 32, 32), loops=0)
    with pytest.raises(ValueError, match="loops"):
        model(torch.rand(1, 3, 32, 32), loops=3)
    with pytest.raises(ValueError, match="tasks"):
        MetaPromptsConfig(tasks=("detection",)).validate()
    with pytest.raises(ValueError, match="loops"):
        MetaPromptsConfig(loops=0).validate()
    with pytest.raises(ValueError, match="re-arrangement"):
        MetaPromptsConfig(prompts="null").validate()


def test_diffusers_unet_takes_the_same_prompts_time_vectors_and_heads():
    from diffusers import UNet2DConditionModel

    from bytecourse.metaprompts.diffusers_unet import DiffusersBackbone

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    backbone = DiffusersBackbone(unet, n_prompts=4, loops=2)
    model = MetaPromptsModel(backbone, MetaPromptsConfig(n_prompts=4, loops=2, head_dim=8))
    images, labels, depth = batch()
    out = model(images)
    assert out["logits"].shape == (2, 4, 32, 32) and out["depth"].shape == (2, 32, 32)
    model.loss(images, labels, depth).backward()
    assert backbone.time.grad.abs().sum(1).min() > 0  # both loops' time vectors reach the loss
    assert backbone.prompts.prompts.grad.abs().sum() > 0
    # the learnt vector really replaces the time embedding: changing it changes the features
    with torch.no_grad():
        a = backbone(images, 1)["up7"].clone()
        backbone.time[0] += 1.0
        b = backbone(images, 1)["up7"]
    assert not torch.allclose(a, b)


def test_metrics_on_known_predictions():
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 3, 0]])
    iou = ev.iou_from_confusion(ev.confusion(pred, truth, 4))
    assert torch.allclose(iou, torch.tensor([1 / 3, 2 / 3, 1.0, 1 / 2], dtype=torch.double))
    d = torch.tensor([1.0, 2.0, 4.0])
    m = ev.depth_metrics(torch.tensor([1.0, 2.0, 2.0]), d)
    assert m["rmse"] == pytest.approx((4 / 3) ** 0.5) and m["delta1"] == pytest.approx(2 / 3)
    assert m["rel"] == pytest.approx(0.5 / 3)


def test_a_tiny_arm_trains_and_evaluates():
    from bytecourse.metaprompts.train import arm_config, train_arm

    config = arm_config("loops_2", 0, steps=3, warmup=1, batch=2)
    config = type(config)(**{**config.__dict__, "model": MetaPromptsConfig(n_prompts=4, loops=2, head_dim=8)})
    with tempfile.TemporaryDirectory() as d:
        model, summary = train_arm(config, run_dir=Path(d), unet=tiny_unet(), device="cpu", progress=False)
    assert summary["finished"] and "shipped" not in summary
    metrics = ev.evaluate_model(model, ev.held_out("shape", 8))
    assert 0 <= metrics["miou"] <= 1 and metrics["rmse"] > 0


def test_copy_of_a_lora_model_keeps_its_own_delta():
    model = tiny_model(loops=1)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for d in twin.backbone.deltas.values():
            d.up.weight.fill_(0.05)
    images = batch(1)[0]
    with torch.no_grad():
        assert not torch.allclose(model(images)["depth"], twin(images)["depth"])


def test_the_registry_lists_every_arm_and_ships_what_train_ships():
    from bytecourse import registry
    from bytecourse.metaprompts.train import ARMS, SHIPPED

    t = registry.target("metaprompts")
    assert t.variants == tuple(ARMS)
    assert set(t.checkpoints) == {"metaprompts_pretrain", *(f"metaprompts_{a}" for a in SHIPPED)}


def _fake_tables(values: dict[str, tuple[list[float], list[float]]]) -> dict:
    from bytecourse.evaluation import summarise

    rows = [
        {"arm": arm, "setting": arm, "metrics": summarise([{"miou": m, "rmse": r} for m, r in zip(miou, rmse)])}
        for arm, (miou, rmse) in values.items()
    ]
    return {"arms": {"rows": rows}}


def test_verdicts_can_say_not_reproduced_and_inconclusive():
    good = _fake_tables(
        {
            "meta": ([0.8, 0.82, 0.81], [0.1, 0.11, 0.1]),
            "null": ([0.6, 0.62, 0.61], [0.2, 0.21, 0.2]),
            "class_names": ([0.7, 0.71, 0.7], [0.15, 0.16, 0.15]),
        }
    )
    assert ev.compare_arms(good, "c", "meta", ("null", "class_names"))["outcome"] == "reproduced"
    worse = _fake_tables(
        {
            "meta": ([0.5, 0.52, 0.51], [0.1, 0.11, 0.1]),
            "null": ([0.6, 0.62, 0.61], [0.2, 0.21, 0.2]),
            "class_names": ([0.7, 0.71, 0.7], [0.15, 0.16, 0.15]),
        }
    )
    assert ev.compare_arms(worse, "c", "meta", ("null", "class_names"))["outcome"] == "not reproduced"
    tied = _fake_tables({"meta": ([0.6, 0.8], [0.1, 0.11]), "null": ([0.7, 0.72], [0.2, 0.21])})
    assert ev.compare_arms(tied, "c", "meta", ("null",))["outcome"] == "inconclusive"
    assert ev.compare_arms(tied, "c", "meta", ("class_names",))["outcome"] == "inconclusive"  # not trained
    one_seed = _fake_tables({"meta": ([0.9], [0.1]), "null": ([0.6, 0.62, 0.61], [0.2, 0.21, 0.2])})
    assert ev.compare_arms(one_seed, "c", "meta", ("null",))["outcome"] == "inconclusive"
    assert ev.verdict_floor(_fake_tables({"loops_3": ([0.5, 0.6], [0.1, 0.1])}))["outcome"] == "not reproduced"
    assert ev.verdict_floor(_fake_tables({"loops_3": ([0.75, 0.8], [0.1, 0.1])}))["outcome"] == "reproduced"
    assert ev.verdict_hard_enough(_fake_tables({"conv": ([0.9, 0.95], [0.1, 0.1])}))["outcome"] == "not reproduced"
    for v in ev.verdicts(worse):
        assert v["outcome"] in ("reproduced", "not reproduced", "inconclusive") and v["sentence"]


def test_training_batches_are_the_same_for_every_arm_and_flip_everything_together():
    from bytecourse.metaprompts.train import arm_config, training_batch

    a, b = arm_config("null", 0), arm_config("loops_3", 0)
    for x, y in zip(training_batch(a, 5), training_batch(b, 5)):
        assert torch.equal(x, y)
    assert not torch.equal(training_batch(a, 5)[0], training_batch(arm_config("null", 1), 5)[0])
    fixed = arm_config("meta", 0, labelled_images=8, batch=64)
    images, labels, depth = training_batch(fixed, 0)
    assert len({tuple(im.flatten()[:8].tolist()) for im in images}) <= 16  # drawn from 8 images (and their flips)
    noflip = arm_config("meta", 0, labelled_images=8, batch=64, flip=False)
    im2, lab2, dep2 = training_batch(noflip, 0)
    flipped = ~torch.isclose(images, im2).flatten(1).all(1)
    assert flipped.any() and torch.equal(labels[flipped], lab2[flipped].flip(-1))
    assert torch.equal(depth[flipped], dep2[flipped].flip(-1))


def test_the_harder_label_set_has_a_class_per_colour_and_kind():
    model = tiny_model(loops=1, labels="colour_shape")
    assert model.config.num_classes == 19
    assert model(batch(1)[0])["logits"].shape == (1, 19, 32, 32)


def test_analysis_is_computed_from_whatever_arms_are_there():
    tables = _fake_tables(
        {"null": ([0.7, 0.72], [0.1, 0.1]), "meta": ([0.71, 0.73], [0.1, 0.1]), "conv": ([0.8, 0.82], [0.1, 0.1])}
    )
    paragraphs = ev.analysis(tables)
    assert any("0.010 mIoU" in p for p in paragraphs)  # the spread of the one-loop arms' means
    assert any("does not beat" in p for p in paragraphs)
    assert ev.analysis(_fake_tables({"meta": ([0.7], [0.1])})) == []
    full = _fake_tables({"loops_3_full": ([0.84, 0.83], [0.1, 0.1]), "loops_1_full": ([0.80, 0.81], [0.1, 0.1])})
    (p,) = ev.analysis(full)
    assert "(+0.030)" in p and "loops pay (the seed ranges separate)" in p and "keeps them from paying" in p
    flat = _fake_tables({"loops_3_full": ([0.86, 0.83], [0.1, 0.1]), "loops_1_full": ([0.84, 0.82], [0.1, 0.1])})
    assert "do not clearly pay" in ev.analysis(flat)[0]
