"""The training loop: data -> model -> HybridLoss(alpha(epoch)) -> AMP steps -> validation -> checkpoints.

Plain top-to-bottom code (`train`); each piece it uses lives in its own module. One process, or one process per GPU
under torchrun (DDP, lits/distributed.py): every rank trains on its own share of each epoch's draws (LesionSampler
rank/world_size), gradients are averaged by DistributedDataParallel, and rank 0 alone validates and writes
(checkpoints, history, TensorBoard).

Faults (README "Resuming and faults"):
* `trainer.resume=auto|PATH|null` restores weights, optimizer, scheduler, scaler, epoch and in-epoch position, step,
  best metric and every RNG (python, numpy, torch, CUDA, augmentation) of every rank; the sampler is a pure function
  of (seed, epoch), so skipping the batches an epoch already consumed puts it back where it was. On CPU with
  `trainer.deterministic=true` a resumed run ends with the same weights, bit for bit, as an uninterrupted one.
* SIGTERM / SIGINT finish the current step, save last.pt (with the in-epoch position) and exit with 128 + signal.
* `trainer.save_every_steps` also saves last.pt inside long epochs.
* A non-finite loss skips the step on every rank (counted as train/bad_steps); `trainer.max_bad_steps` in a row abort.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import lits
from lits.core.device import autocast, resolve_amp
from lits.core.errors import LitsError
from lits.core.files import write_atomic, write_json
from lits.data.context import input_channels
from lits.data.normalization import Normalization, from_training_cases
from lits.data.prepare import prepare, write_split
from lits.data.sampling import LesionSampler, SamplingConfig, SliceIndex, TrainSlices
from lits.evaluate.metrics import aggregate, case_metrics
from lits.evaluate.pictures import comparison_grid
from lits.infer.checkpoint import load_checkpoint, network_settings
from lits.infer.networks import build_model, count_parameters
from lits.infer.postprocess import PostprocessConfig, postprocess, probabilities_to_labels
from lits.infer.predictor import predict_volume
from lits.train import distributed
from lits.train.augment import AugmentConfig, BatchAugment
from lits.train.checkpoint import (
    check_compatible,
    config_differences,
    remove_stale_temps,
    resume_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from lits.train.deep_supervision import supervised_loss
from lits.train.loss import HybridLoss, alpha_at, targets_from_labels
from lits.train.optim import TimeBudget, build_optimizer, lr_at, set_lr

log = logging.getLogger(__name__)

AUGMENT_SEED_STRIDE = 1_000_003  # rank r's augmentation generator starts at seed + r * stride (rank 0: the run seed)
# Settings whose change on resume is expected (not worth a warning).
RESUME_IGNORED = (
    "paths",
    "trainer.resume",
    "trainer.progress",
    "trainer.debug_nan_steps",
    "trainer.debug_kill_at_step",
    "trainer.debug_kill_signal",
    "trainer.debug_sample_log",
    "data.root",
    "data.cache_dir",
)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels


def validate(
    model, cases, cfg, device, amp: str, post_cfg: PostprocessConfig, normalization: Normalization | None = None
) -> tuple[dict, list[dict], np.ndarray | None]:
    """3D per-case Dice on whole validation volumes, raw and post-processed; plus an overlay picture.

    Under DDP only rank 0 calls this, on the unwrapped model: the numbers are those of a single-process evaluation
    of the same weights by construction (same code, same cases, same order, same batches).
    """
    raw_rows, post_rows, picture = [], [], None
    # the same network settings evaluate/predict read from the checkpoint
    infer = {**network_settings(cfg), "normalization": normalization, "tta": bool(cfg.trainer.get("val_tta", False))}
    shown = []
    for case in cases:
        probs = predict_volume(model, case.image, device, cfg.trainer.val_batch_size, amp, **infer)
        raw = probabilities_to_labels(probs[0], probs[1], post_cfg.threshold)
        post = postprocess(probs[0], probs[1], post_cfg)
        label = np.asarray(case.label)
        raw_rows.append({"case": case.case_id, **case_metrics(raw, label, case.spacing, detail="dice")})
        post_rows.append({"case": case.case_id, **case_metrics(post, label, case.spacing, detail="dice")})
        if cfg.trainer.log_images and len(shown) < 4:
            z = int(np.argmax(case.stats["tumor_voxels"] + case.stats["liver_voxels"] * 1e-6))
            shown.append((np.asarray(case.image[z], np.float32), label[z], post[z]))
    raw_summary, post_summary = aggregate(raw_rows), aggregate(post_rows)
    metrics = {
        "val/liver_dice": raw_summary["liver_dice_per_case"],
        "val/tumor_dice": raw_summary["tumor_dice_per_case"],
        "val/tumor_dice_global": raw_summary["tumor_dice_global"],
        "val/liver_dice_post": post_summary["liver_dice_per_case"],
        "val/tumor_dice_post": post_summary["tumor_dice_per_case"],
        "val/tumor_dice_global_post": post_summary["tumor_dice_global"],
    }
    if shown:
        picture = comparison_grid(*zip(*shown))
    return metrics, post_rows, picture


# ---------------------------------------------------------------------------------------------- loop helpers
class PositionedSampler(Sampler):
    """The LesionSampler, started `skip` draws into the epoch (resume mid-epoch), optionally recording its draws.

    The draws are a pure function of (seed, epoch, rank, world_size) and each crop is seeded by its draw id, so
    skipping the draws already consumed resumes the epoch exactly, without reading their crops.
    """

    def __init__(self, sampler: LesionSampler, record: bool = False):
        self.sampler, self.record = sampler, record
        self.skip, self.drawn = 0, []

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip, self.drawn = skip, []

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)

    def __iter__(self):
        for i, item in enumerate(self.sampler):
            if i < self.skip:
                continue
            if self.record:
                self.drawn.append(item)
            yield item


def _quiet_worker(_worker_id: int) -> None:
    """Loader workers ignore SIGINT/SIGTERM: the main process handles them (finishes the step, saves) and then
    shuts the workers down itself; a worker dying first would abort the loop instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopRequest:
    """SIGTERM / SIGINT set a flag that the loop checks after each step; a second Ctrl-C stops at once."""

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (run() called from a thread): no graceful stop there
                pass

    def _handle(self, signum, _frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class NormStatsGuard:
    """BatchNorm running statistics change in the forward pass, before the loss is known to be finite: keep a copy
    to put back when a step is skipped (an Inf activation would otherwise poison them for good)."""

    def __init__(self, model: torch.nn.Module):
        self.buffers = list(model.buffers())
        self.saved = [b.detach().clone() for b in self.buffers]

    def save(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.saved, self.buffers)

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self.saved)


