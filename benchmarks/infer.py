"""Whole-CT inference: where predict.py's time goes, per stage, and its peak memory (printed, never asserted).

    python -m benchmarks infer [--slices 300] [--large-slices 1000] [--ckpt PATH] [--threads N] [--device cpu]

Input: a synthetic 512 x 512 x --slices CT (lits.data.synthetic, int16 .nii.gz as LiTS ships them, generated once
into --data-dir) and a unet_small checkpoint: --ckpt, or one trained once for --train-minutes on synthetic 512 x 512
cases (`train.py model=unet_small trainer.max_time=...`) so that the masks post-processing works on look like real
ones. Every measurement runs in a child process of its own (its own peak RSS):

* predict: the predict task (lits.infer.predict.predict, as `python predict.py` runs it) with a clock on each stage:
  reading (NIfTI decompression, HU scaling), preprocessing (window, resampling, float16), network (the model's forward
  passes), batching (slice batches in, probabilities out and thresholded), post-processing (components, lesion
  count), writing (NIfTI label map); `other` is the rest (checkpoint, config, CSV).
* whole-volume: the same steps the way predict.py did them before streaming (whole float32 HU and probability
  volumes in memory, a contiguous copy before writing): the ratio shows what streaming saves, measured in this run.
* evaluate: evaluate.py on the same CT and its reference (the case cached once first, not timed), split into
  network, post-processing (every ablation stage), metrics and reports.
* large: predict on a --large-slices CT (the phantom mirrored along z): memory must stay bounded.

Peak RSS is the child's VmHWM; `baseline` is its RSS once torch and lits are imported and nothing is read. `CPU s`
is the child's CPU time (all threads): on a shared machine the wall-clock split swings, the CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.infer_children import CHILDREN, STAGES
from benchmarks.probes import REPO, machine_line, run_child, say


# ---------------------------------------------------------------------------------------------- inputs
def make_ct(folder: Path, slices: int, size: int = 512) -> tuple[Path, Path]:
    """A synthetic CT and its segmentation (int16 / uint8 .nii.gz); > 300 slices: the 300-slice phantom mirrored
    along z (generating one phantom of 1000 slices would need several GB)."""
    import nibabel as nib
    import numpy as np

    from lits.data.synthetic import SyntheticParams, generate_case
    from lits.data.synthetic.canvas import REF_SPACING_XY

    ct, seg = folder / f"volume-{slices}.nii.gz", folder / f"segmentation-{slices}.nii.gz"
    if ct.exists() and seg.exists():
        return ct, seg
    folder.mkdir(parents=True, exist_ok=True)
    print(f"generating a synthetic {size}x{size}x{slices} CT into {folder} (once)", file=sys.stderr, flush=True)
    base = min(slices, 300)
    # exactly `base` slices: the generator scales a case's slice count with its in-plane spacing (fixed here at the
    # reference spacing, where num_slices is the count) and gives thin-slice cases more (none here)
    params = SyntheticParams(size=size, num_slices=(base, base), spacing_xy=(REF_SPACING_XY, REF_SPACING_XY),
                             thin_slice_fraction=0.0)  # fmt: skip
    volume, label, affine = generate_case(0, 0, params)
    if slices > base:
        reps = -(-slices // (2 * base))
        volume = np.concatenate([volume, volume[..., ::-1]] * reps, axis=2)[..., :slices]
        label = np.concatenate([label, label[..., ::-1]] * reps, axis=2)[..., :slices]
    for path, data in ((ct, volume), (seg, label)):
        img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(path.with_name("." + path.name)))
        os.replace(path.with_name("." + path.name), path)
    return ct, seg


def trained_checkpoint(args) -> Path:
    """--ckpt, or unet_small trained once for --train-minutes on synthetic 512x512 cases (reused afterwards)."""
    if args.ckpt:
        return Path(args.ckpt)
    run = Path(args.data_dir).resolve() / "infer" / f"unet_small-{args.train_minutes:g}min"
    ckpt = run / "checkpoints/best.pt"
    if not ckpt.exists():
        say(f"training unet_small for {args.train_minutes:g} min into {run} (once)")
        overrides = [
            "model=unet_small",
            "data.synthetic.size=512",
            "data.synthetic.num_cases=8",
            f"trainer.max_time={args.train_minutes}",
            f"trainer.device={args.device}",
            "trainer.progress=false",
            "trainer.log_images=false",
            "trainer.resume=null",
            f"paths.data_dir={Path(args.data_dir).resolve()}",
            f"hydra.run.dir={run}",
        ]
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run([sys.executable, str(REPO / "train.py"), *overrides], check=True, cwd=REPO)
    return ckpt


def run_predict_child(args, mode: str, ct: Path, ckpt: Path) -> dict:
    """One child (`mode` of CHILDREN) on the CT `ct` with checkpoint `ckpt`; its result dict."""
    out = Path(args.data_dir).resolve() / "infer" / f"out-{mode}-{ct.name.split('.')[0]}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = ["--child", mode, "--ct", ct, "--ckpt", ckpt, "--out", out]
    argv += ["--device", args.device, "--threads", args.threads] + (["--tta"] if args.tta else [])
    say(f"{mode}: {ct.name} ...")
    return run_child("infer", argv)


def measure(args) -> dict:
    """{row name: child result}; what benchmarks/gpu.py also calls."""
    folder = Path(args.data_dir).resolve() / "infer"
    ct, _ = make_ct(folder / "ct", args.slices)
    ckpt = trained_checkpoint(args)
    rows = {f"predict {args.slices} slices": run_predict_child(args, "predict", ct, ckpt)}
    if args.compare:
        rows[f"whole-volume {args.slices} slices"] = run_predict_child(args, "whole-volume", ct, ckpt)
    if args.evaluate:
        rows[f"evaluate {args.slices} slices"] = run_predict_child(args, "evaluate", ct, ckpt)
    if args.large_slices:
        large, _ = make_ct(folder / "ct", args.large_slices)
        rows[f"predict {args.large_slices} slices"] = run_predict_child(args, "predict", large, ckpt)
    return rows


def report(args, rows: dict) -> None:
    import torch

    threads = args.threads or torch.get_num_threads()
    print(
        f"\nwhole-CT inference: synthetic 512x512 CTs (.nii.gz), unet_small, device {args.device}, {threads} torch "
        f"threads, tta {args.tta}\n{machine_line()}"
    )
    header = (
        f"{'run':<26} {'total s':>8} {'CPU s':>7} " + " ".join(f"{s:>15}" for s in STAGES) + f" {'peak RSS MB':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        cells = " ".join(f"{r['stages'][s]:>8.2f} ({100 * r['stages'][s] / r['total_s']:>3.0f}%)" for s in STAGES)
        print(f"{name:<26} {r['total_s']:>8.1f} {r['cpu_s']:>7.1f} {cells} {r['peak_rss_mb']:>12.0f}")
    baseline = min(r["baseline_mb"] for r in rows.values())
    print(f"(baseline RSS of a child after importing torch and lits: {baseline:.0f} MB)")
    names = list(rows)
    if args.compare:
        new, old = rows[names[0]], rows[names[1]]
        print(
            f"streamed predict vs whole-volume: time {old['total_s'] / new['total_s']:.2f}x faster, peak memory above "
            f"baseline {(old['peak_rss_mb'] - old['baseline_mb']) / (new['peak_rss_mb'] - new['baseline_mb']):.1f}x "
            "smaller"
        )
    if args.large_slices:
        small, large = rows[names[0]], rows[f"predict {args.large_slices} slices"]
        above = large["peak_rss_mb"] - large["baseline_mb"]
        grow = above / (small["peak_rss_mb"] - small["baseline_mb"])
        print(
            f"{args.large_slices} vs {args.slices} slices: peak memory above baseline x{grow:.1f} for "
            f"x{args.large_slices / args.slices:.1f} the voxels ({above / 1024:.1f} GB; the CT as float32 alone "
            f"would be {args.large_slices * 512 * 512 * 4 / 2**30:.1f} GB)"
        )


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slices", type=int, default=300, help="slices of the timed 512x512 CT")
    p.add_argument("--large-slices", type=int, default=1000, help="slices of the memory run (0: skip it)")
    p.add_argument("--ckpt", help="a checkpoint to predict with (default: unet_small trained once, --train-minutes)")
    p.add_argument("--train-minutes", type=float, default=4.0)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, all cores)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (3 forward passes per slice)")
    p.add_argument("--no-compare", dest="compare", action="store_false", help="skip the whole-volume path")
    p.add_argument("--no-evaluate", dest="evaluate", action="store_false", help="skip evaluate.py")
    p.add_argument("--data-dir", default=str(REPO / "data/benchmark"))
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--ct", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)


def main(args) -> None:
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(CHILDREN[args.child](args)))
        return
    report(args, measure(args))
