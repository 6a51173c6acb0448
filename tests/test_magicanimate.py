"""Chapter 05 (MagicAnimate): the Puppet world, the mechanism's defining properties, the windows, the verdicts."""

import copy

import pytest
import torch

from bytecourse.diffusion.attention import Attention
from bytecourse.diffusion.unet import ImageDenoiser, UNetConfig
from bytecourse.magicanimate.evaluate import identity_error, seam_pairs, ssim, verdicts
from bytecourse.magicanimate.models import MagicAnimate, MagicAnimateConfig, PuppetBase, ReferenceAttention
from bytecourse.magicanimate.pipeline import animate, context_windows, initial_noise, window_eps
from bytecourse.worlds.puppet import (
    MOTIONS,
    NUM_IDENTITIES,
    TRAIN_IDENTITIES,
    PuppetConfig,
    appearance,
    make_puppets,
    render_poses,
)

TINY_UNET = UNetConfig(widths=(16, 16, 16), heads=2, text_dim=16, text_layers=1)
TINY = MagicAnimateConfig(base_rank=2, appearance_rank=2, control_rank=2, hint_channels=8, heads=2)


def tiny_model(temporal: bool = False, seed: int = 0) -> MagicAnimate:
    torch.manual_seed(seed)
    base = ImageDenoiser(TINY_UNET)
    for p in base.parameters():  # a random, non-zero output layer, so outputs depend on everything
        p.data.normal_(0, 0.05)
    return MagicAnimate(base, TINY, temporal=temporal).eval()


def randomise(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.05


# ---- the world ----


def test_world_is_seeded_shaped_and_exact():
    a, b = make_puppets(4, 3), make_puppets(4, 3)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.parts, b.parts) and torch.equal(a.reference, b.reference)
    assert a.frames.shape == (4, 8, 3, 32, 32) and a.parts.shape == (4, 8, 32, 32) and a.uv.shape == (4, 8, 2, 32, 32)
    assert not torch.equal(make_puppets(4, 4).frames, a.frames)
    iuv = a.densepose()
    assert iuv.shape == (4, 8, 3, 32, 32) and iuv.min() >= -1 and iuv.max() <= 1
    assert torch.all(iuv[a.parts[:, :, None].expand_as(iuv) == 0] == -1)
    # every body part is drawn somewhere, and limbs are at least 3 px wide: an upper leg covers ≥ 12 px
    assert set(a.parts.unique().tolist()) == set(range(11))
    assert (a.parts == 7).flatten(2).sum(-1).float().mean() >= 12


def test_same_identity_renders_the_same_colours_in_any_pose():
    b = make_puppets(3, 0, PuppetConfig(frames=5))
    look = appearance(b.identities)
    for i in range(3):
        head = b.frames[i].permute(0, 2, 3, 1)[b.parts[i] == 1]
        assert torch.allclose(head, look["skin"][i].expand_as(head))
        ref_head = b.reference[i].permute(1, 2, 0)[b.reference_parts[i] == 1]
        assert torch.allclose(ref_head, look["skin"][i].expand_as(ref_head))
    # the ground truth is the rendering: re-rendering the poses gives the frames exactly
    img, parts, _ = render_poses(b.poses.flatten(0, 1), b.identities.repeat_interleave(5))
    assert torch.equal(img.view_as(b.frames), b.frames) and torch.equal(parts.view_as(b.parts), b.parts)


def test_splits_hold_out_identities_and_bad_input_is_one_clear_error():
    assert make_puppets(64, 0).identities.max() < TRAIN_IDENTITIES
    assert make_puppets(64, 0, split="eval").identities.min() >= TRAIN_IDENTITIES
    with pytest.raises(ValueError, match="identities"):
        make_puppets(2, 0, identities=[0, NUM_IDENTITIES])
    with pytest.raises(ValueError, match="identities"):
        appearance([-1])
    with pytest.raises(ValueError, match="motion"):
        make_puppets(1, 0, motions=["dance"])
    assert set(make_puppets(40, 1).motions) == set(MOTIONS)


# ---- the mechanism ----


