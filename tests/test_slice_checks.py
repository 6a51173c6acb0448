"""Each notebook's live-slice check can fail: run under nbmake against a data directory whose stored table is
perturbed, the notebook stops at its ``check_slice`` cell with a :class:`~bytecourse.evaluation.SliceMismatch`.

(The unit tests of each chapter's slice against the real stored tables live in ``test_live_slices.py``.)"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CASES = {  # notebook: (target, stored table its slice reads)
    "00_primer.ipynb": ("primer", "steps"),
    "01_sag.ipynb": ("sag", "estimate"),
    "02_adjointdpm.ipynb": ("adjointdpm", "fidelity_first_sample"),
    "03_metaprompts.ipynb": ("metaprompts", "slice"),
    "04_boximator.ipynb": ("boximator", "table1"),
    "05_magicanimate.ipynb": ("magicanimate", "slice"),
    "06_magicvideo.ipynb": ("magicvideo", "slice"),
    "07_dreamtalk.ipynb": ("dreamtalk", "models"),
    "08_cosa.ipynb": ("cosa", "slice"),
    "09_vistallama.ipynb": ("vistallama", "hallucination"),
    "10_pixellm.ipynb": ("pixellm", "slice"),
}


def perturbed_data(tmp_path: Path, target: str, table: str, shift: float = 0.5) -> Path:
    """A copy of data/ in which every seed-0 value of ``target``'s stored ``table`` is moved by ``shift``."""
    data = tmp_path / "data"
    shutil.copytree(REPO / "data", data)
    manifest = json.loads((data / "manifest.json").read_text())
    for row in manifest["tables"][target]["tables"][table]["rows"]:
        for stat in row["metrics"].values():
            stat["per_seed"][0] += shift
    (data / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return data


@pytest.mark.slow
@pytest.mark.parametrize("notebook", sorted(CASES))
def test_a_perturbed_stored_table_fails_the_notebook_at_its_slice_check(notebook, tmp_path):
    target, table = CASES[notebook]
    if not (REPO / "data" / "manifest.json").exists():
        pytest.skip("no shipped data")
    data = perturbed_data(tmp_path, target, table)
    env = os.environ | {"BYTECOURSE_DATA": str(data)}  # IPYTHONDIR (network guard, watchdog) is inherited
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "notebooks" / notebook),
            "--nbmake",
            "--nbmake-timeout=900",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            f"--rootdir={tmp_path}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    assert "SliceMismatch" in log and "check_slice" in log, log[-3000:]
    assert f"{table} / " in log and "live" in log and "stored" in log, log[-3000:]
