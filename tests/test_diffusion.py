import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from bytecourse import text
from bytecourse.diffusion import (
    Attention,
    ImageDenoiser,
    SamplerHook,
    UNetConfig,
    ddim_sample,
    ddpm_sample,
    diffusion_loss,
    drop_condition,
    guided_eps,
    make_ddim_scheduler,
    make_train_scheduler,
)
from bytecourse.diffusion.video import VideoDenoiser, VideoUNetConfig

TINY = UNetConfig(
    image_size=16, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, caption_length=12, heads=2
)
TINY_VIDEO = VideoUNetConfig(
    frames=4, image_size=16, widths=(16, 32), heads=2, text_dim=16, text_layers=1, caption_length=24
)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The output convolution is zero-initialised; give it weights so outputs depend on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(0.01 * torch.randn(p.shape, generator=g))
    return model.eval()


def _tokens(b: int, length: int = 12, seed: int = 0) -> torch.Tensor:
    caps = ["a red circle", "a blue square and a green triangle", "a yellow triangle", "a cyan circle"]
    return text.encode([caps[(i + seed) % 4] for i in range(b)], length)


def test_image_denoiser_shapes_and_gradients():
    model = ImageDenoiser(TINY)
    x = torch.randn(3, 3, 16, 16)
    out = model(x, torch.tensor([1, 500, 999]), _tokens(3))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: ε̂ = 0 at initialisation
    _randomise(model).train()
    loss = diffusion_loss(model, x.clamp(-1, 1), _tokens(3), make_train_scheduler(), torch.Generator().manual_seed(0))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient reaches {missing}"


def test_denoiser_uses_the_caption():
    model = _randomise(ImageDenoiser(TINY))
    x = torch.randn(2, 3, 16, 16)
    a = model(x, 500, _tokens(2, seed=0))
    b = model(x, 500, _tokens(2, seed=1))
    assert (a - b).abs().max() > 1e-4


def test_attention_is_sdpa_and_processors_plug_in():
    attn = Attention(16, heads=2)
    x = torch.randn(2, 5, 16)
    q, k, v = (attn.split_heads(f(x)) for f in (attn.to_q, attn.to_k, attn.to_v))
    manual = torch.softmax(q @ k.transpose(-1, -2) / (8**0.5), -1) @ v
    assert torch.allclose(attn(x), attn.to_out(attn.merge_heads(manual)), atol=1e-5)
    extra = (torch.randn(2, 3, 16), torch.randn(2, 3, 16))
    assert (attn(x, extra_kv=extra) - attn(x)).abs().max() > 1e-4  # extra keys/values change the result

    calls = []

    class Recording:
        def __call__(self, attn, x, context=None, **kw):
            calls.append(kw.get("role"))
            return torch.zeros_like(x)

    attn.set_processor(Recording())
    assert torch.count_nonzero(attn(x, role="spatial")) == 0 and calls == ["spatial"]


def test_video_denoiser_layout_and_temporal_mixing():
    model = _randomise(VideoDenoiser(TINY_VIDEO))
    x = torch.randn(2, 4, 3, 16, 16)
    tokens = _tokens(2, 24)
    out = model(x, torch.tensor([10, 700]), tokens)
    assert out.shape == x.shape
    x2 = x.clone()
    x2[:, 3] += 1.0
    changed = (model(x2, torch.tensor([10, 700]), tokens) - out)[:, 0].abs().max()
    assert changed > 1e-5  # temporal attention carries frame 3's change to frame 0

    class NoTemporal:
        def __call__(self, attn, x, context=None, **kw):
            return torch.zeros_like(x)

    for block in model.transformer_blocks():
        block.temporal_attn.set_processor(NoTemporal())
        assert len(block.post_spatial) == 0  # the slot Boximator fills
    base = model(x, torch.tensor([10, 700]), tokens)
    moved = model(x2, torch.tensor([10, 700]), tokens)
    assert torch.allclose(base[:, 0], moved[:, 0], atol=1e-6)  # without it, frames are independent


def test_video_post_spatial_slot_receives_extra():
    model = _randomise(VideoDenoiser(TINY_VIDEO))
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, tokens, frames, extra):
            seen.append((tokens.shape, frames, extra.get("box_tokens")))
            return tokens

    model.block0.post_spatial.append(Probe())
    model(torch.randn(1, 4, 3, 16, 16), 3, _tokens(1, 24), extra={"box_tokens": "boxes"})
    assert seen == [(torch.Size([4, 64, 16]), 4, "boxes")]


