"""Chapter 04 (Boximator): box geometry, the control module's defining properties, training and sampling."""

import pytest
import torch

from bytecourse.boximator.boxes import (
    ID_COLOURS,
    SLOTS,
    BoxConditions,
    draw_outlines,
    empty_conditions,
    interpolate_keyframes,
    motion_path,
    relax,
    request,
    soften,
    to_frame,
)
from bytecourse.boximator.control import BoximatorControl, BoxSelfAttention, FourierEmbedder
from bytecourse.boximator.pipeline import (
    BoximatorModel,
    StageConfig,
    conditions_from_batch,
    control_loss,
    generate_video,
    guided_eps_model,
)
from bytecourse.diffusion.schedule import make_train_scheduler
from bytecourse.diffusion.video import VideoDenoiser, VideoUNetConfig
from bytecourse.oracle import detect_objects, realism
from bytecourse.oracle.segment import classify_pixels
from bytecourse.text import PAD_ID
from bytecourse.worlds.motion import MotionConfig, make_motion
from bytecourse.worlds.render import PALETTE

TINY = VideoUNetConfig(frames=4, image_size=16, widths=(16, 32), heads=2, text_dim=16, text_layers=1)


def tiny_model(seed: int = 0) -> BoximatorModel:
    torch.manual_seed(seed)
    base = VideoDenoiser(TINY).eval().requires_grad_(False)
    for p in base.out.parameters():  # the zero-initialised output layer would hide every difference
        torch.nn.init.normal_(p, std=0.1)
    control = BoximatorControl([16, 32, 32, 16], token_dim=16, hidden=32, heads=2)
    return BoximatorModel(base, control)


def one_box(batch: int = 2, frames: int = 4) -> BoxConditions:
    cond = empty_conditions(batch, frames)
    cond.ids[:, 0] = 0
    cond.active[:, :, 0] = True
    cond.boxes[:, :, 0] = torch.tensor([0.1, 0.2, 0.5, 0.6])
    return cond


def open_gates(control: BoximatorControl, value: float = 0.7) -> None:
    """Make the box layers speak (as training would): a non-zero output projection / gate."""
    g = torch.Generator().manual_seed(1)
    for layer in control.layers:
        if layer.gate == "tanh":
            layer.alpha.data.fill_(value)
        else:
            layer.attn.to_out.weight.data.copy_(torch.randn(layer.attn.to_out.weight.shape, generator=g) * value / 4)


# --- box tokens -------------------------------------------------------------------------------------------
def test_fourier_matches_diffusers_on_boxes():
    from diffusers.models.embeddings import get_fourier_embeds_from_boundingbox

    boxes = torch.rand(3, 5, 4)
    assert torch.equal(FourierEmbedder()(boxes), get_fourier_embeds_from_boundingbox(8, boxes))


def test_token_encoder_shapes_and_null_slots():
    control = BoximatorControl([16], token_dim=16, hidden=32)
    cond = one_box()
    tok, active, boxes = control.tokens(cond, 2, 4)
    assert tok.shape == (8, SLOTS, 16) and active.shape == (8, SLOTS)
    assert active[:, 0].all() and not active[:, 1:].any()  # the masked layer reads slot 0 only
    assert torch.equal(tok[:, 1:], control.encoder.null.expand(8, SLOTS - 1, 16))
    assert not torch.allclose(tok[:, 0], control.encoder.null)
    assert BoximatorControl([16], token_dim=16, hidden=32, masked_slots=False).tokens(cond, 2, 4).active is None
    # 8 scalars × 16 Fourier features = the paper's 128-dim MLP input
    assert control.encoder.mlp[0].in_features == 128


# --- the box layer ----------------------------------------------------------------------------------------
def test_box_layer_is_per_frame_with_token_selection():
    torch.manual_seed(0)
    layer = BoxSelfAttention(16, 8, heads=2, gate="tanh")
    layer.alpha.data.fill_(1.0)
    visual, boxes = torch.randn(4, 16, 16), torch.randn(4, 3, 8)
    out = layer(visual, boxes)
    assert out.shape == visual.shape  # only the visual positions come back
    boxes2 = boxes.clone()
    boxes2[2] += 1.0  # change frame 2's box tokens only
    diff = (layer(visual, boxes2) - out).abs().amax(dim=(1, 2))
    assert diff[2] > 1e-3 and torch.all(diff[[0, 1, 3]] == 0)


