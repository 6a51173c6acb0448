"""Shipped checkpoints: fp16 safetensors (never pickle) plus one ``data/manifest.json``.

Every entry records the config, the exact command, seed, git commit, device, wall time, training metrics and the
file's sha256. Loading verifies the hash; a missing or tampered file raises :class:`CheckpointError` saying how to
regenerate it. The tables of ``python -m bytecourse eval`` sit beside the entries, under ``tables.<target>``, each
tied to the sha256 of the checkpoints it was computed from (:mod:`bytecourse.registry`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MAX_CHECKPOINT_BYTES = 6_000_000


class CheckpointError(ValueError):
    """A checkpoint is missing, unlisted or does not match its manifest hash."""


def data_dir() -> Path:
    """``$BYTECOURSE_DATA`` if set, else the repository's ``data/`` folder."""
    env = os.environ.get("BYTECOURSE_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data"


def manifest_path() -> Path:
    return data_dir() / "manifest.json"


def read_manifest() -> dict:
    p = manifest_path()
    if not p.exists():
        return {"checkpoints": {}}
    try:
        manifest = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{p} is not valid JSON ({e}); restore it with `git checkout -- {p.name}` or regenerate it"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("checkpoints", {}), dict):
        raise CheckpointError(
            f"{p} must hold an object with a 'checkpoints' object; restore it with `git checkout -- {p.name}`"
        )
    manifest.setdefault("checkpoints", {})
    return manifest


def write_manifest(manifest: dict) -> None:
    p = manifest_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)  # atomic: a reader sees the old manifest or the new one, never half of one


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    """The current commit (with ``+dirty`` when the tree has uncommitted changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bytecourse"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextlib.contextmanager
def manifest_update():
    """Hold an exclusive lock on the manifest for a read-modify-write, so that two training jobs finishing at the
    same moment (e.g. two single-threaded runs side by side) cannot drop each other's entries."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): one job at a time
        yield
        return
    key = hashlib.sha256(str(data_dir().resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"bytecourse-manifest-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_checkpoint(name: str, state_dict: dict[str, torch.Tensor], entry: dict) -> Path:
    """Write ``data/<name>.safetensors`` in fp16 (float tensors) and its manifest entry.

    ``entry`` must hold at least ``chapter``, ``config``, ``command``, ``seed``, ``device`` and
    ``wall_time_s``; ``file``, ``sha256``, ``bytes``, ``git_commit`` and ``created`` are filled in here.
    """
    missing = {"chapter", "config", "command", "seed", "device", "wall_time_s"} - set(entry)
    if missing:
        raise ValueError(f"manifest entry for {name!r} lacks {sorted(missing)}")
    tensors = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state_dict.items()
    }
    path = data_dir() / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"name": name, "config": json.dumps(entry["config"])})
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        path.unlink()
        raise ValueError(f"checkpoint {name!r} is {size} bytes, over the {MAX_CHECKPOINT_BYTES}-byte budget")
    commit = entry.get("git_commit") or git_commit()
    with manifest_update():
        manifest = read_manifest()
        manifest["checkpoints"][name] = {
            **entry,
            "file": path.name,
            "sha256": sha256_file(path),
            "bytes": size,
            "git_commit": commit,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }  # tables computed from the old weights now read as stale until `python -m bytecourse eval` recomputes them
        write_manifest(manifest)
    return path


def record_run(target: str, name: str, record: dict) -> None:
    """Record a trained-and-evaluated run that is not shipped (an ablation arm, an extra training seed) under
    ``manifest["runs"][target][name]``: its command, config, seed, commit, device, wall time and metrics."""
    missing = {"command", "config", "seed", "device", "wall_time_s"} - set(record)
    if missing:
        raise ValueError(f"run record {target}/{name} lacks {sorted(missing)}")
    commit = record.get("git_commit") or git_commit()
    with manifest_update():
        manifest = read_manifest()
        manifest.setdefault("runs", {}).setdefault(target, {})[name] = {
            **record,
            "git_commit": commit,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        write_manifest(manifest)


def recorded_runs(target: str) -> dict[str, dict]:
    """Every run :func:`record_run` stored for ``target`` (name → record)."""
    return read_manifest().get("runs", {}).get(target, {})


REQUIRED_ENTRY_KEYS = ("file", "sha256", "command")


def manifest_entry(name: str) -> dict:
    entry = read_manifest()["checkpoints"].get(name)
    if entry is None:
        raise CheckpointError(
            f"checkpoint {name!r} is not listed in {manifest_path()}; regenerate it with "
            f"`python -m bytecourse train <chapter>` (see the README)"
        )
    missing = [k for k in REQUIRED_ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise CheckpointError(
            f"the manifest entry of {name!r} lacks {missing}; regenerate it with `python -m bytecourse train "
            "<chapter>`"
        )
    return entry


def checkpoint_path(entry: dict) -> Path:
    """The entry's file inside ``data/`` (a manifest ``file`` such as ``../../x`` is refused)."""
    root = data_dir().resolve()
    path = (root / entry["file"]).resolve()
    if path.parent != root:
        raise CheckpointError(f"manifest file entry {entry['file']!r} points outside {root}")
    return path


def load_checkpoint(name: str, dtype: torch.dtype = torch.float32) -> tuple[dict[str, torch.Tensor], dict]:
    """Verified load: ``(state_dict, manifest_entry)``. Float tensors are cast to ``dtype``."""
    entry = manifest_entry(name)
    path = checkpoint_path(entry)
    how = f"regenerate it with `{entry['command']}`"
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} is missing; {how}")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint file {path} does not match its manifest sha256 ({digest[:12]}… ≠ "
            f"{entry['sha256'][:12]}…): it was modified or corrupted; {how}"
        )
    tensors = load_file(str(path))
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}, entry


_HASHES: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def checkpoint_available(name: str) -> bool:
    """True if the checkpoint is listed, its file exists inside ``data/`` and matches its manifest sha256."""
    try:
        entry = manifest_entry(name)
        path = checkpoint_path(entry)
    except CheckpointError:
        return False
    return path.exists() and _cached_sha256(path) == entry["sha256"]


#: The argument list of the running ``python -m bytecourse ...`` command (set by ``cli.main``; None when the code is
#: called from Python), so a shipped checkpoint records the command that actually made it.
RUNNING_COMMAND: list[str] | None = None


def train_command(target: str) -> str:
    """The running ``python -m bytecourse train <target> ...`` command without the options that only split a run
    into parts (``--resume``, ``--max-minutes``): they describe how it was run, not what it computes. Outside the
    CLI: ``python -m bytecourse train <target> (called from Python)``."""
    import shlex

    if RUNNING_COMMAND is None:
        return f"python -m bytecourse train {target} (called from Python)"
    keep, skip = [], False
    for a in RUNNING_COMMAND:
        if skip:
            skip = False
            continue
        if a == "--max-minutes":
            skip = True
            continue
        if a == "--resume" or a.startswith("--max-minutes="):
            continue
        keep.append(a)
    return "python -m bytecourse " + shlex.join(keep)


def device_description(device) -> str:
    """ "cuda (<GPU name>)" or "cpu (<cores> cores, torch <version>)" for the manifest."""
    import os

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({os.cpu_count()} cores, torch {torch.__version__})"
