"""Every target of ``python -m bytecourse {train,eval,list}``, declared once.

A :class:`Target` is a chapter (``primer``, ``sag``, …) or a shared model (``video``, ``classifier``): its title, its
notebook, the checkpoints it ships, the checkpoints its stored tables are computed from, where its train and eval
entry points live (imported only when called, so this substrate module never imports a chapter) and the training
options it supports. ``cli.py`` reads nothing else.

Stored tables live in ``data/manifest.json`` under ``tables.<key>`` with the sha256 of every checkpoint they were
computed from; :func:`stored_tables` refuses tables whose checkpoints have changed since.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from . import checkpoints

COMMON_OPTIONS = frozenset({"device", "steps", "seed", "resume", "max_minutes"})


class StaleTablesError(checkpoints.CheckpointError):
    """Stored tables are missing although their checkpoints are there (``kind="missing"``), or were computed from
    other weights than the ones on disk (``kind="stale"``)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    key: str
    title: str
    notebook: str | None
    checkpoints: tuple[str, ...]  # the files ``train`` writes
    table_inputs: tuple[str, ...]  # the checkpoints ``eval`` reads (its tables are tied to their sha256)
    train: str | None  # "module:function", called with the parsed options; None: nothing to train
    evaluate: str | None  # "module:function" returning the tables
    train_options: frozenset[str] = COMMON_OPTIONS
    variants: tuple[str, ...] = ()
    stages: int = 0  # > 0: ``--stage k`` runs one stage of a multi-stage schedule
    stage_names: tuple[str, ...] = ()  # named stages: ``--stage <name>`` (e.g. magicvideo's i2v, v2v, vfi)
    no_train_reason: str = ""
    eval_parts: tuple[str, ...] = ()  # ``eval --part p`` computes and stores only part p's tables (each ≤ 45 min)

    @property
    def eval_command(self) -> str:
        return f"python -m bytecourse eval {self.key}"

    def entry_point(self, which: str):
        spec = self.train if which == "train" else self.evaluate
        if spec is None:
            raise ValueError(f"{self.key}: {self.no_train_reason or f'nothing to {which}'}")
        module, function = spec.split(":")
        return getattr(importlib.import_module(module), function)


