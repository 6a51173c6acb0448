"""A small slice of every chapter's stored tables, recomputed with the shipped weights and checked with the same
``check_slice`` (and tolerance) the notebooks use. Skipped where a checkpoint is not shipped."""

import pytest
import torch

from bytecourse import registry
from bytecourse.evaluation import check_slice


def _stored(key: str) -> dict:
    stored = registry.stored_tables(key)  # raises when stale
    if stored is None:
        pytest.skip(f"{key}: a checkpoint is not shipped")
    return stored


@pytest.fixture(scope="module")
def image_model():
    from bytecourse.checkpoints import checkpoint_available
    from bytecourse.diffusion.image_model import CHECKPOINT, load_image_model

    if not checkpoint_available(CHECKPOINT):
        pytest.skip("the primer checkpoint is not shipped")
    return load_image_model()[0]


def test_primer_slice(image_model):
    from bytecourse.primer import evaluate

    stored = _stored("primer")
    live = evaluate.live_slice(image_model, rows=("DDIM 5 steps", "CFG 3"))
    assert {k: len(t["rows"]) for k, t in live.items()} == {"steps": 1, "cfg": 1, "cfg_raw": 1}
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="primer")


def test_sag_slice(image_model):
    from bytecourse.sag import evaluate

    stored = _stored("sag")
    check_slice(
        evaluate.live_slice(image_model, tables=("style",), rows=("FreeDoM (= SAG n=1)",)),
        stored,
        evaluate.SLICE_TOLERANCE,
        target="sag",
    )


def test_adjointdpm_slice(image_model):
    from bytecourse.adjointdpm import evaluate

    stored = _stored("adjointdpm")
    check_slice(evaluate.live_slice(image_model, ns=(5,)), stored, evaluate.SLICE_TOLERANCE, target="adjointdpm")


def test_boximator_slice():
    from bytecourse.boximator import evaluate
    from bytecourse.boximator.train import load_base

    stored = _stored("boximator")
    live = evaluate.live_slice({"base": load_base()[0]}, rows=("Base video model",))
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="boximator")


def test_vistallama_slice():
    from bytecourse.vistallama import evaluate
    from bytecourse.vistallama.train import load_narrators

    stored = _stored("vistallama")
    check_slice(
        evaluate.live_slice(load_narrators(), rows=("edvt",)), stored, evaluate.SLICE_TOLERANCE, target="vistallama"
    )


def test_metaprompts_slice():
    from bytecourse.metaprompts import evaluate
    from bytecourse.metaprompts.train import SHIPPED, load_arm

    stored = _stored("metaprompts")
    live = evaluate.live_slice({"meta": load_arm("meta")[0]})
    assert SHIPPED and [r["setting"] for r in live["slice"]["rows"]] == ["meta prompts"]
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="metaprompts")


def test_dreamtalk_slice():
    from bytecourse.dreamtalk import evaluate
    from bytecourse.dreamtalk.train import load_models

    stored = _stored("dreamtalk")
    live = evaluate.live_slice(load_models(), rows=("LSTM regressor",))
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="dreamtalk")


def test_magicanimate_slice():
    from bytecourse.magicanimate import evaluate
    from bytecourse.magicanimate.train import load_models

    stored = _stored("magicanimate")
    live = evaluate.live_slice(load_models())
    assert [r["setting"] for r in live["slice"]["rows"]] == [evaluate.BASELINE, *evaluate.SLICE_ROWS]
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="magicanimate")


def test_magicvideo_slice():
    from bytecourse.magicvideo import evaluate
    from bytecourse.magicvideo.train import load_models

    stored = _stored("magicvideo")
    live = evaluate.live_slice(load_models(ablations=False), evaluate.stored_settings(stored))
    assert [r["setting"] for r in live["slice"]["rows"]] == ["cascade", "baseline"]
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="magicvideo")


def test_video_slice():
    from bytecourse.diffusion import video_eval
    from bytecourse.diffusion.videomotion import load_inflated_video_model

    stored = _stored("video")
    model, _, entry = load_inflated_video_model()
    with torch.no_grad():
        live = video_eval.live_slice(model, entry, "cpu", metrics=("colour", "direction"))
    check_slice(live, stored, video_eval.SLICE_TOLERANCE, target="video")


def test_cosa_slice():
    from bytecourse.cosa import evaluate
    from bytecourse.cosa.train import load_regime

    stored = _stored("cosa")
    live = {"slice": evaluate.slice_table({"k4_no_frame_embedding": load_regime("k4_no_frame_embedding")[0]})}
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="cosa")


def test_pixellm_slice():
    from bytecourse.pixellm import evaluate
    from bytecourse.pixellm.train import load_arm

    stored = _stored("pixellm")
    live = {"slice": evaluate.slice_table({"n1_l1": load_arm("n1_l1")[0]})}
    check_slice(live, stored, evaluate.SLICE_TOLERANCE, target="pixellm")
