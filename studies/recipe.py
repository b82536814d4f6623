"""Recipe study: which training ingredient and which post-processing find lesions best at a fixed time budget.

Trains one run per variant and seed for the same wall-clock budget (`trainer.max_time`), one after the other so each
has the machine to itself, then for each run:
  1. scores best.pt on the test split with the post-processing it was trained with ("as trained"),
  2. tunes calibration and post-processing on the validation split (evaluate.py tune=true: the choice is stored in
     best.pt; its validation score before and after is what the default is chosen by),
  3. scores the tuned best.pt on the test split ("tuned").
and writes study.md: per variant, mean and spread over seeds of the validation criterion (lesion score = mean of
tumour Dice per case and lesion F1 at IoU > 0.5), test tumour Dice per case and global, lesion recall and precision
at IoU > 0.5 and at any overlap, and Dice per lesion size bin. Every evaluation runs with evaluate.py's defaults: a
network trained with mirroring is scored as trained without TTA, and its tuning tries flip TTA and keeps it only where
it earns it on validation (then "TTA gain" is its test Dice over the identity view's).

    python -m studies recipe --minutes 3 --seeds 0,1,2 --out outputs/lesion_study \\
        --variants baseline,mirror_tta,per_lesion,blob,tversky

Extra overrides after `--` go to every training run. A run whose folder already holds its three evaluations is not
redone, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lits.core.compose import CHECKOUT as REPO
from lits.core.tables import format_table
from lits.core.vocabulary import lesion_f1

VARIANTS = {
    "baseline": [],  # the defaults
    # trained with mirroring; the tuning on validation then tries flip TTA and keeps it only where it scores higher
    "mirror_tta": ["augment.p_mirror_x=0.5", "augment.p_mirror_y=0.5"],
    "per_lesion": ["data.sampling.per_lesion=true"],  # every lesion equally likely in the tumour draws
    "blob": ["loss.blob_weight=0.5"],  # lesion-wise Dice (blob loss) mixed into the tumour's region term
    "tversky": ["loss.region=tversky", "loss.tversky_beta=0.7"],  # missed tumour costs more than false tumour
    "per_lesion_blob": ["data.sampling.per_lesion=true", "loss.blob_weight=0.5"],
    "context": ["data.context_slices=1", "model.in_channels=3"],  # 2.5D: a slice and its neighbours as channels
    "nnunet_aug": ["augment=nnunet"],  # nnU-Net v2's augmentation set
    "lesion_crops": ["data.sampling.lesion_center=lesion"],  # tumour crops centred on a lesion drawn uniformly
}
BINS = ("under10mm", "10to20mm", "over20mm")
PAIRED = ("test tumour/case", "test tumour global", "test lesion recall", "test lesion precision",
          "test recall under10mm")  # fmt: skip
EVALUATIONS = {  # folder -> evaluate.py arguments besides ckpt and the run folder
    "test_as_trained": ["split=test"],
    "val_tuning": ["split=val", "tune=true"],
    "test_tuned": ["split=test"],
}


def run(cmd: list[str], log_path: Path) -> float:
    started = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed (exit {code}); see {log_path}")
    return time.time() - started


def train_and_evaluate(folder: Path, name: str, seed: int, minutes: float, extra: list[str]) -> None:
    """Train (tune_after=false: the study tunes as its own step) and run the three evaluations, skipping what is
    already there."""
    variant = VARIANTS[name]
    if not (folder / "train_summary.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "train.py", "experiment=progressive", f"name=study_{folder.parent.name}",
               f"seed={seed}", f"trainer.max_time={minutes}", "trainer.resume=null", "trainer.progress=false",
               "tune_after=false", f"hydra.run.dir={folder}", *variant, *extra]  # fmt: skip
        seconds = run(cmd, folder / "train_stdout.log")
        print(f"[{folder.parent.name} seed {seed}] trained in {seconds / 60:.1f} min", flush=True)
    for step, arguments in EVALUATIONS.items():  # in this order: the test as trained comes before tuning
        if not (folder / step / "metrics.json").exists():
            cmd = [sys.executable, "evaluate.py", f"ckpt={folder}/checkpoints/best.pt", *arguments, "progress=false",
                   f"hydra.run.dir={folder}/{step}"]  # fmt: skip
            run(cmd, folder / f"{step}.log")


def measures(folder: Path) -> dict:
    """One run's numbers: the validation criterion as trained and tuned, the test numbers as trained and tuned."""
    summary = json.loads((folder / "train_summary.json").read_text())
    tuning = json.loads((folder / "val_tuning" / "tuning.json").read_text())
    out = {"epochs": summary["epochs"], "val score as trained": tuning["candidates"][0]["score"],
           "val score tuned": tuning["candidates"][tuning["chosen"]]["score"]}  # fmt: skip
    for mode in ("as_trained", "tuned"):
        post = json.loads((folder / f"test_{mode}" / "metrics.json").read_text())["post"]
        out[f"test tumour/case {mode}"] = post["tumor_dice_per_case"]
        out[f"test tumour global {mode}"] = post["tumor_dice_global"]
        out[f"test lesion recall {mode}"] = post["tumor_lesion_recall_iou50"]
        out[f"test lesion precision {mode}"] = post["tumor_lesion_precision_iou50"]
        out[f"test lesion F1 {mode}"] = lesion_f1(
            post["tumor_lesion_recall_iou50"], post["tumor_lesion_precision_iou50"]
        )
        out[f"test recall any overlap {mode}"] = post["tumor_lesion_recall_iou0"]
        out[f"test precision any overlap {mode}"] = post["tumor_lesion_precision_iou0"]
        for b in BINS:
            out[f"test Dice {b} {mode}"] = post[f"tumor_lesion_dice_{b}"]
        out[f"test recall under10mm {mode}"] = post["tumor_lesion_recall_iou50_under10mm"]
    tta = json.loads((folder / "test_tuned" / "metrics.json").read_text())
    if "post_no_tta" in tta:  # the Dice TTA added (post) over the identity view alone (post_no_tta)
        out["tta gain tumour/case"] = tta["post"]["tumor_dice_per_case"] - tta["post_no_tta"]["tumor_dice_per_case"]
    return out


