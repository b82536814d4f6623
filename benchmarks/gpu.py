"""The GPU acceptance run: one command, about 10 minutes on one GPU, a markdown report of what this machine does.

    python -m benchmarks gpu                       # CUDA: the full check, report in gpu_check.md
    python -m benchmarks gpu --device cpu --quick  # the same code paths on tiny sizes (the test suite runs this)
    python -m benchmarks gpu --budget-s 480        # within 8 minutes: the core first, then what fits (gpu_plan.py)

Sections of the report (--out, also printed):

1. Environment: Python, torch, CUDA, cuDNN, the GPU(s) and their memory, CPUs, lits.
2. AMP smoke training: `debug=smoke` with `trainer.amp=fp16` (autocast + GradScaler) trained to a finished checkpoint,
   then evaluated as `python evaluate.py ckpt=.../best.pt` does (the checkpoint is evaluable end to end).
3. Training throughput for unet_small, unet and resunet34 at 256x256 crops and batch 8 / 16 / 32 (trainer.amp=auto:
   fp16 on CUDA): the pure step (forward, loss, backward, optimizer on one batch already on the device, augmented
   once), the full loop (the training loop's own `train_epoch`: sampler, loader workers reading crops, augmentation
   on the device, the step, hooks), their ratio, the peak GPU memory, and the host synchronisations per step of a
   third, untimed epoch (CUDA's sync debug mode; on the CPU the stand-in of benchmarks/host_reads.py): the loop
   reads its losses back every 10 steps, so about 0.1 plus an epoch's end. Every (model, batch) runs with
   channels_last and without torch.compile (the defaults); channels_last off and torch.compile on are measured at
   batch 16 (--all-variants: at every batch).
4. Loader alone: crops/s from the cache with the training loader's settings (data.num_workers workers), and the
   crops/s one worker sustains per CPU-second (benchmarks/crops.py).
5. predict.py on a 512 x 512 x 300 CT with the unet_small just measured, split into reading, preprocessing, network,
   post-processing and writing (benchmarks/infer.py).
6. DDP: a 2-process NCCL `torchrun` smoke training when two GPUs are visible (skipped otherwise).

Synthetic 512 x 512 data (LiTS-sized slices) is generated once into --data-dir. Nothing here is asserted: the report
is what the person with the GPU pastes into an issue or docs/how_to/gpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.gpu_plan import Budget, Plan, plan_for
from benchmarks.host_reads import host_reads
from benchmarks.probes import REPO, cpu_model, say
from benchmarks.steps import build_benchmark_run, pure_step_rate


# ---------------------------------------------------------------------------------------------- helpers
def compose(overrides: list[str]):
    """A typed training config composed from configs/ as train.py composes it."""
    from lits.core.compose import compose_config

    return compose_config("train", overrides)


def data_overrides(args, plan: Plan) -> list[str]:
    d = plan.data
    return [
        f"data.synthetic.size={d['size']}",
        f"data.synthetic.num_cases={d['cases']}",
        f"data.synthetic.num_slices=[{d['slices'][0]},{d['slices'][1]}]",
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        f"paths.root_dir={REPO}",
    ]


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- 1. environment
def environment(device) -> list[dict]:
    import torch

    import lits

    rows = [
        {"item": "python", "value": platform.python_version()},
        {"item": "torch", "value": torch.__version__},
        {"item": "CUDA (torch build)", "value": torch.version.cuda or "none"},
        {"item": "cuDNN", "value": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none"},
        {"item": "device", "value": str(device)},
        {"item": "CPU", "value": cpu_model()},
        {"item": "lits", "value": lits.__version__},
    ]
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        rows.append({"item": f"GPU {i}", "value": f"{p.name}, {p.total_memory / 2**30:.1f} GiB, sm {p.major}{p.minor}"})
    return rows


# ---------------------------------------------------------------------------------------------- 2. AMP smoke
def amp_smoke(args, work: Path) -> list[dict]:
    """debug=smoke with fp16 to a finished best.pt, then evaluated on the test split."""
    from lits.evaluate.scoring import evaluate_checkpoint
    from lits.train.task import train

    run_dir = work / "smoke"
    # a constant loss schedule: the epochs' losses are comparable (the progressive one changes the loss each epoch)
    overrides = ["debug=smoke", "loss.schedule.kind=constant", "trainer.amp=fp16", f"trainer.device={args.device}",
                 "trainer.progress=false", "trainer.log_images=false", "trainer.resume=null",
                 f"paths.output_dir={run_dir}", f"paths.root_dir={work}",
                 f"paths.data_dir={Path(args.data_dir).resolve()}"]  # fmt: skip
    started = time.perf_counter()
    summary = train(compose(overrides))
    train_s = time.perf_counter() - started
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    started = time.perf_counter()
    metrics = evaluate_checkpoint(run_dir / "checkpoints/best.pt", work / "smoke_evaluate", "test")
    post = metrics["post"]
    return [
        {
            "training s": train_s,
            "epochs": summary["epochs"],
            "loss first -> last epoch": f"{history[0]['train/loss']:.3f} -> {history[-1]['train/loss']:.3f}",
            "grad scale": history[-1]["train/grad_scale"],
            "bad steps": summary["bad_steps"],
            "evaluate s": time.perf_counter() - started,
            "test liver Dice": post["liver_dice_per_case"],
            "test tumour Dice": post["tumor_dice_per_case"],
            "evaluable": "yes",
        }
    ]


# ---------------------------------------------------------------------------------------------- 3. throughput
def measure_config(args, plan: Plan, work: Path, model: str, batch: int, channels_last: bool, compiled: bool,
                   keep: Path | None = None) -> dict:  # fmt: skip
    """One row: the loop's second epoch and the pure step, with the run built by train.py's own setup."""
    import torch

    from lits.infer.checkpoint import save_checkpoint
    from lits.train.fit import run_summary, train_epoch

    run_dir = work / f"{model}-b{batch}-cl{int(channels_last)}-c{int(compiled)}"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [f"model={model}", f"trainer.batch_size={batch}", f"data.crop_size={plan.crop}",
                 f"data.sampling.samples_per_epoch={plan.steps * batch}", f"trainer.channels_last={channels_last}",
                 f"trainer.compile={compiled}", "trainer.amp=auto", f"trainer.device={args.device}",
                 "trainer.progress=false", "trainer.log_images=false", "trainer.resume=null",
                 f"paths.output_dir={run_dir}", *data_overrides(args, plan)]  # fmt: skip
    workers = args.workers if args.workers is not None else plan.workers
    if workers is not None:
        overrides.append(f"data.num_workers={workers}")
    cfg = compose(overrides)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run = build_benchmark_run(cfg)
    run.hooks.before_train(run)
    run.started = time.time()
    rates = []
    for _ in range(2):  # the first epoch warms up (workers, cuDNN autotuning, compilation)
        outcome = train_epoch(run)
        run.state.end_epoch({})
        rates.append(outcome.steps * batch / outcome.seconds)
    with host_reads(run.device) as reads:  # a third epoch, untimed: watching slows it
        watched = train_epoch(run)
        run.state.end_epoch({})
    pure = pure_step_rate(run, plan.pure_steps)
    memory = torch.cuda.max_memory_allocated(run.device) / 2**30 if run.device.type == "cuda" else None
    if keep is not None:  # a real checkpoint of this run (for the predict section)
        save_checkpoint(run.checkpoint([run.state.rank_state(run.device, False)], {}), keep)
    run.hooks.after_train(run, run_summary(run))
    del run
    gc.collect()
    return {
        "model": model,
        "batch": batch,
        "channels_last": "on" if channels_last else "off",
        "compile": "on" if compiled else "off",
        "pure step samples/s": pure,
        "loop samples/s": rates[1],
        "loop / pure": f"{100 * rates[1] / pure:.0f}%",
        "host syncs / step": len(reads) / watched.steps,
        "peak GPU GiB": memory if memory is not None else "- (CPU)",
    }


def throughput(args, plan: Plan, work: Path, ckpt: Path, budget: Budget) -> list[dict]:
    """Every (model, batch) row, smallest first, while the budget allows (the first row always runs)."""
    rows = []
    for model in plan.models:
        for batch in sorted(plan.batches):
            variants = [(True, False)]
            if args.all_variants or batch == plan.variant_batch:
                variants += [(False, False)] + ([(True, True)] if plan.compile else [])
            for channels_last, compiled in variants:
                what = f"throughput {model} batch {batch} channels_last={channels_last} compile={compiled}"
                if not budget.allows_row(model, batch, what):
                    continue
                say(f"{what} ...")
                keep = ckpt if (model, batch, channels_last, compiled) == ("unet_small", min(plan.batches), True,
                                                                            False) else None  # fmt: skip
                started = time.perf_counter()
                rows.append(measure_config(args, plan, work, model, batch, channels_last, compiled, keep))
                budget.row_done(time.perf_counter() - started, batch, model)
    return rows


# ---------------------------------------------------------------------------------------------- 4. loader
def loader_only(args, plan: Plan) -> list[dict]:
    """The training data's crops read as the training loader reads them, without a model."""
    from benchmarks import crops
    from lits.data.prepare import prepare
    from lits.data.sampling import SliceIndex, TrainSlices

    output = f"paths.output_dir={Path(args.data_dir).resolve() / 'runs'}"  # composed, never written to
    cfg = compose([f"data.crop_size={plan.crop}", output, *data_overrides(args, plan)])
    workers = plan.crops["workers"] or (args.workers if args.workers is not None else cfg.data.num_workers)
    _, cases = prepare(cfg.data, cfg.seed, only=("train",), progress=False)
    index = SliceIndex(cases["train"])
    dataset = TrainSlices(index, plan.crop, cfg.data.sampling, seed=cfg.seed)
    weights = index.weights(cfg.data.sampling)
    batch = plan.crops["batch_size"]
    options = argparse.Namespace(batch_size=batch, batches=plan.crops["batches"], warmup=2, workers=workers)
    alone = crops.in_process(dataset, crops.draws_of(weights, 8 * batch, 0), batch, batched=True)
    loader = crops.with_workers(dataset, weights, options, batched=True, epoch=1)
    per_worker = f"{1000 / loader['cpu_ms']:.0f}" if loader["cpu_ms"] > 0 else "- (too short to measure)"
    return [
        {
            "crop": plan.crop,
            "batch": batch,
            "workers": workers,
            "loader crops/s": loader["crops_per_s"],
            "per worker crops per CPU-second": per_worker,
            "one process, one thread crops/s": alone["crops_per_s"],
        }
    ]