@torch.no_grad()
def _diffusers_ddim_loop(model, noise, cond, sched_train, steps, cfg, clipped_eps=True):
    sched = DDIMScheduler.from_config(
        sched_train.config, timestep_spacing="trailing", set_alpha_to_one=True, steps_offset=0, clip_sample=True
    )
    sched.set_timesteps(steps)
    x = noise
    uncond = torch.zeros_like(cond)
    for t in sched.timesteps:
        tt = t.expand(x.shape[0])
        if cfg == 1.0:
            eps = model(x, tt, cond)
        else:  # both branches in one batch, as CFG implementations do (same kernels → same rounding)
            eps_c, eps_u = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, uncond])).chunk(2)
            eps = eps_u + cfg * (eps_c - eps_u)
        x = sched.step(eps, t, x, eta=0.0, use_clipped_model_output=clipped_eps).prev_sample
    return x


@pytest.mark.parametrize("clipped_eps", [True, False])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_ddim_sampler_matches_plain_diffusers_loop(cfg, clipped_eps):
    model = _randomise(ImageDenoiser(TINY))
    sched = make_train_scheduler()
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = _tokens(3)
    ours = ddim_sample(model, noise, cond, sched, steps=8, guidance_scale=cfg, use_clipped_model_output=clipped_eps)
    ref = _diffusers_ddim_loop(model, noise, cond, sched, 8, cfg, clipped_eps)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_clipped_model_output_pairs_the_update_with_the_clipped_estimate():
    """With ``use_clipped_model_output`` every DDIM step is x_{t'} = √ᾱ' clip(x̂₀) + √(1−ᾱ') ε̂' with
    ε̂' = (x_t − √ᾱ clip(x̂₀))/√(1−ᾱ) (recorded by a hook); without clipping the two modes are the same sampler."""
    model = _randomise(ImageDenoiser(TINY))
    sched = make_train_scheduler()
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    cond = _tokens(2)

    class Check(SamplerHook):
        worst = 0.0

        def on_step_end(self, st):
            a, a_prev = st.alpha_bar, st.alpha_bar_prev
            x0 = st.x0_pred  # clipped by the scheduler
            eps = (st.x - a**0.5 * x0) / (1 - a) ** 0.5
            want = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
            self.worst = max(self.worst, float((st.x_prev - want).abs().max()))
            assert float(x0.abs().max()) <= 1 + 1e-6

    hook = Check()
    ddim_sample(model, noise, cond, sched, steps=6, guidance_scale=5.0, hook=hook)  # the cure is the default
    assert hook.worst < 1e-4
    raw = ddim_sample(model, noise, cond, sched, steps=6, guidance_scale=5.0, use_clipped_model_output=False)
    fixed = ddim_sample(model, noise, cond, sched, steps=6, guidance_scale=5.0)
    assert not torch.allclose(raw, fixed)
    a = ddim_sample(model, noise, cond, sched, steps=6, guidance_scale=5.0, clip_x0=False)
    b = ddim_sample(
        model, noise, cond, sched, steps=6, guidance_scale=5.0, clip_x0=False, use_clipped_model_output=True
    )
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("steps", [4, 5, 8, 20])
def test_ancestral_ddim_never_returns_nan(steps):
    """η = 1 with 5 steps made diffusers' direction term √(1 − ᾱ' − σ²) the root of a float32 value just below 0
    (NaN); ``ddim_step`` lowers η by the rounding margin there and leaves every other step to diffusers."""
    model = _randomise(ImageDenoiser(TINY))
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x = ddim_sample(model, noise, _tokens(2), make_train_scheduler(), steps=steps, eta=1.0)
    assert torch.isfinite(x).all()


def test_ddpm_sampler_matches_plain_diffusers_loop():
    model = _randomise(ImageDenoiser(TINY))
    sched = make_train_scheduler(num_train_timesteps=30)
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = _tokens(2)
    ours = ddpm_sample(model, noise, cond, sched, seed=7)
    ref_sched = DDPMScheduler.from_config(sched.config, clip_sample=True)
    ref_sched.set_timesteps(30)
    g = torch.Generator().manual_seed(7)
    x = noise
    for t in ref_sched.timesteps:
        x = ref_sched.step(model(x, t.expand(2), cond), t, x, generator=g).prev_sample
    assert torch.allclose(ours, x, rtol=1e-4, atol=1e-5)


def test_sampler_hook_sees_and_changes_every_step():
    model = _randomise(ImageDenoiser(TINY))
    sched = make_train_scheduler()
    noise = torch.randn(2, 3, 16, 16)
    cond = _tokens(2)

    class Recorder(SamplerHook):
        def __init__(self):
            self.ts, self.x0 = [], []

        def on_step_end(self, state):
            self.ts.append((state.t, state.t_prev))
            self.x0.append(state.x0_pred)

    rec = Recorder()
    plain = ddim_sample(model, noise, cond, sched, steps=5)
    with_rec = ddim_sample(model, noise, cond, sched, steps=5, hook=rec)
    assert torch.equal(plain, with_rec)  # a hook that returns None changes nothing
    assert [t for t, _ in rec.ts] == make_ddim_scheduler(sched, 5).timesteps.tolist() and rec.ts[-1][1] == -1
    assert torch.allclose(rec.x0[-1], plain, atol=1e-5)  # the last step lands on its own x̂₀

    class ZeroEps(SamplerHook):
        def __init__(self):
            self.ratio = 1.0

        def on_eps(self, state):
            self.ratio *= (state.alpha_bar_prev / state.alpha_bar) ** 0.5
            return torch.zeros_like(state.eps)

    # with ε̂ ≡ 0 and no clipping, each DDIM step just rescales x by √(ᾱ_prev/ᾱ_t): the hook's ᾱ's are the
    # scheduler's own
    zero = ZeroEps()
    out = ddim_sample(model, noise, cond, sched, steps=3, hook=zero, clip_x0=False)
    assert torch.allclose(out, noise * zero.ratio, rtol=1e-4)


