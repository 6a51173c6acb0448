"""``python -m bytecourse {train,eval,list} <chapter>``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from . import checkpoints

CHAPTERS = {
    "primer": "bytecourse.diffusion.primer",
    "classifier": "bytecourse.diffusion.classifier",
    "video": "bytecourse.diffusion.videomotion",
    "sag": "bytecourse.sag.chapter",
    "adjointdpm": "bytecourse.adjointdpm.chapter",
    "boximator": "bytecourse.boximator.chapter",
    "vistallama": "bytecourse.vistallama.chapter",
}


def _chapter_module(key: str):
    import importlib

    if key not in CHAPTERS:
        raise SystemExit(f"unknown chapter {key!r}; available: {', '.join(CHAPTERS)}")
    return importlib.import_module(CHAPTERS[key])


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bytecourse", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="(re)generate a chapter's shipped checkpoint")
    tr.add_argument("chapter", choices=sorted(CHAPTERS))
    tr.add_argument("--device", default="auto", type=_device, help="auto (cuda → mps → cpu), cpu, cuda, mps")
    tr.add_argument("--steps", type=_positive_int, default=None, help="training steps (default: the chapter's config)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--resume", action="store_true", help="continue from runs/<chapter>/state.*")
    tr.add_argument("--variant", default=None, help="which variant, for chapters that train several (e.g. boximator)")
    tr.add_argument("--stage", type=_positive_int, default=None, help="run only this training stage (multi-stage chapters)")
    tr.add_argument("--max-minutes", type=_positive_float, default=None, help="stop (resumably) after this many minutes")
    ev = sub.add_parser("eval", help="compute a chapter's full tables and store them in data/manifest.json")
    ev.add_argument("chapter", choices=sorted(CHAPTERS))
    ev.add_argument("--device", default="auto", type=_device)
    ev.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="evaluation seeds")
    ev.add_argument("--no-store", action="store_true", help="print the tables without writing the manifest")
    sub.add_parser("list", help="list the shipped checkpoints")
    args = parser.parse_args(argv)

    if args.cmd == "list":
        if not checkpoints.manifest_path().exists():
            print(f"no manifest at {checkpoints.manifest_path()}: nothing is shipped; train with `python -m bytecourse train <chapter>`",
                  file=sys.stderr)
            return 1
        entries = checkpoints.read_manifest()["checkpoints"]
        if not entries:
            print(f"{checkpoints.manifest_path()} lists no checkpoints")
        for name, e in entries.items():
            print(f"{name:24s} {e['chapter']:12s} {e['bytes'] / 1e6:5.2f} MB  {e['device']}  {e['wall_time_s']:.0f}s  {e['command']}")
        return 0
    module = _chapter_module(args.chapter)
    try:
        if args.cmd == "train":
            summary = module.cli_train(args)
            print(json.dumps(summary, indent=2))
            return 0
        commit = checkpoints.git_commit()  # the code that computes the tables (not whatever HEAD is when they are stored)
        tables = module.cli_eval(args)
    except ValueError as e:  # bad options or a missing/stale checkpoint: one clear line, not a traceback
        parser.exit(2, f"python -m bytecourse {args.cmd} {args.chapter}: error: {e}\n")
    if not args.no_store:
        command = "python -m bytecourse " + shlex.join(argv)
        if getattr(module, "CHECKPOINT", None):
            checkpoints.store_tables(module.CHECKPOINT, tables, command, commit)
        else:
            checkpoints.store_chapter_tables(args.chapter, tables, command, commit)
    print(json.dumps(tables, indent=2))
    return 0
