#!/usr/bin/env python
"""Whole-CT inference: where predict.py's time goes, per stage, and its peak memory (printed, never asserted).

    python scripts/benchmark.py infer [--slices 300] [--large-slices 1000] [--ckpt PATH] [--threads N] [--device cpu]
    python scripts/benchmark_infer.py ...          (the same, standalone)

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
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("reading", "preprocessing", "network", "batching", "post-processing", "metrics", "writing", "other")


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """This process's peak RSS since exec: VmHWM (getrusage's ru_maxrss would include the parent's before the fork)."""
    return _status_mb("VmHWM")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Exclusive seconds per stage: a timed call nested in another is charged to its own stage only."""

    def __init__(self, device=None):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.stack: list[list] = []  # [stage, start, nested seconds]
        self.cuda = device is not None and device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def enter(self, stage: str) -> None:
        self.sync()
        self.stack.append([stage, time.perf_counter(), 0.0])

    def leave(self) -> None:
        self.sync()
        stage, start, nested = self.stack.pop()
        spent = time.perf_counter() - start
        self.seconds[stage] += spent - nested
        if self.stack:
            self.stack[-1][2] += spent

    def wrap(self, module, name: str, stage: str) -> None:
        """Replace module.name by a timed call (the benchmark's instrumentation; nothing else changes)."""
        fn = getattr(module, name)

        def timed(*args, **kwargs):
            self.enter(stage)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()

        setattr(module, name, timed)

    def time_forward(self, model) -> None:
        """Charge the model's forward passes to `network`."""
        model.register_forward_pre_hook(lambda *_: self.enter("network"))
        model.register_forward_hook(lambda *_: self.leave())


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
        print(f"training unet_small for {args.train_minutes:g} min into {run} (once)", file=sys.stderr, flush=True)
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


# ---------------------------------------------------------------------------------------------- children
def predict_child(args) -> dict:
    """The predict task with a clock on every stage."""
    import torch

    import lits.data.nifti
    import lits.data.preprocess
    import lits.infer.checkpoint
    import lits.infer.predict
    from lits.core.config import PredictConfig, typed

    baseline, cpu0 = rss_mb(), cpu_s()
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    clock = Clock(device)
    predict = lits.infer.predict
    clock.wrap(lits.data.nifti, "_open", "reading")  # headers, and the stored voxels (all of them for .nii.gz)
    clock.wrap(lits.data.nifti._Source, "scaled", "reading")  # stored voxels -> HU, slab by slab
    clock.wrap(lits.data.preprocess, "window_to_unit", "preprocessing")
    clock.wrap(lits.data.preprocess, "resize_inplane", "preprocessing")
    clock.wrap(predict, "preprocess_pair", "preprocessing")  # the float16 copy; its reads are charged above
    clock.wrap(predict, "predict_masks", "batching")  # minus the forward passes, charged to `network`
    for name in ("postprocess_masks", "count_lesions"):
        clock.wrap(predict, name, "post-processing")
    for name in ("export_labels", "export_probabilities", "read_header", "write_csv"):
        clock.wrap(predict, name, "writing")
    load_model = lits.infer.checkpoint.load_model  # what predict imports when it opens a checkpoint

    def load_and_time(*a, **kw):
        model, spec, state = load_model(*a, **kw)
        clock.time_forward(model)
        return model, spec, state

    lits.infer.checkpoint.load_model = load_and_time
    out = Path(args.out)
    cfg = typed(
        PredictConfig,
        {
            "ckpt": args.ckpt,
            "input": args.ct,
            "output": str(out / "labels"),
            "device": args.device,
            "progress": False,
            "tta": args.tta,
            "paths": {"root_dir": str(out), "output_dir": str(out / "run"), "data_dir": str(out)},
        },
    )
    started = time.perf_counter()
    predict.predict(cfg)
    total = time.perf_counter() - started
    clock.seconds["other"] = total - sum(clock.seconds.values())
    return {"total_s": total, "stages": clock.seconds, "peak_rss_mb": peak_rss_mb(), "baseline_mb": baseline,
            "cpu_s": cpu_s() - cpu0}  # fmt: skip


def whole_volume_child(args) -> dict:
    """predict.py's steps as they were before streaming: whole float32 volumes, a contiguous copy before writing."""
    import numpy as np
    import torch

    from lits.data.nifti import CasePaths, load_case
    from lits.data.preprocess import preprocess_image
    from lits.data.resample import resize_inplane
    from lits.infer.checkpoint import load_model
    from lits.infer.export import save_nifti
    from lits.infer.postprocess import postprocess, predicted_lesions
    from lits.infer.predictor import predict_volume

    baseline, cpu0 = rss_mb(), cpu_s()
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    clock = Clock(device)
    started = time.perf_counter()
    model, spec, _ = load_model(args.ckpt, device)
    clock.time_forward(model)
    clock.enter("reading")
    case = load_case(CasePaths("ct", Path(args.ct), None))
    clock.leave()
    clock.enter("preprocessing")
    image = preprocess_image(case.image, case.spacing, spec.preprocessing).astype(np.float16)
    native_yx, case.image = case.image.shape[1:], None
    clock.leave()
    clock.enter("batching")
    probs = predict_volume(
        model, image, device, flips=((), (3,), (2,)) if args.tta else ((),), **spec.predictor_settings()
    )
    if probs.shape[2:] != native_yx:
        probs = resize_inplane(probs, native_yx, order=1)
    clock.leave()
    clock.enter("post-processing")
    labels = postprocess(probs[0], probs[1], spec.postprocess)
    float((labels >= 1).sum()), float((labels == 2).sum()), predicted_lesions(labels == 2)[1]
    clock.leave()
    clock.enter("writing")
    source = np.ascontiguousarray(case.orientation.to_source(labels))
    save_nifti(Path(args.out) / "whole_volume.nii.gz", source, case.orientation.source_affine)
    clock.leave()
    total = time.perf_counter() - started
    clock.seconds["other"] = total - sum(clock.seconds.values())
    return {"total_s": total, "stages": clock.seconds, "peak_rss_mb": peak_rss_mb(), "baseline_mb": baseline,
            "cpu_s": cpu_s() - cpu0}  # fmt: skip


def evaluate_child(args) -> dict:
    """evaluate.py (checkpoint mode, default ablation) on the CT and its reference, cached first (not timed)."""
    import dataclasses

    import torch

    import lits.evaluate.scoring
    import lits.evaluate.sources
    from lits.core.config import EvaluateConfig, PathsConfig
    from lits.data.prepare import prepare
    from lits.infer.checkpoint import load_checkpoint, save_checkpoint
    from lits.infer.spec import data_from_checkpoint

    out = Path(args.out)
    state = load_checkpoint(args.ckpt)  # the same network, pointed at a one-case data set: test = [the CT]
    data = dataclasses.replace(
        data_from_checkpoint(state, args.ckpt), name="lits", root=str(Path(args.ct).parent), synthetic=None
    )
    data = dataclasses.replace(data, cache_dir=str(out / "cache"), liver_margin_mm=None)
    state["config"]["data"] = dataclasses.asdict(data)
    state["splits"] = {"train": [], "val": [], "test": [Path(args.ct).name.split("-")[1].split(".")[0]]}
    ckpt = save_checkpoint(state, out / "ckpt/best.pt")
    prepare(data, 0, splits=state["splits"], only=("test",), progress=False)  # the cache, once
    baseline, cpu0 = rss_mb(), cpu_s()
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    clock = Clock(device)
    sources, scoring = lits.evaluate.sources, lits.evaluate.scoring
    clock.wrap(sources, "predict_volume", "batching")
    clock.wrap(sources, "postprocess", "post-processing")
    clock.wrap(scoring, "case_metrics", "metrics")
    clock.wrap(scoring, "case_outputs", "writing")
    load_model = sources.load_model

    def load_and_time(*a, **kw):
        model, spec, st = load_model(*a, **kw)
        clock.time_forward(model)
        return model, spec, st

    sources.load_model = load_and_time
    paths = dataclasses.replace(PathsConfig(), output_dir=str(out / "evaluate"))
    cfg = EvaluateConfig(ckpt=str(ckpt), split="test", device=args.device, progress=False, paths=paths)
    started = time.perf_counter()
    scoring.evaluate(cfg)
    total = time.perf_counter() - started
    clock.seconds["other"] = total - sum(clock.seconds.values())
    return {"total_s": total, "stages": clock.seconds, "peak_rss_mb": peak_rss_mb(), "baseline_mb": baseline,
            "cpu_s": cpu_s() - cpu0}  # fmt: skip


CHILDREN = {"predict": predict_child, "whole-volume": whole_volume_child, "evaluate": evaluate_child}


def run_child(args, mode: str, ct: Path, ckpt: Path) -> dict:
    out = Path(args.data_dir).resolve() / "infer" / f"out-{mode}-{ct.name.split('.')[0]}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = [sys.executable, __file__, "--child", mode, "--ct", str(ct), "--ckpt", str(ckpt), "--out", str(out)]
    argv += ["--device", args.device, "--threads", str(args.threads)] + (["--tta"] if args.tta else [])
    print(f"{mode}: {ct.name} ...", file=sys.stderr, flush=True)
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"benchmark child {mode} failed (exit {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    """{row name: child result}; what gpu_check.py also calls."""
    folder = Path(args.data_dir).resolve() / "infer"
    ct, _ = make_ct(folder / "ct", args.slices)
    ckpt = trained_checkpoint(args)
    rows = {f"predict {args.slices} slices": run_child(args, "predict", ct, ckpt)}
    if args.compare:
        rows[f"whole-volume {args.slices} slices"] = run_child(args, "whole-volume", ct, ckpt)
    if args.evaluate:
        rows[f"evaluate {args.slices} slices"] = run_child(args, "evaluate", ct, ckpt)
    if args.large_slices:
        large, _ = make_ct(folder / "ct", args.large_slices)
        rows[f"predict {args.large_slices} slices"] = run_child(args, "predict", large, ckpt)
    return rows


def report(args, rows: dict) -> None:
    import torch

    threads = args.threads or torch.get_num_threads()
    print(
        f"\nwhole-CT inference: synthetic 512x512 CTs (.nii.gz), unet_small, device {args.device}, {threads} torch "
        f"threads, tta {args.tta}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(CHILDREN[args.child](args)))
        return
    report(args, measure(args))


if __name__ == "__main__":
    main(sys.argv[1:])