# ---------------------------------------------------------------------------------------------- 5. predict
def predict_time(args, plan: Plan, ckpt: Path) -> list[dict]:
    from benchmarks import infer

    options = argparse.Namespace(device=args.device, threads=0, tta=False, data_dir=args.data_dir)
    ct, _ = infer.make_ct(Path(args.data_dir).resolve() / "infer" / f"ct{plan.ct_size}", plan.ct_slices,
                                    plan.ct_size)  # fmt: skip
    result = infer.run_predict_child(options, "predict", ct, ckpt)
    row = {"CT": f"{plan.ct_size}x{plan.ct_size}x{plan.ct_slices}", "total s": result["total_s"]}
    row.update({f"{stage} s": seconds for stage, seconds in result["stages"].items() if stage != "metrics"})
    row["peak RSS MB"] = result["peak_rss_mb"]
    return [row]


# ---------------------------------------------------------------------------------------------- 6. DDP
def ddp_smoke(args, work: Path) -> list[dict]:
    import torch

    gpus = torch.cuda.device_count() if args.device == "cuda" and torch.cuda.is_available() else 0
    if gpus < 2:
        reason = "CPU mode (the gloo path runs in the test suite)" if args.device != "cuda" else f"{gpus} GPU visible"
        return [{"run": "torchrun --nproc_per_node=2 (NCCL)", "result": f"skipped: {reason}"}]
    run_dir = work / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "train.py"), "debug=smoke", "trainer.amp=fp16", "trainer.device=cuda",
               "trainer.dist_backend=nccl", "trainer.progress=false", "trainer.resume=null",
               f"paths.data_dir={Path(args.data_dir).resolve()}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - started
    ok = result.returncode == 0 and (run_dir / "checkpoints/best.pt").exists()
    detail = "best.pt written" if ok else (result.stderr.strip().splitlines() or ["no output"])[-1][:200]
    return [{"run": "torchrun --nproc_per_node=2 (NCCL)", "result": ("ok: " if ok else "FAILED: ") + detail,
             "seconds": seconds}]  # fmt: skip


