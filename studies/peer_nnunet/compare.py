"""The peer benchmark's table: python compare.py OUT_DIR MINUTES BUDGET_JSON -> OUT_DIR/results.md (also printed).

Reads what studies/peer_nnunet/run.sh left in OUT_DIR: lits/ (our run and its evaluate/), nnunet_eval[_notta]/ (our
scorer on nnU-Net's predictions), nnU-Net's budget.json, timings.tsv, commands.txt and machine.txt.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import yaml


def relative_paths(text: str, repo: Path) -> str:
    """Paths inside the repository relative to its root, absolute interpreters as `python`: the report reads the
    same wherever the repository was checked out."""
    text = text.replace(f"{repo}/", "").replace(f"in {repo}", "in the repository root")
    return re.sub(r"(?<![\w/.])/\S+/bin/python\b", "python", text)


def load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value, digits=3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def per_case(eval_dir: Path, stage: str) -> dict[str, tuple[float, float]]:
    with open(eval_dir / "cases.csv") as f:
        return {
            r["case"]: (float(r["liver_dice"]), float(r["tumor_dice"]))
            for r in csv.DictReader(f)
            if r["stage"] == stage
        }


HEAD = [
    "method",
    "training min (loop)",
    "train command min",
    "steps x batch",
    "epochs",
    "liver Dice per case",
    "tumour Dice per case",
    "tumour Dice global",
]


def ours_rows(out: Path, cmd_min: dict) -> tuple[list[list[str]], list[tuple[str, dict]]]:
    """Our run's rows (post-processed and raw) and its per-case scores."""
    ours = out / "lits"
    summary = load(ours / "train_summary.json")
    last = json.loads((ours / "history.jsonl").read_text().splitlines()[-1])
    cfg = yaml.safe_load((ours / ".hydra" / "config.yaml").read_text())
    bs, crop = cfg["trainer"]["batch_size"], cfg["data"]["crop_size"]
    metrics = load(ours / "evaluate" / "metrics.json")
    steps = f"{last['step']} x {bs} ({crop}x{crop} crops)"
    epochs = f"{summary['epochs']} of {cfg['data']['sampling']['samples_per_epoch']} samples"
    rows, cases = [], []
    for stage, label in (("post", "lits (ours), post-processed `post`"), ("raw", "lits (ours), raw (threshold only)")):
        m = metrics[stage]
        dice = [fmt(m["liver_dice_per_case"]), fmt(m["tumor_dice_per_case"]), fmt(m["tumor_dice_global"])]
        rows.append([label, fmt(summary["minutes"], 2), fmt(cmd_min["ours_train"], 2), steps, epochs, *dice])
        cases.append((label, per_case(ours / "evaluate", stage)))
    return rows, cases


def nnunet_rows(out: Path, cmd_min: dict, timings: dict, budget: dict) -> tuple[list, list]:
    """nnU-Net's rows (with and without its mirroring TTA, where scored) and their per-case scores."""
    steps = f"{budget['iterations']} x {budget['batch_size']} ({'x'.join(map(str, budget['patch_size']))} slices)"
    epochs = f"{budget['epochs']} of {budget['iterations_per_epoch']} it."
    rows, cases = [], []
    for mode, label in (("tta", "nnU-Net 2d, mirroring TTA (its default)"), ("notta", "nnU-Net 2d, --disable_tta")):
        eval_dir = out / ("nnunet_eval" if mode == "tta" else "nnunet_eval_notta")
        m = load(eval_dir / "metrics.json")
        if m is None or f"nnunet_score_{mode}" not in timings:
            continue
        g = m["given"]
        dice = [fmt(g["liver_dice_per_case"]), fmt(g["tumor_dice_per_case"]), fmt(g["tumor_dice_global"])]
        minutes = [fmt(budget["train_seconds"] / 60, 2), fmt(cmd_min["nnunet_train"], 2)]
        rows.append([label, *minutes, steps, epochs, *dice])
        cases.append((label, per_case(eval_dir, "given")))
    return rows, cases


def main() -> None:
    out, minutes, budget_path = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    timings = dict(line.split("\t") for line in (out / "timings.tsv").read_text().splitlines())
    cmd_min = {k: float(v) / 60 for k, v in timings.items()}
    budget = load(budget_path)
    rows, cases = ours_rows(out, cmd_min)
    more_rows, more_cases = nnunet_rows(out, cmd_min, timings, budget)
    rows, cases = rows + more_rows, cases + more_cases
    lines = [
        f"# Peer benchmark: lits vs nnU-Net v2 2d, {minutes:g}-minute training budget each",
        "",
        "Same synthetic data (data/synthetic-v3-40x256-seed0), same patient split (our seed 0: 28 train / 6 val / "
        "6 test), test cases scored by our `evaluate.py` (LiTS metrics; 'per case' = mean over the test cases).",
        "",
        "| " + " | ".join(HEAD) + " |",
        "|" + "---|" * len(HEAD),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "- training min (loop): ours = train_summary.json `minutes` (training loop with its validations, data "
        "preparation excluded); nnU-Net = budget.json `train_seconds` (first to last iteration, with its 10-batch "
        "pseudo-validations; loader start-up excluded; its final validation skipped).",
        "- train command min: the whole training command measured by the script (start-up, our data generation "
        "and cache on first use, nnU-Net's unpacking, final validation and checkpoints).",
        f"- nnU-Net: batch {budget['batch_size']} (planned {budget.get('planned_batch_size')}), "
        f"{budget['iterations_per_epoch']} train / {budget['val_iterations_per_epoch']} val iterations per epoch, "
        f"nnUNet_n_proc_DA={budget['n_proc_DA']}, torch threads {budget['torch_threads']}; "
        "checkpoint_final.pth (the last epoch) is scored. Ours: best.pt (best val tumour Dice post), no TTA.",
        "",
        "## Per case (liver Dice / tumour Dice)",
        "",
    ]
    ids = sorted({c for _, pc in cases for c in pc}, key=int)
    lines += ["| method | " + " | ".join(f"case {c}" for c in ids) + " |", "|" + "---|" * (len(ids) + 1)]
    for label, pc in cases:
        lines.append(
            f"| {label} | " + " | ".join(f"{pc[c][0]:.3f} / {pc[c][1]:.3f}" if c in pc else "-" for c in ids) + " |"
        )
    lines += ["", "## Step wall-clock (s)", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {float(v):.0f} |" for k, v in timings.items()]
    lines += [
        "",
        "## Machine",
        "",
        "```",
        (out / "machine.txt").read_text().strip(),
        "```",
        "",
        "## Commands",
        "",
        "```",
        (out / "commands.txt").read_text().strip(),
        "```",
        "",
    ]
    text = relative_paths("\n".join(lines), out.resolve().parent.parent)
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