def test_box_layer_equals_gligen_attention_half():
    from diffusers.models.attention import GatedSelfAttentionDense

    torch.manual_seed(0)
    ours = BoxSelfAttention(16, 8, heads=2, gate="tanh", cell_position=False)
    ours.alpha.data.fill_(0.3)
    ref = GatedSelfAttentionDense(16, 8, n_heads=2, d_head=8)
    ref.linear.load_state_dict(ours.linear.state_dict())
    ref.norm1.load_state_dict(ours.norm.state_dict())
    for name in ("to_q", "to_k", "to_v"):
        getattr(ref.attn, name).weight.data.copy_(getattr(ours.attn, name).weight)
    ref.attn.to_out[0].load_state_dict(ours.attn.to_out.state_dict())
    ref.alpha_attn.data.fill_(0.3)  # alpha_dense stays 0: Boximator has no gated feed-forward
    visual, boxes = torch.randn(3, 10, 16), torch.randn(3, 4, 8)
    torch.testing.assert_close(ours(visual, boxes), ref(visual, boxes), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("gate", ["zero_out", "tanh"])
def test_both_gates_start_silent_but_only_zero_out_learns_at_once(gate):
    torch.manual_seed(0)
    layer = BoxSelfAttention(16, 8, heads=2, gate=gate)
    visual, boxes = torch.randn(4, 16, 16), torch.randn(4, 3, 8)
    out = layer(visual, boxes)
    assert torch.equal(out, visual)
    out.pow(2).sum().backward()  # any loss that depends on the output
    qkv = layer.attn.to_q.weight.grad.abs().max()
    if gate == "tanh":  # the deadlock: the attention weights get nothing while tanh(α) = 0
        assert qkv == 0
    else:
        assert layer.attn.to_out.weight.grad.abs().max() > 0


def test_zero_gate_leaves_the_frozen_model_unchanged():
    model = tiny_model()
    x, t, tok = torch.randn(2, 4, 3, 16, 16), torch.tensor([10, 500]), torch.randint(1, 20, (2, 24))
    model.control.detach()
    ref = model.base(x, t, tok)
    model.control.attach(model.base)
    assert torch.equal(model(x, t, tok, model.box_tokens(one_box(), 2, 4)), ref)
    open_gates(model.control)
    assert not torch.allclose(model(x, t, tok, model.box_tokens(one_box(), 2, 4)), ref)
    model.control.detach()
    assert torch.equal(model.base(x, t, tok), ref)
    assert not any(k.startswith("block0.post_spatial") for k in model.base.state_dict())


def test_attaches_to_diffusers_unet3d_through_processors():
    from .tiny_models import tiny_diffusers_unet3d

    unet = tiny_diffusers_unet3d()
    control = BoximatorControl.for_diffusers(unet, token_dim=16, hidden=16, heads=2)
    assert control.dims == [16, 16, 16, 32]  # spatial blocks only: no temporal / transformer_in block
    x, ehs = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = unet(x, 10, ehs).sample
        control.attach_diffusers(unet)
        with control.conditioned(control.tokens(one_box(), 2, 4)):
            assert torch.equal(unet(x, 10, ehs).sample, ref)
            open_gates(control)
            moved = unet(x, 10, ehs).sample
        assert (moved - ref).abs().max() > 1e-4
        control.detach()
        assert torch.equal(unet(x, 10, ehs).sample, ref)


# --- geometry ---------------------------------------------------------------------------------------------
def test_outside_box_becomes_a_border_line():
    full = torch.tensor([[-0.4, 0.3, -0.1, 0.5], [0.9, 0.2, 1.3, 0.4]])
    lines = to_frame(full)
    assert torch.equal(lines[0], torch.tensor([0.0, 0.3, 0.0, 0.5]))  # a vertical line on the left border
    assert torch.equal(lines[1], torch.tensor([0.9, 0.2, 1.0, 0.4]))  # cut at the right border
    cond = one_box(1, 4)
    cond.boxes[0, :, 0] = lines[0]
    cond.validate(4)  # valid input


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda c: c.boxes.__setitem__((0, 0, 0, 0), float("nan")), "finite"),
        (lambda c: c.boxes.__setitem__((0, 0, 0, 2), 1.2), r"\[0, 1\]"),
        (lambda c: c.boxes.__setitem__((0, 0, 0, 2), 0.05), "x1 >= x0"),
    ],
)
def test_bad_boxes_raise(bad, message):
    cond = one_box()
    bad(cond)
    with pytest.raises(ValueError, match=message):
        cond.validate(4)


def test_more_objects_than_slots_and_empty_trajectories_raise():
    with pytest.raises(ValueError, match="at most 8"):
        BoxConditions(
            torch.zeros(1, 4, 9, 4), torch.arange(9)[None], torch.ones(1, 4, 9), torch.ones(1, 4, 9, dtype=torch.bool)
        ).validate()
    with pytest.raises(ValueError, match="at most 8"):
        request([torch.zeros(4, 4)] * 9, [torch.ones(4, dtype=torch.bool)] * 9)
    with pytest.raises(ValueError, match="empty trajectory"):
        interpolate_keyframes({}, 8)
    with pytest.raises(ValueError, match="empty trajectory"):
        motion_path(torch.tensor([0.1, 0.1, 0.3, 0.3]), torch.zeros(0, 2), 8)
    with pytest.raises(ValueError, match="empty trajectory"):
        request([], [])