# ---------------------------------------------------------------------------------------------- main
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", help="cuda (the check) | cpu (the same code paths, slowly)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds to minutes, for the test suite")
    parser.add_argument("--out", default="gpu_check.md", help="the markdown report")
    parser.add_argument("--data-dir", default=str(REPO / "data/benchmark/gpu_check"))
    parser.add_argument("--workers", type=int, help="data.num_workers of the loop (default: the schema's)")
    parser.add_argument("--all-variants", action="store_true", help="channels_last off / compile on at every batch")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--compile", action="store_true", help="with --quick: also the torch.compile rows")
    parser.add_argument(
        "--budget-s",
        type=float,
        help="finish within about this many seconds: the core first, then "
        "larger sizes and the other sections while time remains; the report lists what was skipped",
    )


def main(args) -> int:
    import torch

    from lits.core.device import resolve_device
    from lits.core.errors import LitsError

    try:
        device = resolve_device(args.device, key="--device")
    except LitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = plan_for(args)
    work = Path(args.data_dir).resolve() / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    budget = Budget(args.budget_s)
    sections = [("Environment", environment(device), ["item", "value"])]

    def section(title: str, measure, share: str | None = None):
        if share is not None and not budget.allows_section(share, title):
            say(f"{title}: skipped (budget)")
            return
        say(f"{title} ...")
        begun = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # what the stages print is progress; the report is stdout
            rows = measure()
        seconds = time.perf_counter() - begun
        say(f"{title}: {seconds:.0f} s")
        sections.append((f"{title} ({seconds:.0f} s)", rows, list(rows[0])))

    section("fp16 AMP smoke training and evaluation (debug=smoke)", lambda: amp_smoke(args, work))
    ckpt = work / "unet_small-checkpoint.pt"  # written by the unet_small row of the throughput section
    title = f"Training throughput, {plan.crop}x{plan.crop} crops, amp {'fp16' if device.type == 'cuda' else 'off'}, "
    title += f"{plan.steps} steps per epoch"
    section(title, lambda: throughput(args, plan, work, ckpt, budget))
    section("Loader alone (reading crops from the cache)", lambda: loader_only(args, plan), "loader")
    section("predict.py, unet_small, synthetic CT (.nii.gz)", lambda: predict_time(args, plan, ckpt), "predict")
    section("DDP", lambda: ddp_smoke(args, work), "ddp")
    if budget.skipped:
        sections.append(("Skipped to keep the budget", [{"skipped": what} for what in budget.skipped], ["skipped"]))
    load = os.getloadavg()[0]
    command = " ".join(["python -m benchmarks", *sys.argv[1:]])
    head = (f"# lits GPU check\n\n{time.strftime('%Y-%m-%d %H:%M')}, `{command}`, "
            f"{budget.used() / 60:.1f} min, load average at the end {load:.1f}, torch threads "
            f"{torch.get_num_threads()}\n\n{budget.summary()}\n")  # fmt: skip
    text = head + "".join(f"\n## {name}\n\n{table(rows, cols)}\n" for name, rows, cols in sections)
    Path(args.out).write_text(text)
    print(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
