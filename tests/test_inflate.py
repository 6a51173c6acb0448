"""The inflated video model (primer + motion modules) and the motion oracle."""

import pytest
import torch

from bytecourse import checkpoints, text
from bytecourse.diffusion import ImageDenoiser, UNetConfig
from bytecourse.diffusion.inflate import InflatedVideoDenoiser, InflationConfig, MotionModule, object_tokens
from bytecourse.oracle.motion import background_flicker, motion_correct, motion_scores, track_objects
from bytecourse.worlds.motion import MotionConfig, make_motion

TINY = UNetConfig(
    image_size=16, widths=(16, 16, 16), attn_levels=(1, 2), text_dim=16, text_layers=1, caption_length=12, heads=2
)


def _image_model(seed: int = 0) -> ImageDenoiser:
    torch.manual_seed(seed)
    m = ImageDenoiser(TINY)
    with torch.no_grad():  # the output convolution is zero-initialised: give it weights
        m.out[-1].weight.normal_(0, 0.1)
    return m.eval()


def _wake(module: torch.nn.Module, seed: int = 1) -> None:
    """Give the zero-initialised output projections weights, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "proj_out" in name or "first_frame_in" in name or ".up." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_object_tokens_route_object_phrases_and_keep_shapes_captions():
    motion = text.encode(["a red circle moves left and a blue square enters from the top", "", "a green triangle"], 24)
    out = object_tokens(motion, 12)
    assert text.decode(out) == ["a red circle and a blue square", "", "a green triangle"]
    with pytest.raises(ValueError, match="more objects"):
        object_tokens(text.encode(["a red circle and a blue square and a green circle and a cyan square"], 24), 12)


def test_inflated_model_equals_image_model_per_frame_at_initialisation():
    image = _image_model()
    video = InflatedVideoDenoiser(image, InflationConfig(frames=4)).eval()
    captions = ["a red circle", "a blue square and a green triangle"]
    x = torch.randn(2, 4, 3, 16, 16)
    t = torch.tensor([100, 800])
    with torch.no_grad():
        eps = video(x, t, text.encode(captions, 24))
        per_frame = image(
            x.flatten(0, 1), t.repeat_interleave(4), text.encode([c for c in captions for _ in range(4)], 12)
        )
    assert torch.allclose(eps, per_frame.view_as(x), atol=1e-6)


def test_permutation_equivariant_at_init_and_not_once_motion_modules_speak():
    video = InflatedVideoDenoiser(_image_model(), InflationConfig(frames=4)).eval()
    x, t, tok = (
        torch.randn(2, 4, 3, 16, 16),
        torch.tensor([500, 500]),
        text.encode(["a red circle moves left"] * 2, 24),
    )
    perm = torch.tensor([2, 0, 3, 1])

    def gap() -> float:
        with torch.no_grad():
            f = video(x, t, tok)
            return float((video(x[:, perm], t, tok) - f[:, perm]).norm() / f.norm())

    assert gap() < 1e-6
    _wake(video.motion)
    assert gap() >= 0.05


def test_lora_and_first_frame_start_as_identity_and_ship_only_the_delta():
    image = _image_model()
    plain = InflatedVideoDenoiser(image, InflationConfig(frames=4)).eval()
    full = InflatedVideoDenoiser(image, InflationConfig(frames=4, lora_rank=2, first_frame=True)).eval()
    x, t, tok = torch.randn(1, 4, 3, 16, 16), torch.tensor([300]), text.encode(["a red circle bounces"], 24)
    with torch.no_grad():
        assert torch.allclose(full(x, t, tok, first_frame=x[:, 0]), plain(x, t, tok), atol=1e-6)
        _wake(full)
        assert not torch.allclose(full(x, t, tok, first_frame=x[:, 0]), plain(x, t, tok), atol=1e-4)
    delta = full.delta_state_dict()
    assert delta and not any(k.startswith("spatial.") for k in delta)
    assert any(k.startswith("lora.") for k in delta) and any(k.startswith("first_frame_in") for k in delta)
    with pytest.raises(ValueError, match="does not match"):
        plain.load_delta(delta)
    with pytest.raises(ValueError, match="first_frame"):
        plain(x, t, tok, first_frame=x[:, 0])


def test_post_spatial_slots_cover_every_level_and_receive_extra():
    video = InflatedVideoDenoiser(_image_model(), InflationConfig(frames=4)).eval()
    slots = video.post_spatial_slots()
    sizes = {p: m.size for p, m in video.motion.items()}
    assert 8 in sizes.values()  # the 16×16 image's unshuffled top level: no spatial attention, a motion-module slot
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, tokens, frames, extra):
            seen.append((tokens.shape, frames, extra.get("tag")))
            return tokens + 1.0

    for slot in slots.values():
        slot.append(Probe())
    x, t, tok = torch.randn(1, 4, 3, 16, 16), torch.tensor([300]), text.encode(["a red circle bounces"], 24)
    with torch.no_grad():
        video(x, t, tok, extra={"tag": "box"})
    assert len(seen) == len(slots) and all(f == 4 and tag == "box" for _, f, tag in seen)


def test_bad_inputs_raise_value_errors():
    video = InflatedVideoDenoiser(_image_model(), InflationConfig(frames=4))
    with pytest.raises(ValueError, match="x must be"):
        video(torch.randn(1, 3, 16, 16), 5, text.encode(["a red circle"], 24))
    with pytest.raises(ValueError, match="tokens must be"):
        video(torch.randn(1, 4, 3, 16, 16), 5, text.encode(["a red circle"], 12))
    with pytest.raises(ValueError, match="motion_points"):
        InflatedVideoDenoiser(_image_model(), InflationConfig(motion_points=("nowhere",)))
    with pytest.raises(ValueError, match="no motion"):
        text.parse_motion_caption("a red circle sits")


def test_motion_module_is_residual_identity_at_init():
    m = MotionModule(16, 16, size=4)
    h = torch.randn(8, 16, 4, 4)
    assert torch.equal(m(h, 4, torch.randn(2, 5, 16)), h)


def test_spatiotemporal_attention_starts_silent_and_then_mixes_locations_across_frames():
    """Plain motion modules are local in space: the output at a location reads only that location's frames. The
    spatio-temporal sublayer lets a token read other locations on other frames ("where was the object before?"),
    and it is zero-initialised, so adding it to a trained module changes nothing until it trains."""
    torch.manual_seed(0)
    plain = MotionModule(16, 16, size=4)
    _wake(plain)
    st = MotionModule(16, 16, size=4, spatiotemporal=True)
    st.load_state_dict(plain.state_dict(), strict=False)
    h, ctx = torch.randn(8, 16, 4, 4), torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.allclose(st(h, 4, ctx), plain(h, 4, ctx), atol=1e-6)
        torch.nn.init.normal_(st.attn_st.to_out.weight, std=0.2)
        # clip 0, frame 0: swap two top-left locations' features (the GroupNorm statistics stay the same)
        swapped = h.clone()
        swapped[0, :, 0, 0], swapped[0, :, 0, 1] = h[0, :, 0, 1], h[0, :, 0, 0]
        far = (slice(1, 4), slice(None), 3, 3)  # clip 0, frames 1–3, the bottom-right location
        assert torch.allclose(plain(swapped, 4, ctx)[far], plain(h, 4, ctx)[far], atol=1e-5)
        assert (st(swapped, 4, ctx)[far] - st(h, 4, ctx)[far]).abs().max() > 1e-2
        assert torch.equal(st(swapped, 4, ctx)[4:], st(h, 4, ctx)[4:])  # clip 1 is another sample
    with pytest.raises(ValueError, match="spatiotemporal_points"):
        InflatedVideoDenoiser(
            _image_model(), InflationConfig(motion_points=("down0",), spatiotemporal_points=("mid",))
        )


def test_stream_positions_tell_the_tokens_when_and_where_they_are():
    """Without stream positions a motion module's tokens never hold their frame or place: positions enter only the
    attention scores, so with the caption away the same features give the same output on every frame and at every
    location, and with it a token's position only chooses which caption words it reads (a score additive in frame
    and place — "left early, right late" is their product). With them (AnimateDiff's pos_encoder) the values and
    the feed-forward see both; still identity at initialisation."""
    torch.manual_seed(0)
    h, ctx = torch.ones(8, 16, 4, 4) + 0.01 * torch.randn(16)[None, :, None, None], torch.randn(2, 5, 16)
    for stream, differs in ((False, False), (True, True)):
        m = MotionModule(16, 16, size=4, stream_positions=stream)
        assert torch.equal(m(h, 4, ctx), h)
        _wake(m)
        with torch.no_grad():
            out = m(h, 4, None).view(2, 4, 16, 16)  # (clip, frame, C, H·W)
        spread = max(float((out - out[:, :1]).abs().max()), float((out - out[..., :1]).abs().max()))
        assert (spread > 1e-2) is differs, (stream, spread)


def test_frame_captions_give_each_frame_its_own_reading_and_start_as_identity():
    """With ``frame_captions`` the whole caption is encoded once per frame, the frame's position added to every
    token, so "moves right" can read "at the left" on frame 0 and "at the right" on the last; each frame's queries
    read only their own frame's encoding. Without it there is one reading per clip. Identity at initialisation
    either way."""
    captions = text.encode(["a red circle moves right", "a blue square"], 24)
    x, t = torch.randn(2, 4, 3, 16, 16), torch.tensor([100, 800])
    for frame_captions, rows in ((False, 2), (True, 8)):
        image = _image_model()  # fresh: _wake below also wakes the image model's own output projections
        with torch.no_grad():
            per_frame = image(
                x.flatten(0, 1), t.repeat_interleave(4), object_tokens(captions, 12).repeat_interleave(4, 0)
            )
        video = InflatedVideoDenoiser(
            image, InflationConfig(frames=4, stream_positions=True, frame_captions=frame_captions)
        ).eval()
        seen = []
        video.motion_text.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        with torch.no_grad():
            assert torch.allclose(video(x, t, captions), per_frame.view_as(x), atol=1e-6)
        ctx = seen[0]
        assert ctx.shape[0] == rows
        if frame_captions:  # clip 0's four frames read four different encodings of the same caption
            assert (ctx[1] - ctx[0]).abs().max() > 1e-3 and (ctx[3] - ctx[2]).abs().max() > 1e-3
        _wake(video)
        with torch.no_grad():  # frame 0 of clip 0 changes only with its own clip's caption
            other = captions.clone()
            other[1] = text.encode(["a green triangle"], 24)[0]
            assert torch.equal(video(x, t, captions)[0], video(x, t, other)[0])


@pytest.mark.parametrize("head", ["conv", "attention"])
def test_x0_head_starts_as_the_image_model_and_then_owns_the_high_noise_levels(head):
    """``x0_head``: x̂₀ = ᾱ·x̂₀^ε + (1 − ᾱ)·(g(t)·clip(x̂₀^ε) + Δ). At initialisation (g = 1, Δ = 0) ε̂ is the image
    model's wherever x̂₀^ε lies inside [−1, 1]; once Δ speaks, it moves x̂₀ by (1 − ᾱ)·Δ — all of it at t = 999, almost
    none at t = 10 — and ε̂ stays the consistent ε of that x̂₀."""
    image = _image_model()
    plain = InflatedVideoDenoiser(image, InflationConfig(frames=4)).eval()
    video = InflatedVideoDenoiser(image, InflationConfig(frames=4, x0_head=head)).eval()
    video.load_state_dict(plain.state_dict(), strict=False)
    tok = text.encode(["a red circle moves right", "a blue square"], 24)
    x = 0.5 * torch.randn(2, 4, 3, 16, 16)
    acp = video.alphas_cumprod
    for level in (10, 500, 999):
        t = torch.full((2,), level)
        with torch.no_grad():
            eps0, eps = plain(x, t, tok), video(x, t, tok)
        a = acp[level]
        x0_eps = (x - (1 - a).sqrt() * eps0) / a.sqrt()
        inside = x0_eps.abs() <= 1
        assert torch.allclose(eps[inside], eps0[inside], atol=1e-4)
    with torch.no_grad():
        last = video.x0_head[-1] if head == "conv" else video.x0_head.proj_out
        last.bias.fill_(0.25)  # Δ = +0.25 everywhere (after the pixel shuffle)
    for level, share in ((999, 1.0), (10, 0.0)):
        t = torch.full((2,), level)
        with torch.no_grad():
            eps0, eps = plain(x, t, tok), video(x, t, tok)
        a = acp[level]
        x0_eps = (x - (1 - a).sqrt() * eps0) / a.sqrt()
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        want = a * x0_eps + (1 - a) * (x0_eps.clamp(-1, 1) + 0.25)
        assert torch.allclose(x0, want, atol=5e-3 if level == 999 else 1e-4)
        assert abs(float((want - a * x0_eps - (1 - a) * x0_eps.clamp(-1, 1)).mean()) - 0.25 * share) < 1e-3


def test_attention_clean_clip_head_knows_when_and_where_and_reads_the_caption():
    """The attention head's tokens carry frame, place and noise level in the stream: with constant features it still
    gives each frame and each place its own output, and the caption changes it."""
    video = InflatedVideoDenoiser(_image_model(), InflationConfig(frames=4, x0_head="attention")).eval()
    head = video.x0_head
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        h = torch.ones(4, head.norm_in.num_channels, 8, 8)  # the same features on every frame and at every place
        tok = text.encode(["a red circle moves right"], 24)
        ctx = video.motion_text(tok)
        out = head(h, 4, ctx, torch.full((4,), 900))
        assert out.shape == (4, 3, 16, 16)
        assert (out[0] - out[3]).abs().mean() > 1e-3  # frames differ
        assert (out[0, :, :, :8] - out[0, :, :, 8:]).abs().mean() > 1e-3  # places differ
        other = head(h, 4, video.motion_text(text.encode(["a red circle moves left"], 24)), torch.full((4,), 900))
        assert (other - out).abs().mean() > 1e-4  # the direction word reaches it
    with pytest.raises(ValueError, match="x0_head"):
        InflatedVideoDenoiser(_image_model(), InflationConfig(frames=4, x0_head="mlp"))


def test_motion_oracle_reads_real_clips_back():
    batch = make_motion(120, 4321, MotionConfig(max_objects=1))
    scores = motion_scores(batch.videos, batch.captions)
    assert scores["direction"] >= 0.95
    assert scores["identity"] >= 0.95
    assert scores["flicker"] == 0.0
    two = make_motion(40, 99, MotionConfig(max_objects=2, object_probs=(0.0, 1.0)))
    assert motion_scores(two.videos, two.captions)["direction"] >= 0.95


def test_motion_oracle_rejects_frozen_and_reversed_clips():
    batch = make_motion(60, 77, MotionConfig(max_objects=1, kinds=("linear", "entering", "leaving")))
    frozen = batch.videos[:, :1].expand_as(batch.videos)
    assert motion_scores(frozen, batch.captions)["direction"] <= 0.1
    assert motion_scores(batch.videos.flip(1), batch.captions)["direction"] <= 0.1
    noisy = (batch.videos + 0.05 * torch.randn_like(batch.videos)).clamp(0, 1)
    assert float(background_flicker(noisy).mean()) > 0.02
    tr = track_objects(batch.videos[0], batch.captions[0])[0]
    assert motion_correct(tr) and tr.seen.any()


@pytest.mark.skipif(
    not checkpoints.checkpoint_available("video_motion"), reason="the inflated video model is not shipped"
)
def test_shipped_inflated_model_couples_frames():
    from bytecourse.diffusion.video_eval import eval_clips, permutation_gap
    from bytecourse.diffusion.videomotion import load_inflated_video_model

    model, _, entry = load_inflated_video_model()
    assert entry["parent"]["sha256"] == checkpoints.manifest_entry("primer_unet")["sha256"]
    batch = eval_clips(0, n=2)
    # a frame-by-frame model gives 0 to float precision; the trained motion modules clearly do not (the issue's
    # target of 0.05 is not reached at this training budget: `eval video` stores the measured gap)
    assert permutation_gap(model, batch, "cpu") >= 2e-3


def test_a_stage_starts_from_the_shipped_model_on_a_fresh_clone_and_trains_only_what_it_names(tmp_path):
    """Stage 3 with no run directory starts from ``data/video_motion`` (it holds stage 2 of the default config);
    ``trainable`` leaves every other weight as stage 2 left it; a config whose stage 2 differs is refused."""
    from dataclasses import replace

    from bytecourse.diffusion.videomotion import InflatedVideoConfig, VideoStage, train_video_stage

    shipped, _ = checkpoints.load_checkpoint("video_motion")
    config = InflatedVideoConfig()
    config.stages = (
        *config.stages,
        VideoStage("head", steps=2, lr=1e-2, lora_rank=4, x0_head="conv", trainable=("x0_",)),
    )
    model, _ = train_video_stage(config, 3, run_root=tmp_path, ship=False, progress=False)
    state = model.state_dict()
    assert all(torch.equal(state[k], v.float()) for k, v in shipped.items())
    assert float(model.x0_head[-1].weight.abs().sum()) > 0
    other = replace(config, warmup=config.warmup + 1)
    with pytest.raises(ValueError, match="finished stage 2"):
        train_video_stage(other, 3, run_root=tmp_path / "other", ship=False, progress=False)


def test_v_weighting_is_the_v_loss_and_capped():
    from bytecourse.diffusion import make_train_scheduler
    from bytecourse.diffusion.training import loss_weights

    acp = make_train_scheduler().alphas_cumprod
    w = loss_weights(acp, "v", max_weight=1e12)
    snr = acp / (1 - acp)
    assert torch.allclose(w, 1 + 1 / snr, rtol=1e-4)
    assert float(loss_weights(acp, "v").max()) == 20.0 and float(loss_weights(acp, "eps").min()) == 1.0
    # ‖v̂ − v‖² = w · ‖ε̂ − ε‖² for an ε-prediction, with v = α ε − σ x₀ and x̂₀ from ε̂
    a = acp[700].double()
    x0, eps, eps_hat = torch.randn(3, 10, dtype=torch.float64)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    x0_hat = (xt - (1 - a).sqrt() * eps_hat) / a.sqrt()
    v, v_hat = a.sqrt() * eps - (1 - a).sqrt() * x0, a.sqrt() * eps_hat - (1 - a).sqrt() * x0_hat
    assert torch.allclose((v_hat - v).pow(2).sum(), (eps_hat - eps).pow(2).sum() / a)
    with pytest.raises(ValueError, match="weighting"):
        loss_weights(acp, "x0")


def test_eval_scores_real_clips_as_the_ceiling():
    from bytecourse.diffusion.video_eval import eval_clips, fully_inside, score_clips

    batch = eval_clips(0, n=12)
    inside = fully_inside(batch)
    assert inside.any() and not inside.all()  # entering/leaving objects are partly outside on some frames
    scores = score_clips(batch.videos, batch)
    assert scores["colour"] == 1.0 and scores["realism"] > 0.99 and scores["direction"] >= 0.9


def _table(direction, identity, quality=0.97):
    def stat(v):
        return {"mean": v, "min": v - 0.01, "max": v + 0.01, "std": 0.01, "per_seed": [v - 0.01, v, v + 0.01]}

    def row(name, d, i):
        return {
            "setting": name,
            "metrics": {
                "direction": stat(d),
                "identity": stat(i),
                "colour": stat(quality),
                "shape": stat(quality),
                "realism": stat(quality),
            },
        }

    return {
        "models": {
            "rows": [row("Image model, frame by frame", 0.28, 0.70), row("Inflated video model", direction, identity)]
        }
    }


def test_video_verdicts_can_say_each_outcome():
    from bytecourse.diffusion.video_eval import verdicts

    by = lambda t: {v["claim"]: v["outcome"] for v in verdicts(t)}  # noqa: E731
    assert by(_table(0.80, 0.95)) == {
        "direction": "reproduced",
        "identity": "reproduced",
        "colour": "reproduced",
        "shape": "reproduced",
        "realism": "reproduced",
    }
    assert by(_table(0.47, 0.71))["direction"] == "not reproduced"  # better than frame by frame, below the target
    assert by(_table(0.47, 0.71))["identity"] == "inconclusive"
    assert by(_table(0.80, 0.95, quality=0.5))["realism"] == "not reproduced"


def test_direction_diagnostics_read_real_clips_and_a_model_that_ignores_direction():
    from bytecourse.diffusion.image_model import load_image_model
    from bytecourse.diffusion.video_eval import direction_word_gap, swap_directions
    from bytecourse.oracle.motion import direction_by_kind

    assert swap_directions(["a red circle moves left and a blue square curves up", "a red circle bounces"]) == [
        "a red circle moves right and a blue square curves down",
        "a red circle bounces",
    ]
    batch = make_motion(30, 5, MotionConfig(max_objects=1))
    kinds = direction_by_kind(batch.videos, batch.captions)
    assert set(kinds) <= {"linear", "curved", "bouncing", "entering", "leaving"} and min(kinds.values()) >= 0.9
    assert direction_by_kind(batch.videos.flip(1), batch.captions)["linear"] <= 0.1
    with pytest.raises(ValueError, match="one caption per clip"):
        direction_by_kind(batch.videos, batch.captions[:3])
    # the image model frame by frame reads only the object phrases: swapping the direction word changes nothing
    primer, _ = load_image_model()
    frame_by_frame = InflatedVideoDenoiser(primer).eval()
    (row,) = direction_word_gap(frame_by_frame, "cpu", n=3, levels=(900,))
    assert row["swapped_minus_true"] == 0.0 and row["null_minus_true"] != 0.0


def test_high_noise_levels_are_drawn_only_when_asked():
    from bytecourse.diffusion import make_train_scheduler
    from bytecourse.diffusion.training import diffusion_loss

    seen = []

    def model(xt, t, cond):
        seen.append(t.clone())
        return torch.zeros_like(xt)

    sched, x0, tok = make_train_scheduler(), torch.zeros(64, 3, 4, 4), torch.zeros(64, 12, dtype=torch.long)
    plain = diffusion_loss(model, x0, tok, sched, torch.Generator().manual_seed(3))
    same = diffusion_loss(model, x0, tok, sched, torch.Generator().manual_seed(3), high_noise=(0.0, 700))
    assert torch.equal(seen[0], seen[1]) and plain == same  # p = 0 draws nothing extra
    diffusion_loss(model, x0, tok, sched, torch.Generator().manual_seed(3), high_noise=(1.0, 700))
    assert int(seen[2].min()) >= 700
    diffusion_loss(model, x0, tok, sched, torch.Generator().manual_seed(3), high_noise=(0.5, 900))
    assert 0.2 < float((seen[3] >= 900).float().mean()) < 0.8
    with pytest.raises(ValueError, match="t_from"):
        diffusion_loss(model, x0, tok, sched, torch.Generator().manual_seed(3), high_noise=(0.5, 1000))


def test_guidance_is_chosen_on_validation_clips_by_its_rule(monkeypatch):
    """choose_guidance scores each scale on the validation clips only and keeps the best mean of direction and
    identity among the scales that keep colour and realism; none kept → the smallest scale."""
    from bytecourse.diffusion import video_eval

    seen = []
    fake = {
        1.0: (0.3, 0.6, 1.0, 0.99),
        2.0: (0.5, 0.8, 1.0, 0.98),
        4.0: (0.7, 0.9, 1.0, 0.85),
        8.0: (0.9, 0.95, 0.9, 0.8),
    }
    monkeypatch.setattr(video_eval, "eval_clips", lambda seed: seen.append(seed) or seed)
    monkeypatch.setattr(video_eval, "sample_clips", lambda model, batch, seed, device, w: w)
    monkeypatch.setattr(
        video_eval, "score_clips", lambda w, batch: dict(zip(("direction", "identity", "colour", "realism"), fake[w]))
    )
    out = video_eval.choose_guidance(None, "cpu")
    assert seen == [video_eval.GUIDANCE_VALIDATION] and video_eval.GUIDANCE_VALIDATION >= 3  # not an eval seed
    assert out["guidance_scale"] == 2.0 and [r["guidance_scale"] for r in out["rows"]] == [1.0, 2.0, 4.0, 8.0]
    fake.update({w: (0.9, 0.9, 0.5, 0.5) for w in fake})
    assert video_eval.choose_guidance(None, "cpu")["guidance_scale"] == 1.0


def test_retired_scratch_rows_are_carried_once_with_their_evaluation_named():
    from bytecourse.diffusion.video_eval import SCRATCH_ROW, retired_scratch_rows

    row = {"setting": SCRATCH_ROW, "metrics": {}, "note": "trained on clips"}
    stored = {
        "eval_git_commit": "0123456789abcdef",
        "tables": {
            "models": {"rows": [{"setting": "Real clips", "note": ""}, row], "guidance_scale": 8.0},
            "coupling": {"rows": [{"setting": SCRATCH_ROW, "metrics": {}}]},
        },
    }
    out = retired_scratch_rows(stored)
    assert out["models"]["stored"] and out["coupling"]["stored"]
    assert out["models"]["note"].startswith("trained on clips; stored row") and "01234567" in out["models"]["note"]
    assert "CFG 8" in out["models"]["note"]
    # a later evaluation copies the marked row unchanged (the first evaluation stays named)
    again = {"eval_git_commit": "fedcba9876543210", "tables": {"models": {"rows": [out["models"]]}}}
    assert retired_scratch_rows(again)["models"] == out["models"]
    assert retired_scratch_rows(again)["coupling"] is None
    assert retired_scratch_rows({"tables": {}}) is None