def test_interpolation_relaxation_and_motion_path():
    a, b = torch.tensor([0.0, 0.0, 0.2, 0.2]), torch.tensor([0.6, 0.4, 0.8, 0.6])
    traj, drawn = interpolate_keyframes({0: a, 4: b}, 5)
    torch.testing.assert_close(traj[2], (a + b) / 2)
    assert drawn.tolist() == [True, False, False, False, True]
    cond = request([traj], [drawn], between="soft")
    assert cond.hard[0, :, 0].tolist() == [1, 0, 0, 0, 1] and cond.active[0, :, 0].all()
    torch.testing.assert_close(cond.boxes[0, 2, 0], relax(traj[2]))
    torch.testing.assert_close(request([traj], [drawn], margin=0.05).boxes[0, 2, 0], relax(traj[2], 0.05))
    hard = request([traj], [drawn], between="hard")
    assert torch.equal(hard.boxes[0, :, 0], traj) and hard.hard[0, :, 0].eq(1).all() and hard.active[0, :, 0].all()
    none = request([traj], [drawn], between="none")  # the paper's ablation: only the drawn frames carry a box
    assert none.active[0, :, 0].tolist() == drawn.tolist()
    with pytest.raises(ValueError, match="between must be one of"):
        request([traj], [drawn], between="relaxed")
    path, drawn = motion_path(a, torch.tensor([[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]), 5)
    centres = (path[:, :2] + path[:, 2:]) / 2
    steps = (centres[1:] - centres[:-1]).abs().sum(-1)
    torch.testing.assert_close(steps, torch.full((4,), 0.2))  # constant speed along the polyline
    torch.testing.assert_close(centres[-1], torch.tensor([0.5, 0.5]))
    assert drawn.tolist() == [True, False, False, False, True]


def test_soft_boxes_contain_the_hard_box_with_beta_margins():
    g = torch.Generator().manual_seed(0)
    hard = torch.tensor([0.4, 0.4, 0.6, 0.6]).expand(20000, 4)
    soft = soften(hard, g)
    assert ((soft[:, :2] <= hard[:, :2]) & (soft[:, 2:] >= hard[:, 2:])).all()
    margin = hard[:, 0] - soft[:, 0]
    assert abs(float(margin[margin < 0.4].mean()) - 1 / 9) < 0.01  # Beta(1, 8) mean, where unclamped


def test_id_colours_are_not_objects_or_background():
    dist = (ID_COLOURS[:, None] - PALETTE[None]).norm(dim=-1)
    assert dist.min() > 0.3
    colour, background = classify_pixels(ID_COLOURS[:, :, None, None].expand(-1, 3, 2, 2))
    assert (colour == -1).all() and not background.any()  # neither an object colour nor background to the oracle


def test_self_tracking_outlines_are_invisible_to_the_object_detector():
    batch = make_motion(6, 3, MotionConfig(max_objects=2))
    ids = torch.where(batch.present, torch.arange(2), -1)
    objects = batch.instance_masks.any(2)
    drawn = draw_outlines(batch.videos, batch.boxes, batch.visible, ids, keep=objects)
    changed = (drawn != batch.videos).any(2)  # (B,T,H,W)
    assert changed.any() and not (changed & objects).any()  # outlines pass behind objects
    plain = detect_objects(batch.videos.flatten(0, 1))
    boxed = detect_objects(drawn.flatten(0, 1))
    assert [[o.box for o in d] for d in plain] == [[o.box for o in d] for d in boxed]
    assert float(realism(drawn.flatten(0, 1)).mean()) < 1.0  # but realism sees the outline


# --- training and sampling --------------------------------------------------------------------------------
def test_control_loss_trains_only_the_control_module():
    model = tiny_model()
    open_gates(model.control, 0.3)
    batch = make_motion(2, 0, MotionConfig(frames=4, size=16, max_objects=2, radius_range=(0.15, 0.25)))
    stage = StageConfig("s1", 1, 1e-3, p_soft=0.5, self_tracking=True)
    loss = control_loss(model, batch, stage, make_train_scheduler(), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in model.base.parameters())
    grads = [p.grad for p in model.control.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.control.layers[0].attn.to_out.weight.grad.abs().max() > 0


def test_conditions_from_batch_follow_the_stage():
    batch = make_motion(256, 1, MotionConfig(max_objects=2))
    g = torch.Generator().manual_seed(0)
    hard = conditions_from_batch(batch, p_soft=0.0, p_no_boxes=0.0, generator=g)
    assert torch.equal(hard.boxes[:, :, :2], to_frame(batch.boxes_full)) and (hard.hard == 1).all()
    assert torch.equal(hard.active[:, :, :2], batch.present[:, None].expand(-1, 8, -1))
    mixed = conditions_from_batch(batch, p_soft=0.8, p_no_boxes=0.25, generator=g)
    mixed.validate(8)
    soft_rate = 1 - float(mixed.hard[:, :, :2][batch.present[:, None].expand(-1, 8, -1)].mean())
    assert 0.7 < soft_rate < 0.9
    no_box_rate = float((~mixed.active.any(dim=(1, 2))).float().mean())
    assert 0.15 < no_box_rate < 0.35
    # ID colours: random per clip, distinct within a clip, none for a clip without boxes (nothing to outline)
    boxed = mixed.active.any(dim=1)  # (B, N)
    assert torch.equal(mixed.ids >= 0, boxed)
    two = boxed[:, :2].all(dim=1)
    assert (mixed.ids[two, 0] != mixed.ids[two, 1]).all()
    assert len(set(mixed.ids[boxed[:, 0], 0].tolist())) == SLOTS  # not the slot index
    fixed = conditions_from_batch(batch, 0.0, 0.0, torch.Generator().manual_seed(0), random_ids=False)
    assert torch.equal(fixed.ids[:, :2], torch.where(batch.present, torch.arange(2), -1))


def test_first_frame_is_kept_and_null_boxes_match_the_base():
    model = tiny_model()
    tok = torch.randint(1, 20, (2, 24))
    frame0 = torch.rand(2, 3, 16, 16)
    out = generate_video(model, tok, one_box(), first_frame=frame0, steps=3, box_guidance_scale=2.0)
    assert out.shape == (2, 4, 3, 16, 16)
    torch.testing.assert_close(out[:, 0], frame0.clamp(0, 1), atol=1e-6, rtol=0)
    # at initialisation (gates closed) the controlled model samples exactly what the base samples
    a = generate_video(model, tok, one_box(), steps=3, box_guidance_scale=3.0)
    model.control.detach()
    b = generate_video(model.base, tok, None, steps=3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="BoximatorModel"):
        generate_video(model.base, tok, one_box(), steps=2)


def test_box_cfg_formula():
    model = tiny_model()
    open_gates(model.control)
    x, t, tok = torch.randn(2, 4, 3, 16, 16), torch.tensor([300, 300]), torch.randint(1, 20, (2, 24))
    boxes, null = model.box_tokens(one_box(), 2, 4), model.control.null_tokens(8)
    e_box, e_null = model(x, t, tok, boxes), model(x, t, tok, null)
    e_unc = model(x, t, torch.full_like(tok, PAD_ID), null)
    got = guided_eps_model(model, boxes, null, box_guidance_scale=3.0, guidance_scale=2.0)(x, t, tok)
    torch.testing.assert_close(got, e_null + 3.0 * (e_box - e_null) + (e_null - e_unc), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(guided_eps_model(model, boxes, null, 1.0, 1.0)(x, t, tok), e_box, atol=1e-6, rtol=0)
    # one formula at every scale: w_box = 1 with caption guidance is the limit of its neighbours, not plain CFG
    at_one = guided_eps_model(model, boxes, null, 1.0, 2.0)(x, t, tok)
    torch.testing.assert_close(at_one, e_box + (e_null - e_unc), atol=1e-5, rtol=1e-4)
    near = guided_eps_model(model, boxes, null, 1.0 + 1e-3, 2.0)(x, t, tok)
    assert float((near - at_one).detach().abs().max()) < 1e-3 * float((e_box - e_null).detach().abs().max()) + 1e-5


# --- the widget's pure functions and Python-side callbacks -------------------------------------------------
def test_plan_request_modes():
    from bytecourse.boximator.editor import plan_request

    plan = plan_request("a red circle moves right and a blue square moves down", 1, (0.2, 0.2), (0.8, 0.8), 0.2)
    assert plan["object_name"] == "blue square"
    assert plan["cond"].active[0, :, 1].all() and not plan["cond"].active[0, :, 0].any()
    assert plan["cond"].hard[0, :, 1].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    path = plan_request(
        "a red circle moves right", 0, (0.2, 0.2), (0.8, 0.2), 0.2, waypoints=[(0.5, 0.8)], mode="motion path"
    )
    centres = (path["hard"][:, :2] + path["hard"][:, 2:]) / 2
    assert float(centres[:, 1].max()) > 0.6  # the path goes through the waypoint's side
    # several waypoints, as the editor's text field writes them: key frames on evenly spaced middle frames
    keys = plan_request("a red circle moves right", 0, (0.2, 0.2), (0.8, 0.2), 0.2, "0.5,0.8; 0.8,0.8", end_size=0.4)
    assert keys["drawn"].nonzero().flatten().tolist() == [0, 2, 5, 7]
    centres = (keys["hard"][:, :2] + keys["hard"][:, 2:]) / 2
    torch.testing.assert_close(centres[[2, 5]], torch.tensor([[0.5, 0.8], [0.8, 0.8]]))
    torch.testing.assert_close(keys["hard"][-1], torch.tensor([0.6, 0.0, 1.0, 0.4]))  # end size 0.4
    none = plan_request("a red circle moves right", 0, (0.2, 0.2), (0.8, 0.2), 0.2, between="none")
    assert none["cond"].active[0, :, 0].tolist() == none["drawn"].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    wide, narrow = (plan_request("a red circle moves right", 0, (0.2, 0.5), (0.8, 0.5), margin=m) for m in (0.1, 0.02))
    assert float((wide["boxes"][3] - narrow["boxes"][3]).abs().max()) == pytest.approx(0.08, abs=1e-5)
    with pytest.raises(ValueError, match="between"):
        plan_request("a red circle moves right", 0, (0.2, 0.2), (0.8, 0.2), between="soft boxes")
    with pytest.raises(ValueError, match="object"):
        plan_request("a red circle moves right", 3, (0.2, 0.2), (0.8, 0.2))
    with pytest.raises(ValueError, match="waypoint"):
        plan_request("a red circle moves right", 0, (0.2, 0.2), (0.8, 0.2), 0.2, "0.5;0.2")


def test_editor_callbacks_without_a_browser():
    import matplotlib

    matplotlib.use("Agg")
    from bytecourse.boximator.editor import DEFAULT_REQUEST, box_trajectory_editor

    model = tiny_model()
    open_gates(model.control, 0.2)
    editor = box_trajectory_editor(model)
    editor.preview.refresh()
    first = editor.plan["hard"].clone()
    centre = lambda b: ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)  # noqa: E731
    assert torch.allclose(torch.tensor(centre(first[0])), torch.tensor(DEFAULT_REQUEST["start"]), atol=0.01)
    editor.controls["end_x"].value = 0.3  # live preview follows the slider
    assert editor.preview.calls == 2 and not torch.equal(editor.plan["hard"], first)
    editor.controls["caption"].value = "a red square moves right and a blue circle moves down"
    editor.controls["obj"].value = 1
    assert editor.plan["object_name"] == "blue circle"
    editor.gen_controls["box_guidance_scale"].value = 2.0  # generation waits for the button
    assert editor.generator.calls == 0
    editor.generator.button.click()
    assert editor.generator.calls == 1 and editor.result["iou"].shape == (4,)
    assert 0.0 <= editor.result["mean_iou"] <= 1.0
    assert editor.canvas.frame is not None  # the canvas now shows the generated first frame


def test_editor_canvas_drags_boxes_and_clicks_waypoints():
    import matplotlib

    matplotlib.use("Agg")
    from bytecourse.boximator.editor import CANVAS_PX, box_trajectory_editor

    editor = box_trajectory_editor(tiny_model())
    editor.preview.refresh()
    c, px = editor.controls, lambda v: v * CANVAS_PX  # noqa: E731
    calls = editor.preview.calls
    # drag inside the end box: it moves (same size), one recomputation for the three controls it writes
    editor.canvas.tool.value = "end box"
    x, y = px(c["end_x"].value), px(c["end_y"].value)
    editor.canvas.mouse_down(x, y)
    editor.canvas.mouse_move(x - px(0.2), y - px(0.1))
    editor.canvas.mouse_up(x - px(0.3), y - px(0.2))
    assert (c["end_x"].value, c["end_y"].value, c["end_size"].value) == pytest.approx((0.53, 0.3, 0.3))
    assert editor.preview.calls == calls + 1
    hard = editor.plan["hard"][-1]
    assert ((hard[0] + hard[2]) / 2, (hard[1] + hard[3]) / 2) == pytest.approx((0.53, 0.3), abs=1e-5)
    # drag outside the start box: a new box, corner to corner
    editor.canvas.tool.value = "start box"
    editor.canvas.mouse_down(px(0.5), px(0.6))
    editor.canvas.mouse_up(px(0.9), px(0.9))
    assert (c["start_x"].value, c["start_y"].value, c["size"].value) == pytest.approx((0.7, 0.75, 0.35))
    # waypoints: several clicks, in order, into the text field the plan reads (4 frames hold 2; the oldest goes)
    editor.canvas.tool.value = "waypoints"
    for point in ((0.2, 0.2), (0.5, 0.1), (0.8, 0.2)):
        editor.canvas.mouse_down(px(point[0]), px(point[1]))
    assert c["waypoints"].value == "0.50,0.10; 0.80,0.20"
    assert editor.plan["waypoints"] == [(0.5, 0.1), (0.8, 0.2)]
    assert "waypoints 0.50,0.10; 0.80,0.20" in editor.request_line.value
    editor.canvas.clear.click()
    assert editor.plan["waypoints"] == []


def test_variant_stages_run_in_order_and_resume(tmp_path, monkeypatch):
    from bytecourse.boximator import train as chapter
    from bytecourse.diffusion.videobase import VideoBaseConfig

    cfg = VideoBaseConfig(unet=TINY)

    def tiny_base(device="cpu"):
        torch.manual_seed(0)
        return VideoDenoiser(TINY).to(device).eval().requires_grad_(False), cfg

    monkeypatch.setattr(chapter, "load_base", lambda device="cpu": (tiny_base(device)[0], cfg.world()))
    monkeypatch.setattr(chapter, "CONTROL", dict(token_dim=16, hidden=16, heads=2))
    monkeypatch.setattr(chapter, "BATCH", 2)
    stages = chapter.variant_stages("no_self_tracking", total_steps=9)
    assert [s.steps for s in stages] == [4, 3, 2] and not any(s.self_tracking for s in stages)
    with pytest.raises(ValueError, match="variant"):
        chapter.variant_stages("bogus")
    # stop after the first stage, then resume: the second stage starts from the first one's weights
    _, first = chapter.train_variant(
        "full", total_steps=9, only_stage=1, run_root=tmp_path, ship=False, progress=False, device="cpu"
    )
    assert [s["steps"] for s in first["stages"]] == [4] and not first["complete"]
    model, done = chapter.train_variant(
        "full", total_steps=9, run_root=tmp_path, ship=False, progress=False, device="cpu", resume=True
    )
    assert done["complete"] and [s["steps"] for s in done["stages"]] == [4, 3, 2]
    assert all(p.requires_grad is False for p in model.base.parameters())


def test_protocol_scores_the_real_clips_near_the_ceiling(monkeypatch):
    from bytecourse.boximator import evaluate as chapter

    batch = make_motion(8, 5, MotionConfig(max_objects=2))
    cond, paths = chapter.requested_boxes(batch)
    cond.validate(8)
    assert cond.hard[:, 1:-1][cond.active[:, 1:-1]].eq(0).all()  # interpolated frames are soft
    m = chapter.alignment_metrics(batch.videos, batch, paths, [0, 7])
    assert (
        m["AP50"] == 1.0 and m["mIoU_key"] > 0.8 and m["realism"] > 0.95
    )  # occluded/cut shapes are not all well-formed
    assert m["mIoU_all"] <= m["mIoU_key"] + 1e-6  # curved/bouncing paths leave the linear request in between
    shifted = chapter.alignment_metrics(batch.videos.roll(8, dims=-1), batch, paths, [0, 7])
    assert shifted["AP50"] < 0.5


# --- issue 14: the fixes that make boxes bind -------------------------------------------------------------------
def test_masked_slots_ignore_inactive_slots_and_keep_one_sink():
    torch.manual_seed(0)
    layer = BoxSelfAttention(16, 8, heads=2)
    open_layer = lambda: layer.attn.to_out.weight.data.normal_(0, 0.3)  # noqa: E731
    open_layer()
    visual, boxes, sink = torch.randn(2, 16, 16), torch.randn(2, 3, 8), torch.randn(8)
    active = torch.tensor([[True, False, False], [False, False, False]])
    out = layer(visual, boxes, active, sink)
    changed = boxes.clone()
    changed[:, 1:] += 5.0  # only inactive slots change
    torch.testing.assert_close(layer(visual, changed, active, sink), out)
    assert not torch.allclose(layer(visual, changed), layer(visual, boxes))  # unmasked (paper's layer): they count
    # with no active slot, the visual tokens attend to themselves and the sink only
    probs = layer.attention_probs(visual, boxes, active, sink)
    assert probs.shape == (2, 2, 16, 16 + 1 + 3)
    assert torch.all(probs[1, :, :, 17:] == 0) and torch.all(probs[0, :, :, 18:] == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 16))
    # the probabilities are the ones the layer uses: softmax(qkᵀ/√d) v through to_out
    joint, mask, n = layer._joint(visual, boxes, active, sink)
    v = layer.attn.split_heads(layer.attn.to_v(joint))
    manual = visual + layer.attn.to_out(layer.attn.merge_heads(probs @ v))
    torch.testing.assert_close(manual, out, atol=1e-5, rtol=1e-5)


def test_control_loss_outlines_only_boxed_clips_and_f0_is_clean(monkeypatch):
    from bytecourse.boximator import pipeline

    model = tiny_model()
    seen = {}
    forward = BoximatorModel.forward

    def spy(self, x, t, tokens, box_tokens=None):
        seen["xt"], seen["t"] = x.detach().clone(), t
        return forward(self, x, t, tokens, box_tokens)

    drawn = {}
    real_draw = pipeline.draw_outlines

    def spy_draw(videos, boxes, visible, ids, keep=None):
        drawn["ids"] = ids.clone()
        return real_draw(videos, boxes, visible, ids, keep)

    monkeypatch.setattr(BoximatorModel, "forward", spy)
    monkeypatch.setattr(pipeline, "draw_outlines", spy_draw)
    batch = make_motion(16, 3, MotionConfig(frames=4, size=16, max_objects=2, radius_range=(0.15, 0.25)))
    stage = StageConfig("s1", 1, 1e-3, p_soft=0.0, self_tracking=True)
    control_loss(model, batch, stage, make_train_scheduler(), torch.Generator().manual_seed(0), p_first_frame=1.0)
    # every clip is F0 here: frame 0 of the model's input is the clean frame, without outlines
    torch.testing.assert_close(seen["xt"][:, 0], batch.videos[:, 0] * 2 - 1)
    # clips drawn without boxes get no outline (ID −1); boxed objects get their clip's random ID colour
    cond = conditions_from_batch(batch, 0.0, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(drawn["ids"], cond.ids[:, :2])
    # the probes' re-enactment of the first version's bugs: outlines on every object and on the given frame
    control_loss(
        model,
        batch,
        stage,
        make_train_scheduler(),
        torch.Generator().manual_seed(0),
        p_first_frame=1.0,
        outline_unboxed=True,
        outline_first_frame=True,
    )
    assert torch.equal(drawn["ids"] >= 0, batch.present) and (cond.ids[:, :2] < 0).any()
    outlined = real_draw(batch.videos, batch.boxes, batch.visible, drawn["ids"], keep=batch.instance_masks.any(2))
    torch.testing.assert_close(seen["xt"][:, 0], outlined[:, 0] * 2 - 1)


def test_high_noise_levels_and_level_weights():
    from bytecourse.boximator.pipeline import sample_levels

    scheduler = make_train_scheduler()
    t = sample_levels(20_000, scheduler, (0.5, 600), torch.Generator().manual_seed(0))
    share = float((t >= 600).float().mean())
    assert abs(share - (0.5 + 0.5 * 0.4)) < 0.02  # half from [600, 1000), half uniform
    assert torch.equal(
        sample_levels(8, scheduler, (0.0, 0), torch.Generator().manual_seed(1)),
        torch.randint(0, 1000, (8,), generator=torch.Generator().manual_seed(1)),
    )


def test_inference_soft_boxes_switch_reaches_the_tokens():
    from bytecourse.boximator import evaluate as chapter

    batch = make_motion(4, 5, MotionConfig(max_objects=2))
    soft, _ = chapter.requested_boxes(batch, "soft")
    hard, _ = chapter.requested_boxes(batch, "hard")
    none, _ = chapter.requested_boxes(batch, "none")
    assert not torch.equal(soft.boxes, hard.boxes) and not torch.equal(soft.hard, hard.hard)
    assert none.active[:, 1:-1].sum() == 0 and torch.equal(none.active[:, [0, -1]], soft.active[:, [0, -1]])
    control = BoximatorControl([16], token_dim=16, hidden=32)
    toks = {k: control.tokens(c, 4, 8) for k, c in (("soft", soft), ("hard", hard), ("none", none))}
    assert not torch.allclose(toks["soft"].tokens, toks["hard"].tokens)
    assert not toks["none"].active.view(4, 8, -1)[:, 1:-1].any()
    # the ablation rows ask for what their names say, and rows that share a generation share a cache key
    rows = {r["name"]: r for r in chapter.ablation_settings(4.0, 0.05)}
    assert rows["Without inference soft boxes, Box"]["between"] == "none"
    assert rows["Full model, Box"]["between"] == "soft" and rows["Full model, Box"]["margin"] == 0.05
    t1 = {r["name"]: r for r in chapter.table1_settings(4.0, 0.05)}
    key = lambda s: chapter._key(s, 0, 16)  # noqa: E731
    assert key(t1["+ Boximator, Box"]) == key(rows["Full model, Box"])
    assert key(t1["+ Boximator, Box"]) != key(rows["Without inference soft boxes, Box"])


def _table(rows: dict) -> dict:
    from bytecourse.evaluation import summarise

    return {"rows": [{"setting": k, "config": {}, "metrics": summarise(v)} for k, v in rows.items()]}


def test_verdicts_say_not_reproduced_when_boxes_are_ignored():
    from bytecourse.boximator import evaluate as chapter

    same = [{"AP50": 0.01, "mIoU_all": 0.05, "realism": 0.9}] * 3
    good = [{"AP50": a, "mIoU_all": 0.6, "realism": 0.9} for a in (0.7, 0.75, 0.8)]
    ignored = {
        "table1": _table(
            {n: same for n in ("Base video model", "+ Boximator", "+ Boximator, Box", "+ Boximator, F0+Box")}
        ),
        "ablation": _table({"Full model, Box": same, "Full model, F0+Box": same}),
        "no_box_drift": _table({"+ Boximator vs base, no boxes": [{"mean_abs_pixel_diff": 0.05}] * 3}),
        "widget_default": _table(
            {"+ Boximator, Box": [{"mean_iou": 0.1}] * 3, "Base video model": [{"mean_iou": 0.1}] * 3}
        ),
    }
    lines = chapter.verdicts(ignored)
    assert lines[0].startswith("Boxes control where objects go") and lines[0].endswith("NOT reproduced")
    assert any("not trained on this base" in line for line in lines)
    assert sum(line.endswith("NOT reproduced") for line in lines) >= 5
    works = dict(
        ignored,
        table1=_table(
            {"Base video model": same, "+ Boximator": same, "+ Boximator, Box": good, "+ Boximator, F0+Box": good}
        ),
    )
    assert chapter.verdicts(works)[0].endswith(": reproduced")


@pytest.mark.slow
def test_binding_boxes_put_a_blob_where_they_say():
    """The shipped control class binds boxes on a frozen base: a tiny inflated model learns to draw one red blob
    (800 steps), is frozen, and a BoximatorControl attached through its ``post_spatial`` slots learns for 500 steps
    to put the blob where the box says. By the oracle, the blob's box has IoU ≥ 0.5 with the requested one, and
    ≥ 0.3 less when each clip is given another clip's boxes (the test fails when boxes are ignored)."""
    import dataclasses

    from bytecourse.diffusion import ImageDenoiser, UNetConfig
    from bytecourse.diffusion.inflate import InflatedVideoDenoiser, InflationConfig
    from bytecourse.diffusion.sampling import to_model_space
    from bytecourse.diffusion.training import diffusion_loss
    from bytecourse.oracle import box_iou

    world = MotionConfig(frames=2, size=16, max_objects=1, radius_range=(0.22, 0.28), kinds=("linear",))

    def blobs(n: int, seed: int):  # Motion clips with every object painted red: one kind of blob
        clips = make_motion(n, seed, world)
        on = clips.instance_masks.any(2)[:, :, None]
        return dataclasses.replace(clips, videos=torch.where(on, PALETTE[0].view(1, 1, 3, 1, 1), clips.videos))

    torch.manual_seed(0)
    image = ImageDenoiser(
        UNetConfig(image_size=16, widths=(32, 32, 32), text_dim=32, text_layers=1, caption_length=12, heads=2)
    )
    base = InflatedVideoDenoiser(image, InflationConfig(frames=2, motion_points=("mid",), heads=2, caption_layers=1))
    scheduler = make_train_scheduler()
    opt = torch.optim.AdamW(base.parameters(), 2e-3)
    for step in range(800):
        clips = blobs(16, step)
        g = torch.Generator().manual_seed(step)
        loss = diffusion_loss(base, to_model_space(clips.videos), clips.tokens, scheduler, g, weighting="v")
        opt.zero_grad()
        loss.backward()
        opt.step()
    base.eval().requires_grad_(False)
    model = BoximatorModel(base, BoximatorControl.for_model(base, token_dim=32, hidden=64, heads=2, box_bias=4.0))
    assert [len(s) for s in base.post_spatial_slots().values()] == [1] * len(model.control.layers)
    opt = torch.optim.AdamW(model.control.parameters(), 2e-3)
    stage = StageConfig("bind", 500, 2e-3, p_soft=0.0, self_tracking=False, high_noise=(0.5, 600), weighting="v")
    for step in range(500):
        g = torch.Generator().manual_seed(step)
        loss = control_loss(model, blobs(16, 10_000 + step), stage, scheduler, g, p_first_frame=0.0, p_no_boxes=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    clips = blobs(32, 99_999)
    cond = conditions_from_batch(clips, 0.0, 0.0, torch.Generator().manual_seed(0))
    want = to_frame(clips.boxes_full)[:, :, 0].flatten(0, 1)

    def blob_iou(c: BoxConditions) -> float:
        video = generate_video(model, clips.tokens, c, steps=20, guidance_scale=1.0, box_guidance_scale=3.0, seed=1)
        ious = []
        for i, found in enumerate(detect_objects(video.flatten(0, 1))):
            red = [o for o in found if o.colour == 0]  # the largest red component
            ious.append(float(box_iou(torch.tensor(red[0].box)[None], want[i][None])[0, 0]) if red else 0.0)
        return sum(ious) / len(ious)

    bound, shuffled = blob_iou(cond), blob_iou(cond.select(torch.roll(torch.arange(32), 16)))
    assert bound >= 0.5, bound
    assert bound - shuffled >= 0.3, (bound, shuffled)


def test_box_overlap_bias_points_tokens_inside_a_box_at_its_slot():
    from bytecourse.boximator.control import cell_overlap

    overlap = cell_overlap(16, torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.125, 0.125, 0.375, 0.375]]))  # a 4×4 grid
    assert overlap.shape == (16, 2)
    assert overlap[:, 0].view(4, 4)[:2, :2].eq(1).all() and overlap[:, 0].sum() == 4  # whole cells
    torch.testing.assert_close(overlap[:, 1].view(4, 4)[:2, :2], torch.full((2, 2), 0.25))  # quarter cells
    torch.manual_seed(0)
    layer = BoxSelfAttention(16, 8, heads=2, box_bias=4.0)
    assert "box_bias" not in dict(layer.named_parameters())  # a fixed prior; q·k learns on top of it
    visual, tokens = torch.randn(1, 16, 16), torch.randn(1, 1, 8)
    box = torch.tensor([[[0.0, 0.0, 0.5, 0.5]]])
    on_slot = layer.attention_probs(visual, tokens, torch.ones(1, 1, dtype=torch.bool), torch.randn(8), box)
    on_slot = on_slot.mean(1)[0, :, -1].view(4, 4)
    assert on_slot[:2, :2].min() > 5 * on_slot.flatten()[overlap[:, 0] == 0].max()
    plain = BoxSelfAttention(16, 8, heads=2)
    plain.load_state_dict(layer.state_dict(), strict=False)
    flat = plain.attention_probs(visual, tokens, torch.ones(1, 1, dtype=torch.bool), torch.randn(8), box)
    assert flat.mean(1)[0, :, -1].max() < on_slot.max()