def test_cfg_and_condition_dropout():
    model = _randomise(ImageDenoiser(TINY))
    x, cond = torch.randn(2, 3, 16, 16), _tokens(2)
    e_c, e_u = model(x, torch.tensor([5, 5]), cond), model(x, torch.tensor([5, 5]), torch.zeros_like(cond))
    assert torch.allclose(guided_eps(model, x, 5, cond, 0.0), e_u, atol=1e-5)
    assert torch.allclose(guided_eps(model, x, 5, cond, 4.0), e_u + 4 * (e_c - e_u), atol=1e-4)
    g = torch.Generator().manual_seed(0)
    assert torch.count_nonzero(drop_condition(cond, 1.0, g)) == 0
    assert torch.equal(drop_condition(cond, 0.0, g), cond)
    dropped = drop_condition(_tokens(2000), 0.1, g)
    assert 0.07 < (dropped.sum(1) == 0).float().mean() < 0.13


def test_training_reduces_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = ImageDenoiser(TINY)
    sched = make_train_scheduler()
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    cond = _tokens(8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_at(seed):
        with torch.no_grad():
            return float(diffusion_loss(model, x0, cond, sched, torch.Generator().manual_seed(seed), 0.0))

    before = sum(loss_at(s) for s in range(4))
    for step in range(40):
        loss = diffusion_loss(model, x0, cond, sched, torch.Generator().manual_seed(100 + step), 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(loss_at(s) for s in range(4)) < 0.8 * before


@pytest.mark.parametrize(
    "call",
    [
        lambda m, s: ddim_sample(m, torch.randn(1, 3, 16, 16), _tokens(1), s, steps=0),
        lambda m, s: ddim_sample(m, torch.randn(1, 3, 16, 16), _tokens(1), s, guidance_scale=-1.0),
        lambda m, s: ddim_sample(m, torch.randn(1, 3, 16, 16), _tokens(1), s, eta=2.0),
        lambda m, s: ddim_sample(m, torch.randn(2, 3, 16, 16), _tokens(1), s),
        lambda m, s: m(torch.randn(1, 3, 8, 8), 0, _tokens(1)),
        lambda m, s: m(torch.randn(1, 3, 16, 16), 0, _tokens(1, length=5)),
        lambda m, s: drop_condition(_tokens(1), 1.5, torch.Generator()),
        lambda m, s: make_train_scheduler(1),
        lambda m, s: Attention(10, heads=3),
    ],
)
def test_diffusion_bad_input(call):
    model = ImageDenoiser(TINY)
    with pytest.raises(ValueError):
        call(model, make_train_scheduler())


def test_sdpa_used_for_attention(monkeypatch):
    used = []
    real = F.scaled_dot_product_attention

    def spy(*a, **k):
        used.append(1)
        return real(*a, **k)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    ImageDenoiser(TINY)(torch.randn(1, 3, 16, 16), 0, _tokens(1))
    assert used


def test_configs_roundtrip_through_json_and_video_frame_limit():
    import json

    for cfg in (TINY, TINY_VIDEO):
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="frames"):
        VideoDenoiser(TINY_VIDEO)(torch.randn(1, 65, 3, 16, 16), 0, _tokens(1, 24))


def test_train_loop_resumes_and_extends_a_schedule(tmp_path):
    from bytecourse.trainer import train_loop

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    loss_fn = lambda m, step, device: m(torch.ones(2, 3, device=device)).pow(2).mean()  # noqa: E731
    kw = dict(lr=1e-2, run_dir=tmp_path, warmup=1, progress=False, device="cpu")
    _, state, _ = train_loop(model, loss_fn, total_steps=3, config={"steps": 3, "lr": 1e-2}, **kw)
    assert state.step == 3
    _, state, _ = train_loop(model, loss_fn, total_steps=5, config={"steps": 5, "lr": 1e-2}, resume=True, **kw)
    assert state.step == 5 and state.stages == 2
    with pytest.raises(ValueError, match="different config"):
        train_loop(model, loss_fn, total_steps=6, config={"steps": 6, "lr": 2e-2}, resume=True, **kw)
    with pytest.raises(ValueError, match="already run"):
        train_loop(model, loss_fn, total_steps=4, config={"steps": 4, "lr": 1e-2}, resume=True, **kw)
