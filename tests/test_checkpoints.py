import json

import pytest
import torch

from bytecourse import checkpoints
from bytecourse.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

ENTRY = {
    "chapter": "primer",
    "config": {"a": 1},
    "command": "python -m bytecourse train primer",
    "seed": 0,
    "device": "cpu",
    "wall_time_s": 1.0,
}


@pytest.fixture
def tmp_data(tmp_path, monkeypatch):
    monkeypatch.setenv("BYTECOURSE_DATA", str(tmp_path))
    return tmp_path


def test_roundtrip_fp16_and_manifest(tmp_data):
    sd = {"w": torch.randn(4, 4), "step": torch.tensor([3])}
    save_checkpoint("toy", sd, ENTRY)
    loaded, entry = load_checkpoint("toy")
    assert torch.allclose(loaded["w"], sd["w"].half().float()) and loaded["w"].dtype == torch.float32
    assert torch.equal(loaded["step"], sd["step"])
    from safetensors import safe_open

    with safe_open(str(tmp_data / "toy.safetensors"), "pt") as f:
        assert f.get_tensor("w").dtype == torch.float16
    for key in ("sha256", "command", "seed", "git_commit", "device", "wall_time_s", "config", "bytes"):
        assert key in entry


def test_tampered_or_missing_file_gives_one_clear_error(tmp_data):
    save_checkpoint("toy", {"w": torch.randn(8)}, ENTRY)
    path = tmp_data / "toy.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="python -m bytecourse train primer"):
        load_checkpoint("toy")
    path.unlink()
    with pytest.raises(CheckpointError, match="missing.*python -m bytecourse train primer"):
        load_checkpoint("toy")
    with pytest.raises(CheckpointError, match="not listed"):
        load_checkpoint("never-trained")


def test_budget_and_required_fields(tmp_data):
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint("toy", {"w": torch.randn(2)}, {"chapter": "primer"})
    with pytest.raises(ValueError, match="budget"):
        save_checkpoint("big", {"w": torch.randn(3_100_000)}, ENTRY)
    assert not (tmp_data / "big.safetensors").exists()


def test_shipped_data_folder_is_consistent():
    """data/ holds only manifest-listed files (plus the manifest), each ≤6 MB with a matching hash; ≤48 MB in all."""
    data = checkpoints.data_dir()
    manifest = json.loads((data / "manifest.json").read_text())
    listed = {e["file"] for e in manifest["checkpoints"].values()}
    present = {p.name for p in data.iterdir() if p.is_file()} - {"manifest.json"}
    assert present == listed
    total = 0
    for name, e in manifest["checkpoints"].items():
        p = data / e["file"]
        assert p.stat().st_size <= checkpoints.MAX_CHECKPOINT_BYTES and p.stat().st_size == e["bytes"]
        assert checkpoints.sha256_file(p) == e["sha256"], name
        for key in ("chapter", "config", "command", "seed", "git_commit", "device", "wall_time_s"):
            assert key in e, (name, key)
        assert e["command"].startswith("python -m bytecourse train")
        total += p.stat().st_size
    assert total <= 48 * 2**20


def test_tables_are_stored_with_the_checkpoints_they_were_computed_from(tmp_data):
    """``eval`` stores a target's tables under manifest["tables"][key] with its command, commit and the sha256 of
    every checkpoint it read; a checkpoint-less, training-free chapter (SAG) is no exception."""
    from bytecourse import registry

    save_checkpoint("primer_unet", {"w": torch.ones(2)}, ENTRY)
    save_checkpoint("shapes_classifier", {"w": torch.ones(3)}, ENTRY)
    registry.store_tables("sag", {"t": {"rows": []}}, "python -m bytecourse eval sag", commit="abc")
    entry = checkpoints.read_manifest()["tables"]["sag"]
    shas = {n: checkpoints.manifest_entry(n)["sha256"] for n in ("primer_unet", "shapes_classifier")}
    assert entry == {
        "tables": {"t": {"rows": []}},
        "eval_command": "python -m bytecourse eval sag",
        "eval_git_commit": "abc",
        "computed_from": shas,
    }
    assert registry.stored_tables("sag") == {"t": {"rows": []}}


def test_shipped_chapter_tables_record_how_they_were_made():
    from bytecourse import registry

    for chapter, entry in checkpoints.read_manifest().get("tables", {}).items():
        assert entry["eval_command"].startswith(f"python -m bytecourse eval {chapter}"), chapter
        assert entry["eval_git_commit"] and entry["tables"], chapter
        assert set(entry["computed_from"]) == set(registry.target(chapter).table_inputs), chapter
        assert registry.table_status(chapter) == "current", chapter


def _record_many(worker: int) -> None:
    for i in range(5):
        checkpoints.record_run(
            "toy", f"w{worker}/r{i}", {"command": "x", "config": {}, "seed": i, "device": "cpu", "wall_time_s": 0.0}
        )


def test_side_by_side_jobs_do_not_drop_each_others_manifest_entries(tmp_data):
    """Two training jobs run side by side (one thread each) may finish together: every record must survive."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(w,)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(checkpoints.recorded_runs("toy")) == 20