def test_fix_probes_leave_out_one_fix_at_a_time():
    from bytecourse.boximator import probe

    recipes = dict((label, w) for label, w in probe.PROBES)
    assert probe.PROBES[0][1] == () and {w for w in recipes.values() if len(w) == 1} >= {(f,) for f in probe.FIXES}
    assert set(recipes["first version (none of the six)"]) == set(probe.FIXES)
    # the paper's ablation in the probes' budget, with and without our bias
    assert {("self_tracking",), ("self_tracking", "box_bias")} <= set(recipes.values())
    assert probe.probe_stage(()).self_tracking and not probe.probe_stage(("self_tracking",)).self_tracking
    assert probe.probe_stage(("high_noise",)).weighting == "eps" and probe.probe_stage(()).steps == probe.PROBE_STEPS
    with pytest.raises(ValueError, match="unknown fixes"):
        probe.probe_model(("colour",))
    shipped, bare = probe.probe_model(()), probe.probe_model(("masked_slots", "box_bias"))
    assert shipped.control.masked_slots and all(layer.box_bias is not None for layer in shipped.control.layers)
    assert not bare.control.masked_slots and all(layer.box_bias is None for layer in bare.control.layers)
    # the same initialisation for every probe: the recipes differ only in what they leave out
    a, b = probe.probe_model(("random_ids",)), probe.probe_model(("high_noise",))
    assert all(torch.equal(p, q) for p, q in zip(a.control.parameters(), b.control.parameters()))


def test_self_tracking_probe_lines_read_the_fixes_table():
    from bytecourse.boximator.probe import FIXES, self_tracking_lines

    def row(name, ap, inside):
        metrics = {"AP50": ap, "attention_inside": inside, "attention_outside": 0.1}
        return {"setting": name, "metrics": {k: {"mean": v, "min": v, "max": v} for k, v in metrics.items()}}

    table = {
        "steps": 300,
        "clips_per_seed": 8,
        "rows": [
            row("shipped recipe", 0.2, 0.5),
            row("without self-tracking (the paper's ablation)", 0.1, 0.4),
            row(f"without {FIXES['box_bias']}", 0.0, 0.1),
            row("without self-tracking and without the bias", 0.05, 0.1),
        ],
    }
    with_bias, without_bias = self_tracking_lines(table)
    assert "0.200 with vs 0.100 without (higher with it)" in with_bias and "the slots bind in both" in with_bias
    assert "0.000 with vs 0.050 without (lower with it)" in without_bias and "no slot binds in either" in without_bias
    assert self_tracking_lines({"rows": table["rows"][:1], "steps": 300, "clips_per_seed": 8}) == []
