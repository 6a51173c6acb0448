"""The registry behind ``python -m bytecourse``: options a target does not take are refused, training options are
honoured (and nothing outside the data directory is written), stored tables are tied to the weights on disk."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bytecourse import checkpoints, registry, seeds
from bytecourse.evaluation import SliceMismatch, check_slice, split_by_recipe, summarise

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


def _copy_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    return data


def test_every_target_is_declared_with_entry_points_that_exist():
    import importlib

    for t in registry.TARGETS.values():
        for spec in (t.train, t.evaluate):
            if spec is not None:
                module, function = spec.split(":")
                assert callable(getattr(importlib.import_module(module), function)), spec
        if t.notebook:
            assert (REPO / "notebooks" / t.notebook).exists(), t.notebook
        assert set(t.table_inputs) <= set(json.loads((DATA / "manifest.json").read_text())["checkpoints"]), t.key


def test_vistallama_train_honours_max_minutes_and_device(tmp_path):
    """`train vistallama --max-minutes 1 --device cpu` against a temporary data directory stops resumably after about
    a minute, on the CPU, and leaves the repository's data/ untouched."""
    data = _copy_data(tmp_path)
    before = {p.name: checkpoints.sha256_file(p) for p in DATA.iterdir()}
    env = {
        "BYTECOURSE_DATA": str(data),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bytecourse", "train", "vistallama", "--max-minutes", "1", "--device", "cpu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout[out.stdout.index("{") :])
    assert summary["lm"]["device"] == "cpu"
    assert not summary["lm"]["finished"] and "--resume" in summary["stopped"]
    assert summary["lm"]["wall_time_s"] < 75  # one minute, plus at most one step
    assert (tmp_path / "runs" / "vistallama" / "lm" / "state.json").exists()
    assert {p.name: checkpoints.sha256_file(p) for p in DATA.iterdir()} == before


@pytest.fixture
def tmp_data(tmp_path, monkeypatch):
    data = _copy_data(tmp_path)
    monkeypatch.setenv("BYTECOURSE_DATA", str(data))
    return data


def _replace_primer_with_another_valid_checkpoint(data: Path) -> None:
    state, entry = checkpoints.load_checkpoint("primer_unet")
    state = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    manifest = checkpoints.read_manifest()
    keep = {
        k: v
        for k, v in manifest["checkpoints"]["primer_unet"].items()
        if k not in ("file", "sha256", "bytes", "git_commit", "created")
    }
    checkpoints.save_checkpoint("primer_unet", state, keep)
    assert checkpoints.checkpoint_available("primer_unet")


@pytest.mark.skipif(not (DATA / "primer_unet.safetensors").exists(), reason="the primer checkpoint is not shipped")
def test_tables_computed_from_other_weights_raise_naming_the_table_and_the_command(tmp_data):
    assert registry.stored_tables("sag") is not None and registry.stored_tables("adjointdpm") is not None
    _replace_primer_with_another_valid_checkpoint(tmp_data)
    for key in ("sag", "adjointdpm", "primer"):
        with pytest.raises(registry.StaleTablesError, match=rf"stale tables '{key}'.*python -m bytecourse eval {key}"):
            registry.stored_tables(key)
        assert registry.table_status(key) == "stale"


def test_a_part_of_the_tables_replaces_only_its_own_keys(tmp_data):
    """`eval sag --part fronts` stores its tables beside the other part's and records its own command."""
    before = checkpoints.read_manifest()["tables"]["sag"]
    registry.store_tables(
        "sag", {"style_sweep": {"rows": []}}, "python -m bytecourse eval sag --part fronts", "abc", "fronts"
    )
    after = checkpoints.read_manifest()["tables"]["sag"]
    assert after["tables"]["style_sweep"] == {"rows": []}
    assert after["tables"]["estimate"] == before["tables"]["estimate"]
    assert after["parts"]["fronts"] == {
        "eval_command": "python -m bytecourse eval sag --part fronts",
        "eval_git_commit": "abc",
    }
    assert after["eval_command"] == before["eval_command"]


def test_tables_missing_while_their_checkpoints_are_there_raise(tmp_data):
    manifest = checkpoints.read_manifest()
    del manifest["tables"]["vistallama"]
    checkpoints.write_manifest(manifest)
    with pytest.raises(registry.StaleTablesError, match="no stored tables for 'vistallama'"):
        registry.stored_tables("vistallama")


def test_tables_of_a_missing_checkpoint_read_as_none(tmp_data):
    (tmp_data / "vistallama_lm.safetensors").unlink()
    assert registry.stored_tables("vistallama") is None
    assert registry.table_status("vistallama") == "no checkpoint"


def _table(value: float) -> dict:
    return {"rows": [{"setting": "a", "metrics": summarise([{"m": value}])}]}


def test_check_slice_raises_outside_the_tolerance_and_names_metric_live_and_stored():
    stored = {"t": _table(0.50)}
    assert check_slice({"t": _table(0.52)}, stored, 0.05, target="primer").startswith("live slice matches")
    with pytest.raises(SliceMismatch, match=r"t / a / m: live 0\.600 vs stored 0\.500"):
        check_slice({"t": _table(0.60)}, stored, 0.05, target="primer")
    with pytest.raises(SliceMismatch, match="no such stored table"):
        check_slice({"u": _table(0.5)}, stored, 0.05, target="primer")
    assert "trained a short run" in check_slice({"t": _table(0.6)}, None, 0.05, target="primer")


def test_check_slice_tolerance_is_relative_above_one():
    """Absolute for values up to 1; relative beyond (a gradient error ratio of ~113 carries thread-count rounding)."""
    stored = {"t": _table(113.104)}
    assert check_slice({"t": _table(113.111)}, stored, 1e-3, target="adjointdpm").startswith("live slice matches")
    with pytest.raises(SliceMismatch):
        check_slice({"t": _table(113.3)}, stored, 1e-3, target="adjointdpm")
    with pytest.raises(SliceMismatch):
        check_slice({"t": _table(0.503)}, {"t": _table(0.5)}, 1e-3, target="adjointdpm")


def test_seed_streams_never_overlap():
    spans = sorted((start, start + width, name) for name, (start, width) in seeds.STREAMS.items())
    for (a0, a1, a), (b0, _, b) in zip(spans, spans[1:]):
        assert a1 <= b0, f"{a} [{a0}, {a1}) overlaps {b} from {b0}"
    assert spans[0][0] > 7000  # the longest single-seed training stream (the primer's 7,000 steps) ends before


def test_seeded_init_leaves_the_global_generator_alone():
    from bytecourse.trainer import seeded_init

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = seeded_init(5, lambda: torch.nn.Linear(3, 3))
    b = seeded_init(5, lambda: torch.nn.Linear(3, 3))
    assert torch.equal(a.weight, b.weight)
    assert torch.equal(torch.rand(3), expected)


def test_split_by_recipe_keeps_runs_of_todays_budget_and_names_the_rest():
    runs = {
        "a/seed0": {"config": {"steps": 3000, "lr": 1e-3}},
        "a/seed1": {"config": {"steps": 1000}},
        "b/seed0": {"config": {"lr": 1e-3}},  # recorded before the field existed: an earlier recipe
        "b/seed1": {},
    }
    current, stale = split_by_recipe(runs, {"steps": 3000})
    assert list(current) == ["a/seed0"] and stale == ["a/seed1", "b/seed0", "b/seed1"]
    assert split_by_recipe(runs, {}) == (runs, [])
