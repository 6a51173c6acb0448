"""Chapter 07 (DREAM-Talk): the Talking world, the mechanism's defining properties, the judges, the verdicts."""

import copy

import pytest
import torch

from bytecourse.dreamtalk import EmoDiff, LipRefiner, LSTMRegressor, generate
from bytecourse.dreamtalk.evaluate import verdict_expressive, verdict_floor, verdict_guidance, verdict_refiner
from bytecourse.dreamtalk.judges import SyncScorer, frechet_distance, lse_from_distances
from bytecourse.dreamtalk.models import DreamTalkConfig
from bytecourse.dreamtalk.sampling import emodiff_loss
from bytecourse.worlds.talking import (
    EMOTIONS,
    MOUTH,
    MOUTH_DIMS,
    PHONEMES,
    TalkingConfig,
    expressed_emotion,
    make_talking,
    resample_dynamics,
    select,
)

TINY = DreamTalkConfig(dim=32, layers=1, heads=2, style_layers=1, lstm_hidden=16, refiner_layers=1)


# ---- the world ----


def test_world_is_seeded_and_shaped():
    a, b = make_talking(4, 3), make_talking(4, 3)
    assert torch.equal(a.coeffs, b.coeffs) and torch.equal(a.audio, b.audio) and torch.equal(a.style, b.style)
    assert a.coeffs.shape == (4, 40, 11) and a.audio.shape == (4, 40, 16) and a.mouth_target.shape == (4, 40, 4)
    assert not torch.equal(make_talking(4, 4).coeffs, a.coeffs)
    assert all(sum(d for _, d in s) >= 40 for s in a.sentences)


def test_mouth_is_its_target_plus_small_jitter_and_emotion_shapes_the_mouth():
    b = make_talking(64, 0)
    assert float((b.coeffs[..., MOUTH_DIMS] - b.mouth_target).abs().mean()) < 0.03
    corner = MOUTH.index("mouth_corner")
    happy = make_talking(32, 1, emotion="happy", intensity=1.0, sentence=[("AA", 4), ("M", 4)])
    sad = make_talking(32, 1, emotion="sad", intensity=1.0, sentence=[("AA", 4), ("M", 4)])
    neutral = make_talking(32, 1, emotion="neutral", intensity=1.0, sentence=[("AA", 4), ("M", 4)])
    assert happy.mouth_target[..., corner].min() > 0.4 > -0.4 > sad.mouth_target[..., corner].max()
    # the same sentence: the articulation (jaw) follows the phonemes, scaled by the emotion
    jaw_h, jaw_n = happy.mouth_target[:, :, 0], neutral.mouth_target[:, :, 0]
    assert torch.corrcoef(torch.stack([jaw_h.flatten(), jaw_n.flatten()]))[0, 1] > 0.95


def test_expressed_emotion_reads_the_intensity():
    strong = make_talking(64, 8, emotion="happy", intensity=1.0)
    weak = make_talking(64, 8, emotion="happy", intensity=0.3)
    e_strong, e_weak = expressed_emotion(strong.coeffs, strong.emotion), expressed_emotion(weak.coeffs, weak.emotion)
    assert float(e_strong.mean()) == pytest.approx(float(e_weak.mean()) / 0.3, rel=0.15)
    assert float(e_strong.min()) > 0.3
    neutral = make_talking(8, 8, emotion="neutral")
    assert torch.equal(expressed_emotion(neutral.coeffs, neutral.emotion), torch.zeros(8))


def test_audio_is_not_the_phoneme_ids():
    """The same phoneme sounds different across speakers: a per-phoneme mean explains only part of the audio."""
    b = make_talking(128, 2)
    ids, audio = b.phonemes.flatten(), b.audio.reshape(-1, 16)
    residual = torch.cat([audio[ids == p] - audio[ids == p].mean(0) for p in range(len(PHONEMES)) if (ids == p).any()])
    assert float(residual.std()) > 0.2