def test_reference_attention_is_softmax_over_concatenated_keys_and_values():
    torch.manual_seed(0)
    attn = Attention(16, heads=2)
    z, y = torch.randn(6, 5, 16), torch.randn(2, 3, 16)  # 2 clips × 3 frames; one reference each
    attn.set_processor(ReferenceAttention("mid", "read"))
    out = attn(z, extra={"bank": {"mid": y}})
    yy = y.repeat_interleave(3, 0)
    q = attn.split_heads(attn.to_q(z))
    k = attn.split_heads(attn.to_k(torch.cat([z, yy], 1)))
    v = attn.split_heads(attn.to_v(torch.cat([z, yy], 1)))
    want = attn.to_out(attn.merge_heads(torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) @ v))
    assert torch.allclose(out, want, atol=1e-5)
    # pooled: the bank becomes its mean token
    pooled = attn(z, extra={"bank": {"mid": y}, "pooled": True})
    dense_of_mean = attn(z, extra={"bank": {"mid": y.mean(1, keepdim=True)}})
    assert torch.allclose(pooled, dense_of_mean, atol=1e-6)
    # no bank: plain self-attention
    attn_plain = copy.deepcopy(attn)
    from bytecourse.diffusion.attention import SDPAProcessor

    attn_plain.set_processor(SDPAProcessor())
    assert torch.allclose(attn(z, extra={}), attn_plain(z), atol=1e-6)


def test_at_initialisation_controlnet_and_temporal_modules_leave_the_base_unchanged():
    m = tiny_model(temporal=True)
    x, iuv = torch.randn(2, 3, 3, 32, 32), torch.randn(2, 3, 3, 32, 32)
    t = torch.tensor([100, 700])
    null = torch.zeros(6, TINY_UNET.caption_length, dtype=torch.long)
    with torch.no_grad():
        base = m.base(x.flatten(0, 1), t.repeat_interleave(3), null).view_as(x)
        assert torch.equal(m.eps(x, t, None, iuv), base)  # zero ControlNet residuals, zero motion output
        with_ref = m.eps(x, t, torch.randn(2, 3, 32, 32), iuv)
    assert not torch.equal(with_ref, base)  # the bank is read from the first step (not zero-gated)


def test_the_bank_is_written_at_mid_and_up_blocks_from_the_clean_reference():
    m = tiny_model()
    ref = torch.randn(2, 3, 32, 32)
    bank = m.bank(ref, torch.tensor([10, 900]))
    assert sorted(bank) == sorted(p for p in m.base.spatial_transformers() if p == "mid" or p.startswith("up"))
    assert all(v.shape[0] == 2 for v in bank.values())
    # the encoder sees the reference itself (not noised): same reference, same level → same bank
    again = m.bank(ref, torch.tensor([10, 900]))
    assert all(torch.equal(bank[k], again[k]) for k in bank)


def test_pose_residuals_only_move_the_output_once_trained():
    m = tiny_model()
    x, iuv = torch.randn(1, 2, 3, 32, 32), torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        a = m.eps(x, torch.tensor([300]), None, iuv)
        randomise(m.controlnet.zero_skips)
        randomise(m.controlnet.hint)
        b = m.eps(x, torch.tensor([300]), None, iuv)
        c = m.eps(x, torch.tensor([300]), None, -iuv)
    assert not torch.allclose(a, b) and not torch.allclose(b, c)


def test_without_temporal_modules_each_frame_is_independent():
    m = tiny_model(temporal=True)
    randomise(m.video.motion, 3)
    x, iuv = torch.randn(1, 4, 3, 32, 32), torch.randn(1, 4, 3, 32, 32)
    ref, t = torch.randn(1, 3, 32, 32), torch.tensor([500])
    y = x.clone()
    y[:, 3] = torch.randn(3, 32, 32)
    with torch.no_grad():
        a, b = m.eps(x, t, ref, iuv, temporal=False), m.eps(y, t, ref, iuv, temporal=False)
        assert torch.allclose(a[:, :3], b[:, :3], atol=1e-5)
        a, b = m.eps(x, t, ref, iuv), m.eps(y, t, ref, iuv)
        assert not torch.allclose(a[:, :3], b[:, :3], atol=1e-5)  # the motion modules mix frames


def test_stage_deltas_round_trip_and_refuse_a_wrong_state():
    m = tiny_model(temporal=True)
    randomise(m.appearance_lora, 5)
    d1, d2 = m.delta_state_dict(1), m.delta_state_dict(2)
    assert d1 and d2 and not set(d1) & set(d2)
    n = tiny_model(temporal=True, seed=0)
    n.load_delta(d1, 1)
    assert all(torch.equal(n.state_dict()[k], v) for k, v in d1.items())
    with pytest.raises(ValueError, match="delta"):
        n.load_delta(d2, 1)