_ALL = (
    Target(
        "primer",
        "Primer: DDPM, DDIM, classifier-free guidance",
        "00_primer.ipynb",
        ("primer_unet",),
        ("primer_unet",),
        "bytecourse.primer.train:cli_train",
        "bytecourse.primer.evaluate:cli_eval",
    ),
    Target(
        "sag",
        "SAG — symplectic adjoint guidance",
        "01_sag.ipynb",
        (),
        ("primer_unet", "shapes_classifier"),
        None,
        "bytecourse.sag.evaluate:cli_eval",
        frozenset(),
        no_train_reason="SAG is training-free: nothing to train (its classifier: `python -m bytecourse train "
        "classifier`)",
        eval_parts=("methods", "fronts"),
    ),
    Target(
        "adjointdpm",
        "AdjointDPM — adjoint gradients through the sampler",
        "02_adjointdpm.ipynb",
        (),
        ("primer_unet", "shapes_classifier"),
        None,
        "bytecourse.adjointdpm.evaluate:cli_eval",
        frozenset(),
        no_train_reason="AdjointDPM's applications optimise at run time: nothing to train",
        eval_parts=("fidelity", "applications"),
    ),
    Target(
        "boximator",
        "Boximator — box and trajectory control for video",
        "04_boximator.ipynb",
        ("boximator_full", "boximator_no_self_tracking", "boximator_unfrozen"),
        ("video_motion", "boximator_full", "boximator_no_self_tracking", "boximator_unfrozen"),
        "bytecourse.boximator.train:cli_train",
        "bytecourse.boximator.evaluate:cli_eval",
        COMMON_OPTIONS | {"variant", "stage"},
        variants=("full", "no_self_tracking", "unfrozen"),
        stages=3,
        eval_parts=("fixes",),
    ),
    Target(
        "vistallama",
        "Vista-LLaMA — equal-distance visual tokens",
        "09_vistallama.ipynb",
        (
            "vistallama_lm",
            "vistallama_projector_rope",
            "vistallama_projector_edvt",
            "vistallama_projector_rope_independent",
            "vistallama_projector_edvt_independent",
        ),
        (
            "vistallama_lm",
            "vistallama_projector_rope",
            "vistallama_projector_edvt",
            "vistallama_projector_rope_independent",
            "vistallama_projector_edvt_independent",
        ),
        "bytecourse.vistallama.train:cli_train",
        "bytecourse.vistallama.evaluate:cli_eval",
        COMMON_OPTIONS | {"variant"},
        variants=("rope", "edvt", "rope_independent", "edvt_independent", "rope_select", "edvt_select"),
    ),
    Target(
        "pixellm",
        "PixelLM — a language model that answers with masks",
        "10_pixellm.ipynb",
        ("pixellm_clip", "pixellm_llava", "pixellm_n3_l2", "pixellm_n1_l1", "pixellm_lisa"),
        ("pixellm_clip", "pixellm_llava", "pixellm_n3_l2", "pixellm_n1_l1", "pixellm_lisa"),
        "bytecourse.pixellm.train:cli_train",
        "bytecourse.pixellm.evaluate:cli_eval",
        COMMON_OPTIONS | {"variant", "stage"},
        variants=("n1_l1", "n2_l1", "n3_l1", "n1_l2", "n2_l2", "n3_l2", "n3_l2_refine", "lisa"),
        stages=2,
    ),
    Target(
        "metaprompts",
        "Meta Prompts — learnable prompts turn a diffusion UNet into a perception model",
        "03_metaprompts.ipynb",
        ("metaprompts_pretrain", "metaprompts_loops_3", "metaprompts_meta"),
        ("primer_unet", "metaprompts_pretrain", "metaprompts_loops_3", "metaprompts_meta"),
        "bytecourse.metaprompts.train:cli_train",
        "bytecourse.metaprompts.evaluate:cli_eval",
        COMMON_OPTIONS | {"variant", "stage"},
        variants=(
            "null",
            "class_names",
            "meta",
            "loops_1",
            "loops_2",
            "loops_3",
            "random_init",
            "conv",
            "loops_1_full",
            "loops_3_full",
        ),
        stages=1,
    ),
    Target(
        "dreamtalk",
        "DREAM-Talk — diffusion over expression sequences, lips refined to the audio",
        "07_dreamtalk.ipynb",
        ("dreamtalk_sync", "dreamtalk_emotion", "dreamtalk_emodiff", "dreamtalk_lstm", "dreamtalk_refiner"),
        ("dreamtalk_sync", "dreamtalk_emotion", "dreamtalk_emodiff", "dreamtalk_lstm", "dreamtalk_refiner"),
        "bytecourse.dreamtalk.train:cli_train",
        "bytecourse.dreamtalk.evaluate:cli_eval",
    ),
    Target(
        "cosa",
        "COSA — concatenated image-text samples teach a model about time without video data",
        "08_cosa.ipynb",
        ("cosa_sst", "cosa_k2", "cosa_k4", "cosa_k4_similar", "cosa_k4_no_frame_embedding"),
        ("cosa_sst", "cosa_k2", "cosa_k4", "cosa_k4_similar", "cosa_k4_no_frame_embedding"),
        "bytecourse.cosa.train:cli_train",
        "bytecourse.cosa.evaluate:cli_eval",
        COMMON_OPTIONS | {"variant"},
        variants=("sst", "k2", "k4", "k4_similar", "k4_no_frame_embedding"),
    ),
    Target(
        "magicanimate",
        "MagicAnimate — a reference image and a pose sequence become a temporally consistent animation",
        "05_magicanimate.ipynb",
        ("magicanimate_base", "magicanimate_appearance", "magicanimate_appearance_global", "magicanimate_temporal"),
        (
            "primer_unet",
            "magicanimate_base",
            "magicanimate_appearance",
            "magicanimate_appearance_global",
            "magicanimate_temporal",
        ),
        "bytecourse.magicanimate.train:cli_train",
        "bytecourse.magicanimate.evaluate:cli_eval",
        COMMON_OPTIONS | {"variant"},
        variants=("base", "appearance", "appearance_global", "temporal"),
    ),
    Target(
        "magicvideo",
        "MagicVideo-V2 — a four-stage cascade: text → image → video → sharper video → smoother video",
        "06_magicvideo.ipynb",
        ("magicvideo_i2v", "magicvideo_v2v", "magicvideo_vfi", "magicvideo_v2v_noref", "magicvideo_vfi_adv"),
        (
            "primer_unet",
            "video_motion",
            "magicvideo_i2v",
            "magicvideo_v2v",
            "magicvideo_vfi",
            "magicvideo_vfi_adv",
            "magicvideo_v2v_noref",
        ),
        "bytecourse.magicvideo.train:cli_train",
        "bytecourse.magicvideo.evaluate:cli_eval",
        COMMON_OPTIONS | {"stage"},
        stage_names=("i2v", "v2v", "vfi", "v2v_noref", "i2v_pool", "i2v_scarce", "i2v_scarce_joint", "vfi_adv"),
        eval_parts=("joint",),
    ),
    Target(
        "video",
        "The course's video model (the primer's image model inflated with motion modules)",
        None,
        ("video_motion", "video_unet"),  # video_unet: only ``--variant scratch`` writes it (retired from data/)
        ("primer_unet", "video_motion"),
        "bytecourse.diffusion.videomotion:cli_train",
        "bytecourse.diffusion.video_eval:cli_eval",
        COMMON_OPTIONS | {"variant", "stage"},
        variants=("inflated", "scratch"),
        stages=2,
    ),
    Target(
        "classifier",
        "The clean-image Shapes classifier (SAG's and AdjointDPM's guidance energy)",
        None,
        ("shapes_classifier",),
        ("shapes_classifier",),
        "bytecourse.diffusion.classifier:cli_train",
        "bytecourse.diffusion.classifier:cli_eval",
    ),
)
TARGETS: dict[str, Target] = {t.key: t for t in _ALL}