def test_style_clip_shares_emotion_not_sentence():
    b = make_talking(16, 5)
    assert not torch.equal(b.style[..., MOUTH_DIMS], b.coeffs[..., MOUTH_DIMS])
    one = make_talking(200, 6, emotion="angry")
    assert (one.emotion == EMOTIONS.index("angry")).all()
    furrow = 5  # brow_furrow
    assert float(one.style[..., furrow].mean()) > 0.3 and float(one.coeffs[..., furrow].mean()) > 0.3


def test_resample_keeps_the_inputs_and_the_first_frame():
    b = make_talking(8, 7)
    r1, r2 = resample_dynamics(b, 1), resample_dynamics(b, 2)
    assert torch.equal(r1[:, 0], b.coeffs[:, 0])
    assert float((r1[:, 5:, 4:] - r2[:, 5:, 4:]).abs().mean()) > 0.01  # the upper face and pose vary
    assert float((r1[:, :, MOUTH_DIMS] - b.mouth_target).abs().mean()) < 0.03  # the mouth stays on target
    sub = select(b, [1, 3])
    assert torch.equal(sub.coeffs, b.coeffs[[1, 3]]) and sub.sentences == [b.sentences[1], b.sentences[3]]


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"emotion": "bored"}, "emotion"),
        ({"intensity": 1.5}, "intensity"),
        ({"intensity": -0.1}, "intensity"),
        ({"sentence": []}, "sentence"),
        ({"sentence": [("ZZ", 3)]}, "phoneme"),
        ({"sentence": [("AA", 0)]}, "frames"),
    ],
)
def test_world_bad_input_raises_one_value_error(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_talking(2, 0, **kwargs)


def test_world_config_is_validated():
    with pytest.raises(ValueError, match="intensity_range"):
        make_talking(2, 0, TalkingConfig(intensity_range=(0.9, 0.1)))


# ---- the mechanism ----


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    models = {"emodiff": EmoDiff(TINY), "refiner": LipRefiner(TINY), "lstm": LSTMRegressor(TINY)}
    for m in models.values():  # non-zero output heads, so the properties below are not trivially true
        for p in m.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        m.eval()
    return models


def test_refiner_replaces_the_mouth_and_nothing_else(tiny):
    b = make_talking(3, 0)
    out = generate(tiny["emodiff"], b.audio, b.initial, b.style, steps=4, seed=1)
    refined = tiny["refiner"].refine(out, b.audio, b.style)
    keep = [i for i in range(11) if i not in range(*MOUTH_DIMS.indices(11))]
    assert torch.equal(refined[..., keep], out[..., keep])
    assert not torch.allclose(refined[..., MOUTH_DIMS], out[..., MOUTH_DIMS])
    assert torch.allclose(refined[..., MOUTH_DIMS], tiny["refiner"].predict(b.audio, b.style))


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_style_free_one(tiny):
    b = make_talking(2, 1)
    model = tiny["emodiff"]
    cond = generate(model, b.audio, b.initial, b.style, guidance_scale=1.0, steps=5, seed=3)
    assert torch.allclose(
        generate(model, b.audio, b.initial, b.style, guidance_scale=1.0 + 1e-9, steps=5, seed=3), cond, atol=1e-5
    )
    other_style = make_talking(2, 99).style
    free = generate(model, b.audio, b.initial, b.style, guidance_scale=0.0, steps=5, seed=3)
    free2 = generate(model, b.audio, b.initial, other_style, guidance_scale=0.0, steps=5, seed=3)
    assert torch.allclose(free, free2, atol=1e-5)  # w = 0: the null style only — the style clip cannot matter
    assert not torch.allclose(
        cond, generate(model, b.audio, b.initial, other_style, guidance_scale=1.0, steps=5, seed=3)
    )


def test_sampling_is_seeded_and_the_style_never_sees_the_audio(tiny):
    b = make_talking(2, 2)
    model = tiny["emodiff"]
    a = generate(model, b.audio, b.initial, b.style, steps=4, seed=5)
    assert torch.equal(a, generate(model, b.audio, b.initial, b.style, steps=4, seed=5))
    assert not torch.equal(a, generate(model, b.audio, b.initial, b.style, steps=4, seed=6))
    code = model.style_code(b.style)
    assert torch.equal(code, model.style_code(b.style))  # a function of the style clip alone
    assert model.style_code(b.style, torch.tensor([True, False]))[0].equal(model.null_style)


def test_emodiff_loss_trains(tiny):
    model = copy.deepcopy(tiny["emodiff"]).train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    batch = make_talking(16, 0)
    losses = []
    for _ in range(30):
        loss = emodiff_loss(model, batch, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_lstm_is_deterministic(tiny):
    b = make_talking(2, 3)
    assert torch.equal(
        tiny["lstm"].predict(b.audio, b.initial, b.style), tiny["lstm"].predict(b.audio, b.initial, b.style)
    )


@pytest.mark.parametrize(
    "change, word",
    [
        (lambda b: (b.audio[:, :30], b.initial, b.style), "frames"),
        (lambda b: (b.audio[..., :8], b.initial, b.style), "audio"),
        (lambda b: (b.audio, b.initial[:, :5], b.style), "initial"),
        (lambda b: (b.audio, b.initial, b.style[:1]), "batch"),
        (lambda b: (b.audio * float("nan"), b.initial, b.style), "NaN"),
    ],
)
def test_mismatched_inputs_raise_one_value_error(tiny, change, word):
    b = make_talking(2, 0)
    a, i, s = change(b)
    with pytest.raises(ValueError, match=word):
        generate(tiny["emodiff"], a, i, s, steps=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        generate(tiny["emodiff"], b.audio, b.initial, b.style, guidance_scale=float("inf"))


# ---- the judges ----


def test_lse_and_frechet():
    d = torch.tensor([[0.9, 0.5, 0.2, 0.6, 0.8]])
    out = lse_from_distances(d)
    assert torch.allclose(out["lse_d"], torch.tensor([0.2])) and torch.allclose(out["lse_c"], torch.tensor([0.4]))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, generator=g)
    assert abs(frechet_distance(a, a)) < 1e-9
    assert frechet_distance(a, a + 1.0) == pytest.approx(3.0, rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a, a[:, :2])


def test_sync_scorer_learns_sync_in_a_short_run():
    """A 150-step contrastive run already prefers in-sync mouths: LSE-C on the true pairs above shuffled audio's."""
    torch.manual_seed(0)
    scorer = SyncScorer()
    opt = torch.optim.Adam(scorer.parameters(), 3e-3)
    for step in range(150):
        b = make_talking(16, 1000 + step)
        loss = scorer.loss(b.audio, b.coeffs[..., MOUTH_DIMS])
        opt.zero_grad()
        loss.backward()
        opt.step()
    b = make_talking(64, 5)
    true = scorer.lse(b.audio, b.coeffs[..., MOUTH_DIMS])
    shuffled = scorer.lse(b.audio.roll(1, 0), b.coeffs[..., MOUTH_DIMS])
    assert float(true["lse_c"].mean()) > 2 * float(shuffled["lse_c"].mean())
    assert float(true["lse_d"].mean()) < float(shuffled["lse_d"].mean())
    assert float(true["offset"].abs().float().mean()) < 1.0


# ---- the verdicts: each can say "not reproduced" ----


def _s(mean, spread=None):
    spread = min(0.01, 0.1 * abs(mean)) if spread is None else spread
    return {
        "mean": mean,
        "min": mean - spread,
        "max": mean + spread,
        "std": spread / 2,
        "per_seed": [mean - spread, mean, mean + spread],
    }


def _tables(
    emo_expr=0.95,
    lstm_expr=0.4,
    emo_fd=1.0,
    lstm_fd=3.0,
    lip=(0.02, 0.005),
    acc=(0.9, 0.9),
    strength=(0.6, 0.8),
    div=(1.0, 0.6),
    lse_c=(0.5, 0.45),
):
    def row(name, **m):
        base = {
            k: _s(0.5)
            for k in (
                "lip_error",
                "lse_c",
                "lse_d",
                "emotion_accuracy",
                "emotion_strength",
                "fd",
                "expressiveness",
                "diversity",
            )
        }
        base.update({k: _s(v) for k, v in m.items()})
        return {"setting": name, "metrics": base}

    return {
        "models": {
            "rows": [
                row("Real clips", lse_c=lse_c[0]),
                row("LSTM regressor", expressiveness=lstm_expr, fd=lstm_fd),
                row("EmoDiff", expressiveness=emo_expr, fd=emo_fd, lip_error=lip[0], emotion_accuracy=acc[0]),
                row("EmoDiff + lip refiner", lip_error=lip[1], emotion_accuracy=acc[1], lse_c=lse_c[1]),
            ]
        },
        "guidance": {
            "rows": [
                {
                    "setting": "w = 1",
                    "w": 1.0,
                    "metrics": {"emotion_intensity": _s(strength[0]), "diversity": _s(div[0])},
                },
                {
                    "setting": "w = 3",
                    "w": 3.0,
                    "metrics": {"emotion_intensity": _s(strength[1]), "diversity": _s(div[1])},
                },
            ]
        },
    }


def test_verdicts_reproduced_on_a_table_that_shows_the_claims():
    t = _tables()
    assert [v(t)["outcome"] for v in (verdict_expressive, verdict_refiner, verdict_guidance, verdict_floor)] == [
        "reproduced"
    ] * 4


@pytest.mark.parametrize(
    "verdict, kwargs",
    [
        (verdict_expressive, {"emo_expr": 0.3}),
        (verdict_expressive, {"emo_fd": 9.0}),
        (verdict_refiner, {"lip": (0.01, 0.03)}),
        (verdict_refiner, {"acc": (0.9, 0.7)}),
        (verdict_guidance, {"strength": (0.8, 0.6)}),
        (verdict_guidance, {"div": (0.6, 1.0)}),
        (verdict_floor, {"lse_c": (0.5, 0.2)}),
        (verdict_floor, {"acc": (0.9, 0.5)}),
    ],
)
def test_verdicts_say_not_reproduced(verdict, kwargs):
    assert verdict(_tables(**kwargs))["outcome"] == "not reproduced"


@pytest.mark.parametrize(
    "verdict, kwargs",
    [
        (verdict_expressive, {"emo_expr": 0.405}),
        (verdict_refiner, {"lip": (0.02, 0.019)}),
        (verdict_guidance, {"strength": (0.6, 0.605)}),
    ],
)
def test_verdicts_say_inconclusive_when_ranges_overlap(verdict, kwargs):
    assert verdict(_tables(**kwargs))["outcome"] == "inconclusive"


# ---- the widget, without a browser ----


def test_widget_controls_change_what_the_learner_sees(tiny):
    from bytecourse.dreamtalk.judges import EmotionClassifier
    from bytecourse.dreamtalk.widget import talking_face_explorer, talking_view

    models = dict(tiny, emotion=EmotionClassifier().eval())
    view = talking_face_explorer(models)
    first = view.refresh()
    assert first["settings"]["emotion"] == "happy" and first["coeffs"].shape == (40, 11)
    view.controls["emotion"].value = "sad"
    sad = view.result
    assert sad["settings"]["emotion"] == "sad" and not torch.equal(sad["truth"], first["truth"])
    view.controls["refiner"].value = False
    assert view.result["settings"]["refiner"] is False
    assert not torch.equal(view.result["coeffs"][:, :4], sad["coeffs"][:, :4])
    view.controls["system"].value = "LSTM"
    assert view.result["settings"]["system"] == "LSTM"
    with pytest.raises(ValueError, match="intensity"):
        talking_view(models, intensity=1.5)
    with pytest.raises(ValueError, match="emotion"):
        talking_view(models, emotion="bored")
