"""Recipe study: which training ingredient moves tumour Dice at a fixed time budget.

Trains one run per variant for the same wall-clock budget (`trainer.max_time`), one after the other so each has
the machine to itself, scores each best.pt on the test split with evaluate.py (flip TTA on, which also reports the
no-TTA numbers), and writes a markdown table:

    python scripts/recipe_study.py --minutes 5 --out outputs/recipe_study [--variants baseline,nnunet_aug ...]

Variants change one thing from the reported recipe (the published LiTS2017 recipe these defaults follow: rotation +
elastic, HU window, MONAI UNet, AdamW + cosine, progressive loss), then all of nnU-Net's ingredients together. Extra
overrides after `--` go to every run (e.g. `-- data.synthetic.num_cases=20`). A variant whose folder already holds
evaluate/metrics.json is not rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lits.core.tables import format_table

REPO = Path(__file__).resolve().parents[1]

RECIPE = ["augment=nnunet", "data.normalization=ct", "model=dynunet", "optim=sgd", "trainer.grad_clip=12"]
VARIANTS = {
    "baseline": [],  # the reported recipe, the defaults before this study
    "nnunet_aug": ["augment=nnunet"],  # + scaling, mirroring, noise, blur, brightness, contrast, low-res, gamma
    "ct_norm": ["data.normalization=ct"],  # + nnU-Net CT normalisation (foreground percentiles, z-score)
    "deep_supervision": ["model=dynunet"],  # DynUNet (nnU-Net's network) with deep supervision
    "sgd_poly": ["optim=sgd", "trainer.grad_clip=12"],  # SGD Nesterov 0.99, lr 1e-2, poly; nnU-Net's clip 12
    "nnunet_recipe": RECIPE,  # all of the above
}


def run(cmd: list[str], log_path: Path) -> float:
    started = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {code}); see {log_path}")
    return time.time() - started


def row(name: str, folder: Path) -> dict:
    summary = json.loads((folder / "train_summary.json").read_text())
    metrics = json.loads((folder / "evaluate" / "metrics.json").read_text())
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines() if line.strip()]
    speed = [h["train/samples_per_s"] for h in history if "train/samples_per_s" in h]
    post, no_tta = metrics["post"], metrics.get("post_no_tta", metrics["post"])
    return {
        "variant": name,
        "epochs": summary["epochs"],
        "samples/s": sum(speed) / max(1, len(speed)),
        "val tumour (best, post)": summary["best_value"],
        "test tumour/case": no_tta["tumor_dice_per_case"],
        "test tumour/case +TTA": post["tumor_dice_per_case"],
        "test tumour global": no_tta["tumor_dice_global"],
        "test liver/case": no_tta["liver_dice_per_case"],
        "test lesion recall": no_tta.get("tumor_lesion_recall_iou50"),
    }


def table(rows: list[dict]) -> str:
    """lits' markdown table, Dice with 3 decimals and samples/s as a whole number."""

    def shown(key, value):
        if not isinstance(value, float):
            return value
        return f"{value:.0f}" if key == "samples/s" else f"{value:.3f}"

    return format_table([{k: shown(k, v) for k, v in r.items()} for r in rows], list(rows[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per variant (trainer.max_time)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "recipe_study")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        folder = out / name
        if not (folder / "evaluate" / "metrics.json").exists():
            print(f"[{name}] training {args.minutes:g} min: {' '.join(VARIANTS[name]) or '(defaults)'}", flush=True)
            folder.mkdir(parents=True, exist_ok=True)
            train = [
                sys.executable,
                "train.py",
                "experiment=progressive",
                f"name=study_{name}",
                f"seed={args.seed}",
                f"trainer.max_time={args.minutes}",
                "trainer.resume=null",
                "trainer.progress=false",
                f"hydra.run.dir={folder}",
                *VARIANTS[name],
                *args.overrides,
            ]
            seconds = run(train, folder / "train_stdout.log")  # train.log is Hydra's own log in the same folder
            print(f"[{name}] trained in {seconds / 60:.1f} min; evaluating the test split (flip TTA)", flush=True)
            run(
                [
                    sys.executable,
                    "evaluate.py",
                    f"ckpt={folder}/checkpoints/best.pt",
                    "tta=true",
                    "progress=false",
                    f"hydra.run.dir={folder}/evaluate",
                ],
                folder / "evaluate.log",
            )
        rows.append(row(name, folder))
        print(table(rows[-1:]), flush=True)

    text = (
        f"# Recipe study: {args.minutes:g} min of training per variant, seed {args.seed}\n\n"
        f"Each row changes the reported recipe as listed in scripts/recipe_study.py; tumour Dice per case is the "
        f"post-processed stage of evaluate.py on the test split (+TTA: flip test-time augmentation).\n\n"
        + table(rows)
        + "\n\nOverrides: "
        + "; ".join(f"{n}: {' '.join(VARIANTS[n]) or '-'}" for n in names)
        + "\n"
    )
    (out / "study.md").write_text(text)
    print("\n" + table(rows))
    print(f"\nwrote {out / 'study.md'}")


if __name__ == "__main__":
    main()
