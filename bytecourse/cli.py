"""``python -m bytecourse {train,eval,list} <target>``: the targets are declared in :mod:`bytecourse.registry`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from . import checkpoints


def _stage(value: str) -> int | str:
    """A stage number (``--stage 2``) or a stage name (``--stage i2v``)."""
    return _positive_int(value) if value.isdigit() else value


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {n}")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {value!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return x


def _device(value: str) -> str:
    from .device import default_device

    try:
        default_device(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def _list() -> int:
    """Every target, its checkpoints (size, and whether the file on disk matches its manifest hash) and whether its
    stored tables are current."""
    from .registry import TARGETS, table_status

    if not checkpoints.manifest_path().exists():
        print(
            f"no manifest at {checkpoints.manifest_path()}: nothing is shipped; train with `python -m bytecourse "
            "train "
            "<target>`",
            file=sys.stderr,
        )
        return 1
    entries = checkpoints.read_manifest()["checkpoints"]
    for t in TARGETS.values():
        print(f"{t.key:11s} {t.title}" + (f"  [notebooks/{t.notebook}]" if t.notebook else ""))
        for name in t.checkpoints:
            e = entries.get(name)
            if e is None:
                print(f"    {name:38s} not shipped  (train: python -m bytecourse train {t.key})")
                continue
            ok = "ok" if checkpoints.checkpoint_available(name) else "MISSING OR MODIFIED"
            print(
                f"    {name:38s} {e['bytes'] / 1e6:5.2f} MB  {ok:6s} {e['device']}  {e['wall_time_s']:.0f} s  "
                f"{e['command']}"
            )
        if t.evaluate is not None:
            print(f"    tables: {table_status(t.key)}  ({t.eval_command})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .registry import TARGETS, check_train_options, store_tables, target

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bytecourse", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="(re)generate a target's shipped checkpoints")
    tr.add_argument("target", choices=list(TARGETS))
    tr.add_argument(
        "--device", default=None, type=_device, help="auto (cuda → mps → cpu; the default), cpu, cuda, mps"
    )
    tr.add_argument("--steps", type=_positive_int, default=None, help="training steps (default: the target's config)")
    tr.add_argument("--seed", type=int, default=None, help="run seed (default 0)")
    tr.add_argument("--resume", action="store_true", help="continue from the run's state under runs/")
    tr.add_argument("--variant", default=None, help="which variant, for targets that train several (e.g. boximator)")
    tr.add_argument(
        "--stage",
        type=_stage,
        default=None,
        help="run only this training stage (multi-stage targets): its number, or its name (e.g. magicvideo's i2v)",
    )
    tr.add_argument(
        "--max-minutes", type=_positive_float, default=None, help="stop (resumably) after this many minutes"
    )
    ev = sub.add_parser("eval", help="compute a target's full tables and store them in data/manifest.json")
    ev.add_argument("target", choices=[k for k, t in TARGETS.items() if t.evaluate])
    ev.add_argument("--device", default="auto", type=_device)
    ev.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="evaluation seeds")
    ev.add_argument("--no-store", action="store_true", help="print the tables without writing the manifest")
    ev.add_argument("--part", default=None, help="compute only this part of the tables (targets split into parts)")
    sub.add_parser("list", help="every target, its checkpoints and whether its stored tables are current")
    options = parser.parse_args(argv)

    if options.cmd == "list":
        return _list()
    t = target(options.target)
    try:
        if options.cmd == "train":
            given = {
                k: getattr(options, k)
                for k in ("device", "steps", "seed", "resume", "variant", "stage", "max_minutes")
            }
            check_train_options(t, given)
            options.device = options.device or "auto"
            options.seed = 0 if options.seed is None else options.seed
            checkpoints.RUNNING_COMMAND = list(argv)
            summary = t.entry_point("train")(options)
            print(json.dumps(summary, indent=2))
            return 0
        if options.part is not None and options.part not in t.eval_parts:
            allowed = f"one of {', '.join(t.eval_parts)}" if t.eval_parts else "no --part (its tables are one run)"
            raise ValueError(f"--part {options.part!r} is not a part of {t.key}'s tables: it takes {allowed}")
        commit = (
            checkpoints.git_commit()
        )  # the code that computes the tables (not whatever HEAD is when they are stored)
        tables = t.entry_point("eval")(options)
    except ValueError as e:  # bad options or a missing/stale checkpoint: one clear line, not a traceback
        parser.exit(2, f"python -m bytecourse {options.cmd} {options.target}: error: {e}\n")
    finally:
        checkpoints.RUNNING_COMMAND = None
    if not options.no_store:
        store_tables(t.key, tables, "python -m bytecourse " + shlex.join(argv), commit, options.part)
    print(json.dumps(tables, indent=2))
    return 0
