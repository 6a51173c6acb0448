import pytest

from bytecourse.checkpoints import checkpoint_available
from bytecourse.diffusion import ImageDenoiser, UNetConfig, primer
from bytecourse.evaluation import compare_slice, format_table

TINY = UNetConfig(image_size=16, widths=(16, 32), attn_levels=(1,), text_dim=16, text_layers=1, heads=2)






def test_eval_table_structure_and_slice_check():
    model = ImageDenoiser(TINY).eval()
    settings = [dict(name="DDIM 2 steps", num_objects=1, steps=2, cfg=3.0, sampler="ddim")]
    table = primer.eval_rows(model, settings, seeds=[0, 1], n=4, progress=False)
    row = table["rows"][0]
    assert set(row["metrics"]) == {"colour", "shape", "exact", "realism"}
    assert len(row["metrics"]["realism"]["per_seed"]) == 2
    live = primer.eval_rows(model, settings, seeds=[1], n=4, progress=False)
    assert compare_slice(live, table, seed_index=1, tolerance=1e-6) == []
    assert "DDIM 2 steps" in format_table(table)


def test_widget_callbacks_without_a_browser():
    model = ImageDenoiser(TINY).eval()
    view = primer.primer_explorer(model, n=2)
    view.refresh()
    assert view.calls == 1 and view.result["cfg_scale"] == primer.DEFAULT_CFG
    view.controls["cfg_scale"].value = 6.0  # what a learner's slider drag does
    assert view.calls == 2 and view.result["cfg_scale"] == 6.0 and view.result["nfe"] == 2 * primer.DEFAULT_STEPS
    view.controls["steps"].value = 5
    assert view.calls == 3 and view.result["steps"] == 5
    view.controls["caption"].value = "a blue square"
    assert view.result["caption"] == "a blue square" and len(view.result["images"]) == 2
    assert "not attempted" not in view.status.value and view.status.value == ""  # rendered without an error


def test_quick_train_runs_the_same_code():
    model, summary = primer.quick_train_primer(steps=2, progress=False, device="cpu")
    assert isinstance(model, ImageDenoiser) and not model.training
    assert len(summary["losses"]) == 2 and summary["step"] == 2


@pytest.mark.skipif(not checkpoint_available(primer.CHECKPOINT), reason="the primer checkpoint is not shipped yet")
def test_shipped_primer_meets_its_target():
    """The issue's bar: ≥90% colour and shape accuracy on one-object captions at a sensible CFG scale,
    clean background by the realism score — recomputed here on one seed, and read from the stored tables."""
    model, entry = primer.load_primer_model()
    caps = primer.eval_captions(seed=0, num_objects=1, n=32)
    m = primer.measure(primer.sample_captions(model, caps, steps=20, cfg_scale=primer.DEFAULT_CFG, seed=primer.EVAL_SEED_OFFSET), caps)
    assert m["colour"] >= 0.9 and m["shape"] >= 0.9 and m["realism"] >= 0.9, m
    row = next(r for r in entry["tables"]["cfg"]["rows"] if r["setting"] == f"CFG {primer.DEFAULT_CFG:g}")
    assert row["metrics"]["colour"]["min"] >= 0.9 and row["metrics"]["shape"]["min"] >= 0.9


def test_bad_sampler_name():
    with pytest.raises(ValueError):
        primer.sample_captions(ImageDenoiser(TINY), ["a red circle"], sampler="euler")
