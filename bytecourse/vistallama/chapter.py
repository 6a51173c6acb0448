"""Chapter 09's training command, tables and widget.

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
    halluc, recall, per_item, masses = [], [], {}, []
    for i in range(n):
        ids, mass = narrator.generate(ep.videos[i:i + 1, : segments * FRAMES_PER_SEGMENT], [fill], [encode_words(["describe"])],
                                      max_new=8 * segments + 8, output_attentions=with_attention)
        facts = check_narration(decode_ids(ids), ep, i)
        halluc.append(hallucination_rate(facts))
        recall.append(sum(f.true for f in facts) / (2 * segments))
        for f in facts:
            per_item.setdefault(f.item, []).append(f.true)
        masses.append(mass)
    return {"hallucination": sum(halluc) / n, "fact_recall": sum(recall) / n, "item_accuracy": {k: sum(v) / len(v) for k, v in sorted(per_item.items())},
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


@torch.no_grad()
def attention_mass_forced(narrator: Narrator, seeds: list[int], segments: int = 6, fill: int = 64, n: int = 8) -> list[float]:
    """Attention mass on the visual tokens at each narration position, with the *true* narration fed in (teacher
    forcing), so both attention rules are measured on the same tokens whatever they would have generated."""
    previous = narrator.lm.config._attn_implementation
    narrator.lm.config._attn_implementation = "eager"  # attention probabilities
    try:
        sums: list[float] = []
        counts: list[int] = []
        for seed in seeds:
            ep = make_episodes(n, EVAL_OFFSET + 700_000 + 1000 * seed, (segments, segments))
            for i in range(n):
                answer = encode_words(ep.narrations[i].split())
                x, _, vmask, _ = narrator.embed(ep.videos[i:i + 1, : segments * FRAMES_PER_SEGMENT], [fill],
                                                [encode_words(["describe"])], [answer])
                kwargs = {"visual_mask": vmask} if narrator.attention == "edvt" else {}
                out = narrator.lm(inputs_embeds=x, output_attentions=True, **kwargs)
                att = torch.stack([a[0] for a in out.attentions])  # (layers, heads, S, S)
                visual = vmask[0].bool()
                start = x.shape[1] - len(answer) - 1  # the query that predicts the first narration word
                per_pos = att[:, :, start:, :][..., visual].sum(-1).mean((0, 1))
                for j, v in enumerate(per_pos.tolist()):
                    if j == len(sums):
                        sums.append(0.0)
                        counts.append(0)
                    sums[j] += v
                    counts[j] += 1
        return [s / c for s, c in zip(sums, counts) if c >= len(seeds) * n // 2]
    finally:
        narrator.lm.config._attn_implementation = previous


def evaluate_vistallama(seeds: list[int], progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from ..evaluation import summarise

    narrators = load_narrators()
    t0 = time.time()
    halluc_rows, order_rows = [], []
    for name, nar in narrators.items():
        for k in (2, 4, 6):
            per_seed = []
            for s in tqdm(seeds, disable=not progress):
                r = narrate_and_check(nar, s, k)
                per_seed.append({"hallucination": r["hallucination"], "fact_recall": r["fact_recall"]})
            halluc_rows.append({"setting": f"{name}, K={k}", "variant": name, "K": k, "metrics": summarise(per_seed)})
        order_rows.append({"setting": name, "metrics": summarise([{"order_accuracy": order_accuracy(nar, s)} for s in seeds])})
    mass = {name: attention_mass_forced(narrators[name], seeds) for name in ("rope", "edvt")}
    return {"hallucination": {"rows": halluc_rows, "seeds": list(seeds), "samples_per_seed": 16,
                              "setting_name": "narrator, segments (K; training saw 2–4)"},
            "order": {"rows": order_rows, "seeds": list(seeds), "samples_per_seed": 32, "setting_name": "narrator"},
            "attention_mass": {"per_position": mass, "fill": 64, "segments": 6, "episodes_per_seed": 8,
                               "how": "teacher-forced on the true narration; mass = attention on visual keys, mean over layers, heads, episodes"},
            "wall_time_s": round(time.time() - t0, 1)}


def cli_eval(args) -> dict:
    return evaluate_vistallama(list(args.seeds))


__all__ = ["CHECKPOINT", "VARIANTS", "cli_eval", "cli_train", "evaluate_vistallama", "load_narrators", "narrate_and_check",
           "order_accuracy"]


# -------------------------------------------------------------------------------------------------- widget


@torch.no_grad()
def attention_view(narrators: dict, variant: str, seed: int = 0, segments: int = 4, fill: int = 64) -> dict:
    """Pure function behind the widget: one narration, each generated token's attention over the visual tokens
    (grouped per frame) and the oracle's verdict on every stated fact."""
    if variant not in narrators:
        raise ValueError(f"variant must be one of {sorted(narrators)}, got {variant!r}")
    nar = narrators[variant]
    ep = make_episodes(1, EVAL_OFFSET + 900_000 + seed, (segments, segments))
    ids, mass = nar.generate(ep.videos[:, : segments * FRAMES_PER_SEGMENT], [fill], [encode_words(["describe"])],
                             max_new=8 * segments + 8, output_attentions=True)
    rows = torch.stack(nar.last_rows) if nar.last_rows else torch.zeros(0, 1)
    frames = segments * FRAMES_PER_SEGMENT
    per_frame = rows.view(rows.shape[0], frames, -1).sum(-1) if rows.numel() else rows
    narration = decode_ids(ids)
    words = [w for w in (decode_ids([t]) for t in ids) if w]
    return {"variant": variant, "narration": narration, "words": words, "mass": mass, "per_frame": per_frame,
            "facts": check_narration(narration, ep, 0), "truth": ep.narrations[0], "video": ep.videos[0, :frames]}