class _NoWriter:
    """TensorBoard writer of ranks > 0: writes nothing."""

    def add_scalar(self, *a, **k):
        pass

    add_image = add_text = add_scalar

    def close(self):
        pass


def _rewrite_history(path: Path, before_epoch: int, source: Path | None = None) -> None:
    """Keep the history records of epochs < before_epoch (a resumed run writes the later ones again); `source`: the
    history of the run resumed from, when that is another folder."""
    source = source if source is not None and source.exists() else path
    if not source.exists():
        return
    kept = []
    for line in source.read_text().splitlines():
        try:
            if json.loads(line)["epoch"] < before_epoch:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill
    write_atomic(path, "".join(kept))


def _check_debug(t) -> tuple[set[int], int | None, int]:
    nan_steps = {int(s) for s in (t.get("debug_nan_steps") or [])}
    kill_step = t.get("debug_kill_at_step")
    name = str(t.get("debug_kill_signal") or "SIGKILL").upper()
    try:
        signum = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise LitsError(f"trainer.debug_kill_signal={name}: not a signal name (SIGKILL, SIGTERM, SIGINT)") from None
    return nan_steps, (None if kill_step is None else int(kill_step)), int(signum)


# ---------------------------------------------------------------------------------------------- the stage
def run(cfg) -> dict:
    """Train with `cfg` in this process: alone, or as one rank of a torchrun job (process group from its env vars)."""
    ctx = distributed.setup(
        cfg.trainer.device, cfg.trainer.get("dist_backend", "auto"), cfg.trainer.get("dist_timeout_min", 30)
    )
    stop = StopRequest()
    stop.install()
    quiet = ctx.distributed and not ctx.is_main
    lits_logger = logging.getLogger("lits")
    level = lits_logger.level
    if quiet:  # only rank 0 logs progress; warnings and errors of every rank still show
        lits_logger.setLevel(logging.WARNING)
    try:
        return train(cfg, ctx, stop)
    finally:
        stop.restore()
        lits_logger.setLevel(level)
        distributed.teardown(ctx)