def mean_std(values: list[float], signed: bool = False) -> str:
    """'mean ± sample sd' to 3 decimals (`signed`: the mean with its sign, for differences); one value alone; '-'
    for none. None and NaN (no lesion of that size in a split) are left out."""
    values = [v for v in values if v is not None and v == v]
    sign = "+" if signed else ""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{sign}.3f}"
    return f"{statistics.mean(values):{sign}.3f} ± {statistics.stdev(values):.3f}"


def tables(per_variant: dict[str, list[dict]]) -> str:
    """Validation table (what the default is chosen by) and one test table per post-processing mode."""
    sections = []
    val_columns = ["epochs", "val score as trained", "val score tuned"]
    test = ["test tumour/case", "test tumour global", "test lesion recall", "test lesion precision", "test lesion F1",
            "test recall any overlap", "test precision any overlap", "test recall under10mm",
            *(f"test Dice {b}" for b in BINS)]  # fmt: skip
    for title, columns, suffix in (("validation (lesion score)", val_columns, ""),
                                   ("test, post-processing as trained", test, " as_trained"),
                                   ("test, post-processing tuned on validation", test, " tuned")):  # fmt: skip
        rows = [{"variant": v, "seeds": len(runs), **{c: mean_std([r[c + suffix] for r in runs]) for c in columns}}
                for v, runs in per_variant.items()]  # fmt: skip
        for row, runs in zip(rows, per_variant.values()):
            if "epochs" in row:  # whole numbers: each seed's count
                row["epochs"] = ", ".join(str(r["epochs"]) for r in runs)
        sections.append(f"### {title}\n\n" + format_table(rows, ["variant", "seeds", *columns]))
    sections.append(paired(per_variant))
    return "\n\n".join(sections)


def paired(per_variant: dict[str, list[dict]]) -> str:
    """Per variant, the seed-by-seed difference to the baseline on the test split (tuned), mean ± std: the study's
    decision table (a gain counts when it exceeds the spread)."""
    base = per_variant.get("baseline")
    if not base:
        return "(no baseline run: no paired differences)"
    rows = []
    for variant, runs in per_variant.items():
        if variant == "baseline":
            continue
        row = {"variant": variant, "seeds": len(runs)}
        for c in PAIRED:
            row[c] = mean_std([r[c + " tuned"] - b[c + " tuned"] for r, b in zip(runs, base)])
        row["TTA gain tumour/case"] = mean_std([r["tta gain tumour/case"] for r in runs if "tta gain tumour/case" in r])
        rows.append(row)
    return "### paired difference to the baseline (variant - baseline, same seed and split), test, tuned\n\n" + (
        format_table(rows, ["variant", "seeds", *PAIRED, "TTA gain tumour/case"])
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per run (trainer.max_time)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "recipe_study")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"a subset of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (each also draws its own split)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every training run (after --)")


def main(args) -> None:
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out = args.out.resolve()
    per_variant: dict[str, list[dict]] = {}
    for seed in seeds:  # all variants of one seed first: a stopped study still compares like with like
        for name in names:
            folder = out / name / f"seed{seed}"
            print(f"[{name} seed {seed}] {' '.join(VARIANTS[name]) or '(defaults)'}", flush=True)
            train_and_evaluate(folder, name, seed, args.minutes, args.overrides)
            per_variant.setdefault(name, []).append(measures(folder))
    best = max(per_variant, key=lambda v: statistics.mean(r["val score tuned"] for r in per_variant[v]))
    text = (f"# Recipe study: {args.minutes:g} min of training per run, seeds {', '.join(map(str, seeds))}\n\n"
            "Mean ± sample std over seeds (each seed also draws its own patient split). Variants (overrides): "
            + "; ".join(f"`{n}`: {' '.join(VARIANTS[n]) or 'defaults'}" for n in names)
            + f".\n\nChosen by validation (highest mean tuned lesion score): **{best}**.\n\n"
            + tables(per_variant) + "\n")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.md").write_text(text)
    print("\n" + text + f"\nwrote {out / 'study.md'}")