def target(key: str) -> Target:
    if key not in TARGETS:
        raise ValueError(f"unknown target {key!r}; available: {', '.join(TARGETS)}")
    return TARGETS[key]


def check_train_options(t: Target, given: dict) -> None:
    """``given``: the options the user set (name → value). Raises one ``ValueError`` naming the target and what
    it supports when an option does not apply to it (or a variant / stage is out of range)."""
    if t.train is None:
        raise ValueError(t.no_train_reason)
    unsupported = sorted(k for k, v in given.items() if v is not None and v is not False and k not in t.train_options)
    if unsupported:
        flags = ", ".join("--" + k.replace("_", "-") for k in unsupported)
        ok = ", ".join("--" + k.replace("_", "-") for k in sorted(t.train_options)) or "none"
        raise ValueError(f"train {t.key} does not take {flags}; it supports {ok}")
    if given.get("variant") is not None and given["variant"] not in t.variants:
        raise ValueError(f"train {t.key}: --variant must be one of {', '.join(t.variants)}, got {given['variant']!r}")
    stage = given.get("stage")
    if stage is not None and t.stage_names:
        if stage not in t.stage_names:
            raise ValueError(f"train {t.key}: --stage must be one of {', '.join(t.stage_names)}, got {stage!r}")
    elif stage is not None and (not isinstance(stage, int) or not 1 <= stage <= t.stages):
        raise ValueError(f"train {t.key}: --stage must be in 1..{t.stages}, got {stage!r}")


def table_inputs_sha256(key: str) -> dict[str, str]:
    """The manifest sha256 of every checkpoint ``key``'s tables are computed from (what ``eval`` records)."""
    return {name: checkpoints.manifest_entry(name)["sha256"] for name in target(key).table_inputs}


def store_tables(key: str, tables: dict, command: str, commit: str | None = None, part: str | None = None) -> None:
    """Record ``eval``'s tables under ``manifest["tables"][key]``, tied to the checkpoints they were computed from.

    With ``part`` (``eval --part``), only that part's tables are replaced, and its command and commit are recorded
    under ``"parts"``; the other parts' tables are kept when they were computed from the same checkpoints."""
    computed_from = table_inputs_sha256(key)
    commit = commit or checkpoints.git_commit()
    with checkpoints.manifest_update():
        manifest = checkpoints.read_manifest()
        old = manifest.setdefault("tables", {}).get(key)
        if part is not None and old is not None and old.get("computed_from") == computed_from:
            entry = dict(old)
            entry["tables"] = {**old["tables"], **tables}
            entry["parts"] = {**old.get("parts", {}), part: {"eval_command": command, "eval_git_commit": commit}}
        else:
            entry = {
                "tables": tables,
                "eval_command": command,
                "eval_git_commit": commit,
                "computed_from": computed_from,
            }
            if part is not None:
                entry["parts"] = {part: {"eval_command": command, "eval_git_commit": commit}}
        manifest["tables"][key] = entry
        checkpoints.write_manifest(manifest)


def table_status(key: str) -> str:
    """``current``, ``no checkpoint`` (an input is missing or tampered), ``missing`` or ``stale``."""
    try:
        return "current" if stored_tables(key) is not None else "no checkpoint"
    except StaleTablesError as e:
        return e.kind


def stored_tables(key: str) -> dict | None:
    """The tables ``python -m bytecourse eval <key>`` stored, checked against the weights on disk.

    None when a checkpoint they are computed from is missing (or does not match its manifest hash): the notebook
    then trains a short run instead and says so. Raises :class:`StaleTablesError` when the checkpoints are
    there but the tables are not, or when they were computed from other weights than the ones on disk — naming
    the table and the command that recomputes it."""
    t = target(key)
    if not all(checkpoints.checkpoint_available(name) for name in t.table_inputs):
        return None
    record = checkpoints.read_manifest().get("tables", {}).get(key)
    if record is None:
        raise StaleTablesError(
            f"no stored tables for {key!r} although its checkpoints are present: compute them with `{t.eval_command}`",
            "missing",
        )
    have = table_inputs_sha256(key)
    made_from = record.get("computed_from", {})
    for name, sha in have.items():
        if made_from.get(name) != sha:
            was = (made_from.get(name) or "unrecorded weights")[:12]
            raise StaleTablesError(
                f"stale tables {key!r}: they were computed from {name} {was}…, but {name} on disk is "
                f"{sha[:12]}…; recompute them with `{t.eval_command}`",
                "stale",
            )
    return record["tables"]