def train(cfg, ctx: distributed.Context, stop: StopRequest) -> dict:
    t = cfg.trainer
    main = ctx.is_main
    device = ctx.device
    amp = resolve_amp(t.amp, device)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if int(t.max_bad_steps) < 1:
        raise LitsError(
            f"trainer.max_bad_steps={t.max_bad_steps}: give the number of non-finite losses in a row that abort (>= 1)"
        )
    nan_steps, kill_step, kill_signal = _check_debug(t)
    context = int(cfg.data.get("context_slices", 0) or 0)
    if cfg.model.in_channels != input_channels(cfg.data):
        raise LitsError(
            f"model.in_channels={cfg.model.in_channels} but data.context_slices={context} gives "
            f"{input_channels(cfg.data)} input channels; set model.in_channels={input_channels(cfg.data)}"
        )
    resolved = OmegaConf.to_container(cfg, resolve=True)

    # every rank writes into rank 0's run folder (hydra resolves ${now:...} per process)
    run_dirs = distributed.all_gather_object(str(Path(cfg.paths.output_dir).resolve()))
    run_dir = Path(run_dirs[0])
    if len(set(run_dirs)) > 1:
        log.warning(
            "ranks resolved different run folders %s; rank 0's is used: pass hydra.run.dir=... with torchrun",
            sorted(set(run_dirs)),
        )
    ckpt_dir = run_dir / "checkpoints"

    # resume: rank 0 finds, loads (weights_only) and checks the checkpoint, then hands it to the other ranks,
    # so a multi-node job needs the run folder on rank 0's node only
    payload = None
    if main:
        try:
            path = resume_path(t.get("resume"), run_dir)
            state = load_checkpoint(path) if path else None
            if state is not None:
                check_compatible(state, resolved, path)
            payload = {"path": str(path) if path else None, "state": state}
        except LitsError as exc:
            payload = {"error": str(exc)}
    payload = distributed.broadcast_object(payload)
    if "error" in payload:
        raise LitsError(payload["error"])
    resume, resumed_from = payload["state"], payload["path"]
    if resume is not None and main:
        changed = config_differences(resume["config"], resolved, ignore=RESUME_IGNORED)
        log.info("resuming from %s (step %d)", resumed_from, resume.get("step", 0))
        if changed:
            log.warning(
                "resuming with changed settings (the run is no longer one uninterrupted run): %s", "; ".join(changed)
            )

    # data: generate (synthetic), cache once, split by patient. Rank 0 first, then the first process of every node
    # (node-local storage), then the rest: no two processes build the same files at once.
    given = resume["splits"] if resume is not None else None
    prepared, error = None, None
    if main:
        try:
            prepared = prepare(
                cfg.data, cfg.seed, splits=given, only=("train", "val"), progress=t.progress, report_dir=run_dir
            )
        except LitsError as exc:
            error = str(exc)
    error, given = distributed.broadcast_object((error, prepared[0] if prepared else None))
    if error:
        raise LitsError(error)
    for local_first in (True, False):
        if not main and (ctx.local_rank == 0) == local_first:
            prepared = prepare(cfg.data, cfg.seed, splits=given, only=("train", "val"), progress=False)
        distributed.barrier()
    splits, cases = prepared
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(splits, run_dir / "split.json")
    if resume is not None and resume.get("normalization"):
        normalization = Normalization.from_dict(resume["normalization"])
    else:  # deterministic from the training cases: every rank computes the same
        normalization = from_training_cases(cfg.data, cases["train"], cfg.seed)
    log.info("input normalisation: %s", normalization.describe())
    sampling = SamplingConfig(**cfg.data.sampling)
    index = SliceIndex(cases["train"])
    weights = index.weights(sampling)
    lesion_share = weights[index.tumor > 0].sum()
    log.info(
        "train: %d cases, %d slices (%d with tumour, drawn %.0f%% of the time); val: %d cases",
        len(cases["train"]),
        len(index),
        int((index.tumor > 0).sum()),
        100 * lesion_share,
        len(cases["val"]),
    )
    sampler = PositionedSampler(
        LesionSampler(weights, sampling.samples_per_epoch, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size),
        record=bool(t.get("debug_sample_log")),
    )
    loader_generator = torch.Generator()  # the loader's worker seeds come from here, not from the global torch RNG
    workers = cfg.data.num_workers
    loader = DataLoader(
        TrainSlices(index, cfg.data.crop_size, sampling, seed=cfg.seed, context_slices=context),
        batch_size=t.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=True,
        worker_init_fn=_quiet_worker if workers > 0 else None,
        generator=loader_generator,
    )
    steps_per_epoch = len(sampler.sampler) // t.batch_size
    if steps_per_epoch == 0:
        raise LitsError(
            f"data.sampling.samples_per_epoch={sampling.samples_per_epoch} gives {len(sampler.sampler)} samples per "
            f"process ({ctx.world_size} process(es)), fewer than trainer.batch_size={t.batch_size}; raise it"
        )

    # model, loss, optimisation (seeded here, after data preparation, so model init never depends on what it drew)
    seed_everything(cfg.seed, t.deterministic)
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model = build_model(cfg.model).to(device, memory_format=memory_format)  # the plain network: state_dict, validation
    log.info(
        "model %s: %.2fM parameters, device %s, amp %s", cfg.model.arch, count_parameters(model) / 1e6, device, amp
    )
    augment = BatchAugment(AugmentConfig.from_mapping(cfg.augment))
    loss_fn = HybridLoss(cfg.loss)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    lr_at(cfg.optim, 0.0, t.max_epochs)  # an unknown schedule fails here, before any training
    # the run's length: max_epochs, or what fits trainer.max_time (a resumed run keeps its plan and its spent time)
    plan = ((resume or {}).get("scheduler") or {}).get("planned_epochs") if t.get("max_time") else None
    budget = TimeBudget(
        t.get("max_time"), t.max_epochs, spent_s=float((resume or {}).get("train_seconds", 0.0)), planned=plan
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    post_cfg = PostprocessConfig.from_mapping(cfg.postprocess)
    aug_generator = torch.Generator().manual_seed(cfg.seed + AUGMENT_SEED_STRIDE * ctx.rank)
    generators = {"augment": aug_generator}

    start_epoch, start_batch, step, bad_total = 0, 0, 0, 0
    best, best_epoch = -math.inf, -1
    carried = None  # this rank's epoch sums of a mid-epoch checkpoint
    resumed_bad_in_row = 0
    if resume is not None:
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LitsError(
                f"{resumed_from}: its weights or optimizer state do not fit this run's model ({first}); "
                "resume with the settings it was trained with, or start a new run"
            ) from None
        scaler.load_state_dict(resume["scaler"])
        position = resume.get("position") or {"epoch": resume["epoch"] + 1, "batch": 0}
        start_epoch, start_batch = int(position["epoch"]), int(position["batch"])
        step, bad_total = int(resume.get("step", 0)), int(resume.get("bad_steps", 0))
        resumed_bad_in_row = int(resume.get("bad_in_row", 0))
        best, best_epoch = float(resume["best"]["value"]), int(resume["best"]["epoch"])
        ranks = resume.get("rank_states") or []
        same_layout = (len(ranks) == ctx.world_size == resume.get("world_size")) and resume.get(
            "batch_size"
        ) == t.batch_size
        if same_layout:
            set_rng_state(ranks[ctx.rank]["rng"], device, generators)
            carried = ranks[ctx.rank].get("epoch_sums") if start_batch else None
        else:
            consumed = start_batch * int(resume.get("batch_size") or t.batch_size) * int(resume.get("world_size") or 1)
            start_batch = min(steps_per_epoch, consumed // (t.batch_size * ctx.world_size))
            seed_everything(cfg.seed + step, t.deterministic)
            aug_generator.manual_seed(cfg.seed + step + AUGMENT_SEED_STRIDE * ctx.rank)
            log.warning(
                "the checkpoint was written by %s process(es) with batch size %s (now %d x %d), or holds no RNG "
                "states: resuming at the nearest batch with fresh random streams, not exactly",
                resume.get("world_size", "?"),
                resume.get("batch_size", "?"),
                ctx.world_size,
                t.batch_size,
            )
        start_batch = min(start_batch, steps_per_epoch)

    train_model = model
    if ctx.distributed:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
        )
        log.info(
            "DDP: %d processes (%s), batch %d per process = effective batch %d, lr %g",
            ctx.world_size,
            ctx.backend,
            t.batch_size,
            t.batch_size * ctx.world_size,
            cfg.optim.lr,
        )
    if t.get("compile"):
        train_model = torch.compile(train_model, mode=t.get("compile_mode") or None)
    guard = NormStatsGuard(model) if any(True for _ in model.buffers()) else None

    history_path = run_dir / "history.jsonl"
    if main:
        remove_stale_temps(ckpt_dir)
        _rewrite_history(
            history_path, start_epoch, Path(resumed_from).parent.parent / "history.jsonl" if resumed_from else None
        )
        writer = SummaryWriter(str(run_dir / "tensorboard"))
        if resume is None:
            writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg, resolve=True) + "\n```")
    else:
        writer = _NoWriter()
    monitor = t.monitor
    if start_epoch >= budget.planned:
        log.info("%s: all %d epochs are already trained; nothing to do", resumed_from, budget.planned)
    if budget.enabled:
        log.info(
            "time budget trainer.max_time=%g min: the run lasts as many epochs as fit (planned after each epoch); "
            "the LR and loss schedules are stretched from trainer.max_epochs=%d onto it",
            t.max_time,
            t.max_epochs,
        )
    val_metrics: dict = {}
    started = time.time()
    bad_in_row = resumed_bad_in_row
    stopped = False

    def checkpoint(completed_epoch: int, position: dict, rank_states: list, metrics: dict) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"planned_epochs": budget.planned},  # the LR itself is a function of the epoch (lits/optim.py)
            "train_seconds": budget.spent_s + time.time() - started,  # trainer.max_time counts every session
            "scaler": scaler.state_dict(),
            "epoch": completed_epoch,  # last completed epoch (0-based); -1 before the first
            "step": step,
            "best": {"metric": monitor, "value": best, "epoch": best_epoch},
            "metrics": metrics,
            "config": resolved,
            "splits": splits,
            "normalization": normalization.to_dict(),  # what inference must do to its input (lits/normalization.py)
            "lits_version": lits.__version__,
            "position": position,  # where training continues: epoch, batches of it already done (per rank)
            "world_size": ctx.world_size,
            "batch_size": t.batch_size,
            "rank_states": rank_states,  # per rank: RNG states and the running sums of the epoch in progress
            "bad_steps": bad_total,
            "bad_in_row": bad_in_row,
        }

    def save_position(epoch: int, batch_index: int, sums: dict) -> None:
        """last.pt in the middle of `epoch`, after `batch_index` of its batches (a collective: every rank calls it)."""
        rank_states = distributed.all_gather_object({"rng": rng_state(device, generators), "epoch_sums": dict(sums)})
        if main:
            save_checkpoint(
                checkpoint(epoch - 1, {"epoch": epoch, "batch": batch_index}, rank_states, {}), ckpt_dir / "last.pt"
            )

    epoch = start_epoch - 1
    while epoch + 1 < budget.planned:
        epoch += 1
        schedule_at = budget.position(epoch)  # schedule position: == epoch unless a time budget stretches the schedules
        alpha = alpha_at(schedule_at, cfg.loss.schedule)
        set_lr(optimizer, lr_at(cfg.optim, schedule_at, t.max_epochs))
        out_of_time = False
        first = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, skip=first * t.batch_size)
        loader_generator.manual_seed(cfg.seed * 7919 + epoch)
        train_model.train()
        sums = (
            dict(carried)
            if (carried and epoch == start_epoch)
            else {"loss": 0.0, "bce": 0.0, "dice": 0.0, "good": 0, "bad": 0}
        )
        batch_index, timed = first, 0
        epoch_start = time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{budget.planned} alpha={alpha:.2f}",
            leave=False,
            total=steps_per_epoch,
            initial=first,
            disable=not (t.progress and main),
            dynamic_ncols=True,
        )
        for batch in bar:
            if kill_step is not None and step == kill_step and ctx.rank == ctx.world_size - 1:
                os.kill(os.getpid(), kill_signal)  # TEST ONLY (trainer.debug_kill_at_step)
            image = batch["image"].to(device, non_blocking=True).float().contiguous(memory_format=memory_format)
            label = batch["label"].to(device, non_blocking=True)
            image, label = augment(image, label, aug_generator)
            image = normalization.apply(image)
            if step in nan_steps and ctx.rank == ctx.world_size - 1:
                image = image * float("nan")  # TEST ONLY (trainer.debug_nan_steps)
            if guard is not None:
                guard.save()
            with autocast(device, amp):
                logits = train_model(image)
            loss, parts = supervised_loss(loss_fn, logits, targets_from_labels(label), alpha)
            values = torch.stack([loss.detach(), parts["bce"], parts["dice"]]).float()
            # one host sync per step; under DDP one tiny all-reduce, so every rank skips (or stops) together
            flags = torch.stack(
                [
                    (~torch.isfinite(values[0])).float(),
                    values.new_full((), float(stop.signum > 0)),
                    values.new_full((), float(budget.out_of_time(time.time() - started))),
                ]
            )
            if ctx.distributed:
                distributed.all_reduce_(flags, "max")
            loss_value, bce_value, dice_value, bad, stop_now, out_of_time = torch.cat([values, flags]).tolist()
            if bad:
                if guard is not None:
                    guard.restore()
                bad_in_row += 1
                bad_total += 1
                sums["bad"] += 1
                if main:  # the decision is the same on every rank: say it once
                    log.warning(
                        "non-finite loss at epoch %d step %d: step skipped (%d in a row, trainer.max_bad_steps=%d)",
                        epoch + 1,
                        step,
                        bad_in_row,
                        t.max_bad_steps,
                    )
                if bad_in_row >= t.max_bad_steps:
                    last = ckpt_dir / "last.pt"
                    where = f"; the last good checkpoint is {last}" if last.exists() else ""
                    raise LitsError(
                        f"{bad_in_row} non-finite losses in a row (epoch {epoch + 1}, step {step}, trainer.max_bad_steps="
                        f"{t.max_bad_steps}): training diverged or the data holds NaN/Inf; lower optim.lr, keep "
                        f"trainer.grad_clip on, try trainer.amp=bf16/off, or check the data{where}"
                    )
            else:
                bad_in_row = 0
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if t.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                sums["loss"] += loss_value
                sums["bce"] += bce_value
                sums["dice"] += dice_value
                sums["good"] += 1
            step += 1
            batch_index += 1
            timed += 1
            if step % 10 == 0 and not bad:
                writer.add_scalar("train/loss_step", loss_value, step)
            if not bad:
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            if stop_now:
                stopped = True
                break
            if out_of_time:  # the budget is spent: this is the last epoch (validated and saved below)
                break
            if t.save_every_steps and step % t.save_every_steps == 0 and batch_index < steps_per_epoch:
                save_position(epoch, batch_index, sums)
        bar.close()
        epoch_time = time.perf_counter() - epoch_start
        if stopped:
            save_position(epoch, batch_index, sums)
            break

        # epoch means over every rank's good steps; the clock too, so every rank plans the same number of epochs
        totals = torch.tensor(
            [sums["loss"], sums["bce"], sums["dice"], sums["good"], time.time() - started],
            dtype=torch.float64,
            device=device,
        )
        distributed.all_reduce_(totals)
        good = max(1.0, float(totals[3]))
        if budget.enabled:
            planned = budget.planned
            budget.replan(epoch + 1, float(totals[4]) / ctx.world_size)
            if out_of_time:
                budget.planned = epoch + 1
            if abs(budget.planned - planned) >= max(1, planned // 10):  # small corrections are routine
                log.info("time budget: %d epochs planned (was %d)", budget.planned, planned)
        train_metrics = {
            "train/loss": float(totals[0]) / good,
            "train/bce": float(totals[1]) / good,
            "train/dice": float(totals[2]) / good,
            "train/alpha": alpha,
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/bad_steps": sums["bad"],
        }
        if timed:
            train_metrics["train/samples_per_s"] = timed * t.batch_size * ctx.world_size / epoch_time
        if sampler.record:  # TEST/DEBUG ONLY (trainer.debug_sample_log): what this rank drew
            debug_dir = run_dir / "debug"
            debug_dir.mkdir(parents=True, exist_ok=True)
            with open(debug_dir / f"samples-rank{ctx.rank}.jsonl", "a") as f:
                f.write(
                    json.dumps(
                        {
                            "epoch": epoch,
                            "rank": ctx.rank,
                            "slices": [s for s, _ in sampler.drawn],
                            "draws": [d for _, d in sampler.drawn],
                        }
                    )
                    + "\n"
                )

        is_last = epoch == budget.planned - 1
        if main and ((epoch + 1) % t.val_every == 0 or is_last):
            # rank 0 validates the plain model; the others wait in the gather below
            val_metrics, _, picture = validate(model, cases["val"], cfg, device, amp, post_cfg, normalization)
            if picture is not None:
                writer.add_image("val/overlay", picture, epoch, dataformats="HWC")
        rank_states = distributed.all_gather_object(
            {"rng": rng_state(device, generators), "epoch_sums": None, "stop": stop.signum > 0}
        )
        improved = monitor in val_metrics and val_metrics[monitor] > best
        if improved:
            best, best_epoch = val_metrics[monitor], epoch
        if main:
            for k, v in {**train_metrics, **val_metrics}.items():
                writer.add_scalar(k, v, epoch)
            record = {
                "epoch": epoch,
                "step": step,
                "elapsed_s": round(time.time() - started, 1),
                **train_metrics,
                **val_metrics,
            }
            with open(history_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            state = checkpoint(epoch, {"epoch": epoch + 1, "batch": 0}, rank_states, val_metrics)
            save_checkpoint(state, ckpt_dir / "last.pt")
            if improved:
                save_checkpoint(state, ckpt_dir / "best.pt")
        shown = " ".join(
            f"{k.split('/')[1]}={v:.4f}"
            for k, v in val_metrics.items()
            if k in (monitor, "val/liver_dice", "val/tumor_dice_post")
        )
        log.info(
            "epoch %d/%d alpha=%.2f loss=%.4f (bce %.4f dice %.4f) %.0f samples/s%s %s%s",
            epoch + 1,
            budget.planned,
            alpha,
            train_metrics["train/loss"],
            train_metrics["train/bce"],
            train_metrics["train/dice"],
            train_metrics.get("train/samples_per_s", 0.0),
            f" bad_steps={sums['bad']}" if sums["bad"] else "",
            shown,
            " *best*" if improved else "",
        )
        val_metrics = {}
        if any(s["stop"] for s in rank_states):
            stopped = True
            break

    writer.close()
    if stopped:
        signum = stop.signum or signal.SIGTERM
        log.warning(
            "stopped by %s at step %d: last.pt saved in %s; continue with trainer.resume=auto (same hydra.run.dir)",
            signal.Signals(signum).name,
            step,
            ckpt_dir,
        )
        raise SystemExit(128 + signum)
    summary = {
        "best_metric": monitor,
        "best_value": best,
        "best_epoch": best_epoch,
        "epochs": epoch + 1,
        "max_time": t.get("max_time"),
        "minutes": round((time.time() - started) / 60, 2),
        "run_dir": str(run_dir),
        "bad_steps": bad_total,
        "world_size": ctx.world_size,
        "resumed_from": resumed_from,
    }
    if main:
        write_json(run_dir / "train_summary.json", summary)
        if cfg.get(
            "evaluate_after"
        ):  # the test-set numbers of this run, as `python evaluate.py ckpt=.../best.pt` gives
            from lits.evaluate.scoring import evaluate_run

            evaluate_run(ckpt_dir / "best.pt", run_dir / "evaluate", cfg.evaluate_after, cfg.postprocess, t.progress)
    log.info(
        "done in %.1f min: best %s=%.4f at epoch %d -> %s",
        summary["minutes"],
        monitor,
        best,
        best_epoch + 1,
        ckpt_dir / "best.pt",
    )
    return summary
