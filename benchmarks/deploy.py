"""Deployment without torch: predict.py with an exported model (onnxruntime) against the same checkpoint (torch), side
by side in one run, as ratios; printed, never asserted.

    python -m benchmarks deploy [--slices 300] [--ckpt PATH] [--repeats 2]

Input: the synthetic 512 x 512 x --slices CT of benchmarks/infer.py and its unet_small checkpoint (--ckpt, or
trained once; see there). The checkpoint is exported once (export.py) next to it. Each measurement is a child process
running predict.py as a user would (`ckpt=` or `model=`), alternating torch / onnxruntime --repeats times: wall time
(imports included: that is what a user waits for), CPU time, and peak RSS (the child's own, from wait4). The label
maps of the two are compared voxel for voxel. Then the network alone: one 16-slice 512 x 512 batch, torch against
onnxruntime in this process (median of 5), which says whether a difference comes from the network or around it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.infer import make_ct, trained_checkpoint
from benchmarks.probes import REPO, cpu_model, say


def run_predict(source: str, ct: Path, out: Path) -> dict:
    """predict.py with `source` (ckpt=... or model=...) in a child: wall s, CPU s, peak RSS MB."""
    argv = [sys.executable, str(REPO / "predict.py"), source, f"input={ct}", f"output={out}", "progress=false",
            "overwrite=true"]  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict.py {source} failed:\n{child.stderr.read()[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def export_once(ckpt: Path) -> Path:
    folder = ckpt.parent / "onnx"
    if not (folder / "inference.json").exists():
        subprocess.run([sys.executable, str(REPO / "export.py"), f"ckpt={ckpt}", f"output={folder}"], cwd=REPO,
                       check=True)  # fmt: skip
    return folder


def network_alone(ckpt: Path, folder: Path) -> dict:
    """Median seconds of one 16 x 1 x 512 x 512 forward pass: torch (inference mode) and onnxruntime (CPU)."""
    import numpy as np
    import onnxruntime
    import torch

    from lits.infer.checkpoint import load_model

    model, _, _ = load_model(ckpt, torch.device("cpu"))
    batch = np.random.default_rng(0).random((16, 1, 512, 512), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    runs = {
        "torch": lambda: model(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)),
        "onnxruntime": lambda: session.run(["logits"], {"image": batch}),
    }
    seconds = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()  # warm-up
            times = []
            for _ in range(5):
                started = time.perf_counter()
                run()
                times.append(time.perf_counter() - started)
            seconds[name] = statistics.median(times)
    return seconds


def same_labels(a: Path, b: Path) -> int:
    """Voxels that differ between the label maps in two output folders."""
    import nibabel as nib
    import numpy as np

    return sum(
        int(np.count_nonzero(np.asarray(nib.load(p).dataobj) != np.asarray(nib.load(b / p.name).dataobj)))
        for p in sorted(a.glob("*.nii.gz"))
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slices", type=int, default=300, help="slices of the 512x512 CT")
    parser.add_argument("--ckpt", help="a checkpoint (default: the infer benchmark's unet_small, trained once)")
    parser.add_argument("--train-minutes", type=float, default=4.0, help="training of the default checkpoint")
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # what trained_checkpoint reads
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--data-dir", default=str(REPO / "data/benchmark"))


def main(args) -> None:
    folder = Path(args.data_dir).resolve() / "infer"
    ct, _ = make_ct(folder / "ct", args.slices)
    ckpt = trained_checkpoint(args).resolve()
    model = export_once(ckpt)
    rows = {"torch (ckpt=)": [], "onnxruntime (model=)": []}
    outs = {name: folder / f"out-onnx-benchmark-{i}" for i, name in enumerate(rows)}
    for _ in range(args.repeats):
        for (name, runs), source in zip(rows.items(), (f"ckpt={ckpt}", f"model={model}")):
            say(f"{name}: predicting {ct.name} ...")
            runs.append(run_predict(source, ct, outs[name]))
    differing = same_labels(*outs.values())
    alone = network_alone(ckpt, model)

    print(f"\npredict.py on a synthetic 512x512x{args.slices} CT (.nii.gz), {ckpt.parent.parent.name}; {cpu_model()}; "
          f"median of {args.repeats} alternating runs each")  # fmt: skip
    print(f"{'path':<22} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    medians = {}
    for name, runs in rows.items():
        medians[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = medians[name]
        print(f"{name:<22} {m['wall_s']:>8.1f} {m['cpu_s']:>8.1f} {m['peak_rss_mb']:>12.0f}")
    torch_row, onnx_row = medians.values()
    wall, rss = (onnx_row[k] / torch_row[k] for k in ("wall_s", "peak_rss_mb"))
    print(f"onnxruntime / torch: wall x{wall:.2f}, peak RSS x{rss:.2f}; label maps: {differing} voxels differ")
    print(f"network alone, one 16x1x512x512 batch: torch {alone['torch']:.2f} s, onnxruntime "
          f"{alone['onnxruntime']:.2f} s (x{alone['onnxruntime'] / alone['torch']:.2f})")  # fmt: skip