def render_attention(view: dict, position: int) -> None:
    import html

    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    pos = min(max(0, position), max(0, len(view["words"]) - 1))
    bad_items = {f.item for f in view["facts"] if not f.true}
    items = view["narration"].split(" then ")
    marked = " then ".join(f"<span style='background:#f4b6b6'>{html.escape(t)}</span>" if k in bad_items else html.escape(t)
                           for k, t in enumerate(items))
    total = len(view["facts"])
    wrong = sum(not f.true for f in view["facts"])
    print(f"{view['variant']} · token {pos + 1}/{len(view['words'])} "
          f"“{view['words'][pos] if view['words'] else ''}” · attention on visual tokens "
          f"{view['mass'][pos] if view['mass'] else 0:.3f} · facts rejected {wrong}/{total}")
    display(HTML(f"<div><b>generated:</b> {marked}</div><div><b>truth:</b> {html.escape(view['truth'])}</div>"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.6), gridspec_kw={"width_ratios": [3, 2]})
    if len(view["per_frame"]):
        axes[0].imshow(view["per_frame"].T.numpy(), aspect="auto", cmap="viridis")
        axes[0].axvline(pos, color="w", lw=1)
    axes[0].set_xlabel("generated token")
    axes[0].set_ylabel("frame")
    axes[0].set_title("attention over each frame's visual tokens", fontsize=9)
    axes[1].plot(view["mass"], "o-", ms=3)
    axes[1].axvline(pos, color="k", lw=0.8)
    axes[1].set_xlabel("generated token")
    axes[1].set_ylabel("mass on visual tokens")
    fig.tight_layout()
    display(fig)
    plt.close(fig)


def narration_explorer(narrators: dict, seed: int = 0):
    """The main widget of chapter 09: RoPE vs EDVT, and a slider over the generated token."""
    import ipywidgets as W

    from ..widgets import FunctionView

    cache: dict = {}

    def compute(variant, position, seed):
        key = (variant, seed)
        if key not in cache:
            cache[key] = attention_view(narrators, variant, seed)
        return {"view": cache[key], "position": position}

    controls = {
        "variant": W.ToggleButtons(options=list(narrators), value="edvt", description="attention"),
        "position": W.IntSlider(value=0, min=0, max=40, description="token", continuous_update=False),
        "seed": W.IntSlider(value=seed, min=0, max=20, description="episode", continuous_update=False),
    }
    return FunctionView(controls, compute, lambda r: render_attention(r["view"], r["position"]),
                        title="Where does each generated word look? RoPE vs equal-distance visual tokens")


def get_narrators(progress: bool = False) -> tuple[dict, str]:
    """The shipped narrators, or (without checkpoints) short runs of the same training code — and which it was."""
    names = [CHECKPOINT] + [f"vistallama_projector_{n}" for n in VARIANTS]
    if all(checkpoints.checkpoint_available(n) for n in names):
        return load_narrators(), "shipped checkpoints"
    lm, _ = pretrain_lm(PretrainConfig(steps=100), progress=progress)
    out = {}
    for name, (attention, sequential) in VARIANTS.items():
        cfg = NarratorConfig(projector=ProjectorConfig(sequential=sequential, lm_dim=lm.config.hidden_size), attention=attention, steps=40)
        out[name], _ = train_narrator(lm, cfg, progress=progress)
    return out, "trained now for a few steps (no shipped checkpoints found): expect poor narrations"


def stored_tables() -> dict | None:
    """The tables ``python -m bytecourse eval vistallama`` stored with the LM checkpoint (None if absent)."""
    if not checkpoints.checkpoint_available(CHECKPOINT):
        return None
    return checkpoints.manifest_entry(CHECKPOINT).get("tables") or None
