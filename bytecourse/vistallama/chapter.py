"""Chapter 09's training command and tables (work in progress: the notebook and widget follow).

``python -m bytecourse train vistallama`` pretrains the tiny LM on narrations, freezes it, and trains three narrators
on it: RoPE + sequential projector, EDVT + sequential projector, EDVT + independent projector. Each is shipped
(fp16): the LM once, then only the projectors (the ablations differ only there).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch

from .. import checkpoints
from .data import FRAMES_PER_SEGMENT, check_narration, decode_ids, encode_words, hallucination_rate, make_episodes, order_question
from .narrator import LMConfig, Narrator, NarratorConfig, PretrainConfig, build_lm, pretrain_lm, train_narrator
from .projector import ProjectorConfig, SequentialProjector

CHECKPOINT = "vistallama_lm"
VARIANTS = {"rope": ("rope", True), "edvt": ("edvt", True), "edvt_independent": ("edvt", False)}
EVAL_OFFSET = 30_000_000


def _device_description() -> str:
    import os

    return f"cpu ({os.cpu_count()} cores, torch {torch.__version__})"


def cli_train(args) -> dict:
    """Stage 1: the LM (then frozen); stage 2: the three narrators' projectors. Writes four checkpoints."""
    seed = args.seed
    pre = PretrainConfig(seed=seed, **({"steps": args.steps} if args.steps else {}))
    lm, s = pretrain_lm(pre)
    checkpoints.save_checkpoint(CHECKPOINT, lm.state_dict(), {
        "chapter": "vistallama", "config": asdict(pre), "command": "python -m bytecourse train vistallama", "seed": seed,
        "device": _device_description(), "wall_time_s": s["wall_time_s"],
        "train_metrics": {"final_loss": round(s["final_loss"], 4), "steps": s["steps"]},
        "parameters": sum(p.numel() for p in lm.parameters())})
    summary = {"lm": {k: v for k, v in s.items() if k != "losses"}}
    for name, (attention, sequential) in VARIANTS.items():
        cfg = NarratorConfig(projector=ProjectorConfig(sequential=sequential, lm_dim=pre.lm.hidden), attention=attention, seed=seed,
                             **({"steps": args.steps} if args.steps else {}))
        model, s2 = train_narrator(lm, cfg)
        checkpoints.save_checkpoint(f"vistallama_projector_{name}", model.projector.state_dict(), {
            "chapter": "vistallama", "config": {**asdict(cfg), "projector": cfg.projector.to_dict()},
            "command": "python -m bytecourse train vistallama", "seed": seed, "device": _device_description(),
            "wall_time_s": s2["wall_time_s"], "train_metrics": {"final_loss": round(s2["final_loss"], 4), "steps": s2["steps"]},
            "parameters": sum(p.numel() for p in model.projector.parameters())})
        summary[name] = {k: v for k, v in s2.items() if k != "losses"}
    return summary


def load_narrators() -> dict[str, Narrator]:
    """The shipped LM and the three narrators (hash-verified)."""
    state, entry = checkpoints.load_checkpoint(CHECKPOINT)
    lm_cfg = LMConfig(**entry["config"]["lm"])
    lm = build_lm(lm_cfg)
    lm.load_state_dict(state)
    lm.eval().requires_grad_(False)
    out = {}
    for name, (attention, _) in VARIANTS.items():
        st, e = checkpoints.load_checkpoint(f"vistallama_projector_{name}")
        pcfg = ProjectorConfig.from_dict(e["config"]["projector"])
        proj = SequentialProjector(pcfg)
        proj.load_state_dict(st)
        out[name] = Narrator(lm, proj.eval(), attention)
    return out


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def narrate_and_check(narrator: Narrator, seed: int, segments: int, n: int = 16, fill: int = 8, with_attention: bool = False) -> dict:
    """Narrate n episodes of K = ``segments``; per generated item k: fact accuracy; overall hallucination rate;
    optionally the attention mass on visual tokens per generated position."""
    ep = make_episodes(n, EVAL_OFFSET + 1000 * seed + segments, (segments, segments))
    halluc, per_item, masses = [], {}, []
    for i in range(n):
        ids, mass = narrator.generate(ep.videos[i:i + 1, : segments * FRAMES_PER_SEGMENT], [fill], [encode_words(["describe"])],
                                      max_new=8 * segments + 8, output_attentions=with_attention)
        facts = check_narration(decode_ids(ids), ep, i)
        halluc.append(hallucination_rate(facts))
        for f in facts:
            per_item.setdefault(f.item, []).append(f.true)
        masses.append(mass)
    return {"hallucination": sum(halluc) / n, "item_accuracy": {k: sum(v) / len(v) for k, v in sorted(per_item.items())},
            "attention_mass": masses}


@torch.no_grad()
def order_accuracy(narrator: Narrator, seed: int, segments: int = 3, n: int = 32, fill: int = 8) -> float:
    ep = make_episodes(n, EVAL_OFFSET + 500_000 + 1000 * seed + segments, (segments, segments))
    g = torch.Generator().manual_seed(seed)
    right, asked = 0, 0
    for i in range(n):
        qa = order_question(ep, i, g)
        if qa is None:
            continue
        ids, _ = narrator.generate(ep.videos[i:i + 1, : segments * FRAMES_PER_SEGMENT], [fill], [encode_words(qa[0].split())], max_new=5)
        right += decode_ids(ids) == qa[1]
        asked += 1
    return right / max(1, asked)


def evaluate_vistallama(seeds: list[int], progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from ..evaluation import summarise

    narrators = load_narrators()
    t0 = time.time()
    halluc_rows, order_rows = [], []
    for name, nar in narrators.items():
        for k in (2, 4, 6):
            per_seed = [{"hallucination": narrate_and_check(nar, s, k)["hallucination"]} for s in tqdm(seeds, disable=not progress)]
            halluc_rows.append({"setting": f"{name}, K={k}", "variant": name, "K": k, "metrics": summarise(per_seed)})
        order_rows.append({"setting": name, "metrics": summarise([{"order_accuracy": order_accuracy(nar, s)} for s in seeds])})
    mass = {}
    for name in ("rope", "edvt"):
        r = narrate_and_check(narrators[name], 0, 4, n=8, fill=64, with_attention=True)
        steps = min(len(m) for m in r["attention_mass"])
        mass[name] = [sum(m[j] for m in r["attention_mass"]) / len(r["attention_mass"]) for j in range(steps)]
    return {"hallucination": {"rows": halluc_rows, "seeds": list(seeds), "samples_per_seed": 16,
                              "setting_name": "narrator, segments (K; training saw 2–4)"},
            "order": {"rows": order_rows, "seeds": list(seeds), "samples_per_seed": 32, "setting_name": "narrator"},
            "attention_mass": {"per_position": mass, "fill": 64, "segments": 4, "episodes": 8},
            "wall_time_s": round(time.time() - t0, 1)}


def cli_eval(args) -> dict:
    return evaluate_vistallama(list(args.seeds))


__all__ = ["CHECKPOINT", "VARIANTS", "cli_eval", "cli_train", "evaluate_vistallama", "load_narrators", "narrate_and_check",
           "order_accuracy"]
