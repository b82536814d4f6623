"""Our data and patient split -> nnU-Net raw format (run with the lits venv; studies/peer_nnunet/run.sh).

  python to_nnunet.py raw RAW_DIR DATASET_NAME [--check-split OUR_RUN/split.json] [--split-out FILE]
      the split our training uses (train.yaml defaults, seed 0: lits.data.splits.make_splits, as lits.train does);
      imagesTr/labelsTr = our train + val cases, imagesTs = our test cases, dataset.json. Skipped when RAW_DIR
      already holds the same conversion (conversion.json).
  python to_nnunet.py splits SPLIT_JSON PREPROCESSED_DIR
      splits_final.json with one fold: fold 0 = our train (train) / our val (val).
Case N (volume-N / segmentation-N) is nnU-Net case_NNN.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def nnunet_name(case_id: str) -> str:
    return f"case_{int(case_id):03d}"


def our_split() -> tuple[dict[str, list[str]], dict]:
    """The split `python train.py` makes by default (same config composition, same function)."""
    from lits.core.compose import compose_config
    from lits.data.prepare import ensure_synthetic
    from lits.data.sources import discover
    from lits.data.splits import make_splits

    cfg = compose_config("train", [f"paths.root_dir={ROOT}"])
    ensure_synthetic(cfg.data)
    found, problems = discover(cfg.data)
    if problems:
        sys.exit(f"to_nnunet: {problems[0].reason}")
    splits = make_splits([p.case_id for p in found], cfg.data, cfg.seed)
    return splits, {p.case_id: p for p in found}


def copy_gz(src: Path, dst: Path) -> None:
    """nnU-Net wants one file ending (.nii.gz): copy .nii.gz as is, gzip plain .nii."""
    if src.name.endswith(".gz"):
        shutil.copyfile(src, dst)
    else:
        with open(src, "rb") as fin, gzip.open(dst, "wb", compresslevel=1) as fout:
            shutil.copyfileobj(fin, fout)


def cmd_raw(args) -> None:
    splits, cases = our_split()
    if args.check_split:
        ours = json.loads(Path(args.check_split).read_text())
        if {k: ours[k] for k in ("train", "val", "test")} != splits:
            sys.exit(f"to_nnunet: the split computed here differs from our training's {args.check_split}")
    if args.split_out:
        Path(args.split_out).write_text(json.dumps(splits, indent=1))
    out = Path(args.raw_dir) / args.dataset
    stamp = {"splits": splits, "data_root": str(Path(next(iter(cases.values())).image).parent)}
    if (out / "conversion.json").exists() and json.loads((out / "conversion.json").read_text()) == stamp:
        print(
            f"to_nnunet: {out} is up to date (train {len(splits['train'])}, val {len(splits['val'])}, "
            f"test {len(splits['test'])} cases)"
        )
        return
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True)
    for name in ("train", "val", "test"):
        images, labels = ("imagesTr", "labelsTr") if name != "test" else ("imagesTs", "labelsTs")
        for cid in splits[name]:
            case = cases[cid]
            copy_gz(Path(case.image), out / images / f"{nnunet_name(cid)}_0000.nii.gz")
            copy_gz(Path(case.label), out / labels / f"{nnunet_name(cid)}.nii.gz")  # labelsTs: for reference only
    dataset = {
        "name": args.dataset,
        "description": "lits synthetic LiTS-format CT (data/synthetic-v3-40x256-seed0); train+val: our train/val",
        "channel_names": {"0": "CT"},  # "CT": nnU-Net's CT normalisation (foreground percentiles + z-score)
        "labels": {"background": 0, "liver": 1, "tumor": 2},
        "numTraining": len(splits["train"]) + len(splits["val"]),
        "file_ending": ".nii.gz",
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    (out / "conversion.json").write_text(json.dumps(stamp, indent=1))
    print(
        f"to_nnunet: wrote {out}: imagesTr {dataset['numTraining']} (train {len(splits['train'])} + val "
        f"{len(splits['val'])}), imagesTs {len(splits['test'])}"
    )


def cmd_splits(args) -> None:
    splits = json.loads(Path(args.split_json).read_text())
    fold0 = {"train": [nnunet_name(c) for c in splits["train"]], "val": [nnunet_name(c) for c in splits["val"]]}
    path = Path(args.preprocessed_dir) / "splits_final.json"
    path.write_text(json.dumps([fold0], indent=1))
    print(f"to_nnunet: wrote {path}: fold 0 = train {len(fold0['train'])} / val {len(fold0['val'])} cases")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    raw = sub.add_parser("raw")
    raw.add_argument("raw_dir")
    raw.add_argument("dataset")
    raw.add_argument("--check-split")
    raw.add_argument("--split-out")
    splits = sub.add_parser("splits")
    splits.add_argument("split_json")
    splits.add_argument("preprocessed_dir")
    args = parser.parse_args()
    {"raw": cmd_raw, "splits": cmd_splits}[args.cmd](args)


if __name__ == "__main__":
    main()