def test_puppet_base_merge_is_exact():
    torch.manual_seed(0)
    pb = PuppetBase(ImageDenoiser(TINY_UNET), 2)
    randomise(pb.lora, 7)
    x, tok = torch.randn(2, 3, 32, 32), torch.zeros(2, TINY_UNET.caption_length, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(
            pb(x, torch.tensor([5, 500]), tok), pb.merged()(x, torch.tensor([5, 500]), tok), atol=1e-5
        )


# ---- long videos: windows, averaging, noise ----


def test_context_windows_cover_every_frame_and_validate():
    for n, w, o in [(48, 8, 2), (48, 8, 0), (10, 4, 1), (5, 8, 2), (17, 8, 3)]:
        ws = context_windows(n, w, o)
        assert sorted({k for win in ws for k in win}) == list(range(n))
        assert all(len(win) == min(w, n) for win in ws)
    assert context_windows(48, 8, 0) == [list(range(s, s + 8)) for s in range(0, 48, 8)]
    closed = context_windows(12, 8, 2, closed_loop=True)
    assert closed[1] == [6, 7, 8, 9, 10, 11, 0, 1]
    with pytest.raises(ValueError, match="overlap"):
        context_windows(48, 4, 4)
    assert seam_pairs(context_windows(48, 8, 0), 48) == [8, 16, 24, 32, 40]
    assert seam_pairs([list(range(8))], 8) == []


def test_window_averaging_is_exact_for_a_frame_local_model():
    """Without temporal modules each frame's ε̂ depends on that frame only, so averaging the windows that contain it
    must give exactly the full clip's ε̂ — whatever the windows."""
    m = tiny_model()
    randomise(m.controlnet.zero_skips, 2)
    x, iuv, ref = torch.randn(1, 11, 3, 32, 32), torch.randn(1, 11, 3, 32, 32), torch.randn(1, 3, 32, 32)
    full = window_eps(m, x, 400, ref, iuv, [list(range(11))], 2.0)
    for w, o in [(4, 1), (4, 3), (5, 0)]:
        got = window_eps(m, x, 400, ref, iuv, context_windows(11, w, o), 2.0)
        assert torch.allclose(got, full, atol=1e-5)


def test_shared_noise_tiles_one_window():
    shared = initial_noise(2, 20, (3, 4, 4), 8, True, 0)
    assert torch.equal(shared[:, 0], shared[:, 8]) and torch.equal(shared[:, 3], shared[:, 19])
    own = initial_noise(2, 20, (3, 4, 4), 8, False, 0)
    assert not torch.equal(own[:, 0], own[:, 8])


def test_animate_runs_and_rejects_bad_input():
    m = tiny_model(temporal=True)
    ref, iuv = torch.zeros(1, 3, 32, 32), torch.zeros(1, 6, 3, 32, 32)
    out = animate(m, ref, iuv, steps=2, window=4, overlap=1)
    assert out.shape == (1, 6, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="same B"):
        animate(m, torch.zeros(2, 3, 32, 32), iuv, steps=2)
    with pytest.raises(ValueError, match="overlap"):
        animate(m, ref, iuv, steps=2, window=4, overlap=4)
    with pytest.raises(ValueError, match="iuv"):
        m.eps(torch.zeros(1, 6, 3, 32, 32), torch.tensor([3]), ref, torch.zeros(1, 5, 3, 32, 32))


# ---- metrics and verdicts ----


def test_metrics_are_exact_on_known_cases():
    b = make_puppets(2, 0, PuppetConfig(frames=4))
    assert torch.allclose(ssim(b.frames[0], b.frames[0]), torch.ones(4))
    assert identity_error(b.frames, b.frames, b.parts) == 0.0
    shifted = (b.frames + 0.1).clamp(0, 1)
    assert identity_error(shifted, b.frames, b.parts) > 0.03


def _table(values: dict[str, dict[str, list[float]]]) -> dict:
    from bytecourse.evaluation import summarise

    rows = []
    for name, metrics in values.items():
        per_seed = [{m: v[i] for m, v in metrics.items()} for i in range(3)]
        rows.append({"setting": name, "metrics": summarise(per_seed)})
    return {"models": {"rows": rows}}


def _metrics(level: float) -> dict[str, list[float]]:
    """Every error ``level`` (± a little per seed), every quality 1 − level."""
    errs = {
        m: [level, level + 0.001, level - 0.001]
        for m in ("l1", "temporal_error", "seam_error", "seam_ratio", "identity_error")
    }
    return errs | {"ssim": [1 - level] * 3, "psnr": [30 * (1 - level)] * 3}


ROWS = (
    "copy the reference",
    "MagicAnimate (full)",
    "without temporal modules",
    "global appearance embedding (no temporal modules)",
    "non-overlapping windows",
    "independent window noise",
    "non-overlapping windows, independent noise",
)


def _with_front(table: dict, dense: float, pooled: float) -> dict:
    from bytecourse.evaluation import summarise
    from bytecourse.magicanimate.evaluate import FRONT_ROWS

    rows = []
    for w in (1.0, 4.0):
        for name, level in zip(FRONT_ROWS, (dense, pooled)):
            m = _metrics(level)
            rows.append(
                {"row": name, "w": w, "metrics": summarise([{k: v[i] for k, v in m.items()} for i in range(3)])}
            )
    return table | {"front": {"rows": rows}}


def test_verdicts_say_reproduced_and_not_reproduced():
    good = _table(
        {r: _metrics(0.1 if r == "MagicAnimate (full)" else 0.3) for r in ROWS}
        | {"without temporal modules": _metrics(0.2), "independent window noise": _metrics(0.2)}
    )
    good = _with_front(good, 0.1, 0.3)
    out = {v["claim"]: v["outcome"] for v in verdicts(good)}
    assert set(out.values()) == {"reproduced"}, out
    bad = _table(
        {r: _metrics(0.3 if r == "MagicAnimate (full)" else 0.1) for r in ROWS}
        | {"without temporal modules": _metrics(0.2), "independent window noise": _metrics(0.2)}
    )
    bad = _with_front(bad, 0.3, 0.1)
    out = {v["claim"]: v["outcome"] for v in verdicts(bad)}
    assert set(out.values()) == {"not reproduced"}, out
    close = _with_front(_table({r: _metrics(0.2) for r in ROWS}), 0.2, 0.2)
    assert {v["outcome"] for v in verdicts(close)} == {"inconclusive"}


def test_training_losses_run_on_tiny_models():
    """Stage 1's and stage 2's losses draw their batches and give a finite loss with gradients on the trained parts."""
    from bytecourse.magicanimate import train as T

    config = T.MagicAnimateTrainConfig(
        appearance=T.RunSpec(steps=1, lr=1e-3, batch=4), temporal=T.RunSpec(steps=1, lr=1e-3, batch=1)
    )
    for run, temporal in (("appearance", False), ("appearance_global", False), ("temporal", True)):
        m = tiny_model(temporal)
        m.requires_grad_(False)
        params = m.stage_parameters(2 if temporal else 1)
        for p in params:
            p.requires_grad_(True)
        loss_fn = T.temporal_loss(config) if temporal else T.appearance_loss(config, run)
        for step in range(3):  # covers the image–video branches of stage 2
            loss = loss_fn(m, step, torch.device("cpu"))
            assert torch.isfinite(loss)
            loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


# ---- the same mechanism on a diffusers UNet2DConditionModel ----


def test_bank_and_controlnet_attach_to_a_diffusers_unet():
    from bytecourse.magicanimate.diffusers_unet import ReferenceBank, attach_reference, pose_controlnet

    from .tiny_models import tiny_diffusers_unet

    unet = tiny_diffusers_unet()
    appearance = copy.deepcopy(unet)
    x, ctx, iuv = torch.randn(4, 3, 8, 8), torch.zeros(4, 2, 16), torch.randn(4, 3, 8, 8)
    t = torch.tensor([10, 10, 500, 500])
    with torch.no_grad():
        before = unet(x, t, ctx).sample
        bank = ReferenceBank()
        readers = attach_reference(unet, "read", bank)
        writers = attach_reference(appearance, "write", bank)
        assert readers and readers == writers and all("attn1" in r for r in readers)
        assert torch.allclose(unet(x, t, ctx).sample, before, atol=1e-5)  # empty bank: unchanged
        control = pose_controlnet(unet, embedding_channels=(8,)).eval()
        down, mid = control(x, t, ctx, controlnet_cond=iuv, return_dict=False)
        with_pose = unet(x, t, ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        assert torch.allclose(with_pose, before, atol=1e-5)  # zero convolutions: unchanged at initialisation
        ref = torch.randn(2, 3, 8, 8)  # two clips of two frames each
        appearance(ref, t[::2], ctx[:2])
        assert sorted(bank.store) == sorted(r.removesuffix(".processor") for r in readers)
        assert not torch.allclose(unet(x, t, ctx).sample, before, atol=1e-5)  # the bank is read


def test_notebook_fallback_trains_every_run_in_memory():
    """Without shipped checkpoints the notebook trains short runs of every stage, in memory."""
    from bytecourse.checkpoints import checkpoint_available, data_dir
    from bytecourse.diffusion.image_model import CHECKPOINT
    from bytecourse.magicanimate.train import quick_models

    if not checkpoint_available(CHECKPOINT):
        pytest.skip("the primer checkpoint is not shipped")
    before = sorted(p.name for p in data_dir().iterdir())
    models = quick_models(steps=1)
    assert sorted(models) == ["global", "temporal"] and models["temporal"].video is not None
    assert sorted(p.name for p in data_dir().iterdir()) == before
