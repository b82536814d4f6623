"""Setting up a training run: resume negotiated across ranks, data prepared once per node, then the loader, model,
optimiser and TrainState. `build_run` returns a `Run`, everything `fit` needs, in one place."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import lits.core.config.checks as checks
from lits.core.config import TrainConfig
from lits.core.device import resolve_amp
from lits.core.errors import LitsError
from lits.data.normalization import Normalization, from_training_cases
from lits.data.prepare import prepare, write_split
from lits.data.sampling import SliceIndex
from lits.infer.checkpoint import load_checkpoint
from lits.infer.networks import build_model, count_parameters
from lits.infer.spec import InferenceSpec
from lits.train import distributed
from lits.train.augment import BatchAugment
from lits.train.checkpoint import check_compatible, config_differences, reconcile_best, resume_path
from lits.train.hooks import (
    CheckpointHook,
    ConsoleHook,
    FaultHook,
    HistoryHook,
    Hook,
    Hooks,
    ProgressPlotHook,
    TensorBoardHook,
    dying_save,
)
from lits.train.loader import PositionedSampler, build_loader
from lits.train.loss import HybridLoss
from lits.train.optim import TimeBudget, build_optimizer
from lits.train.signals import StopRequest
from lits.train.state import Best, TrainState
from lits.train.step import NormStatsGuard, PendingSteps
from lits.train.tuning_hook import TuningHook

log = logging.getLogger(__name__)

AUGMENT_SEED_STRIDE = 1_000_003  # rank r's augmentation generator starts at seed + r * stride (rank 0: the run seed)
# Settings whose change on resume is expected (not worth a warning).
RESUME_IGNORED = ("paths", "trainer.resume", "trainer.progress", "faults", "data.root", "data.cache_dir")


@dataclass
class Run:
    """One training run as `fit` sees it (this process's share of it under DDP)."""

    cfg: TrainConfig
    ctx: distributed.Context
    device: torch.device
    amp: str
    run_dir: Path
    record: dict  # what every checkpoint of the run carries unchanged (config, splits, inference spec ...)
    cases: dict  # {"train": [...], "val": [...]} cached cases
    normalization: Normalization
    spec: InferenceSpec
    loader: torch.utils.data.DataLoader
    sampler: PositionedSampler
    loader_generator: torch.Generator
    steps_per_epoch: int
    train_model: torch.nn.Module  # what the steps run: the network, DDP-wrapped and/or compiled
    augment: BatchAugment
    loss_fn: HybridLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    memory_format: torch.memory_format
    guard: NormStatsGuard | None
    pending: PendingSteps  # the steps' losses and bad flags the host has not read yet
    state: TrainState
    budget: TimeBudget
    stop: StopRequest
    resumed_from: str | None
    hooks: Hooks = None
    started: float = 0.0  # time.time() when the loop started
    clock: float = 0.0  # seconds into this session as every rank agreed last (the time budget's schedules use it)
    samples_trained: int = 0  # samples of this session's training steps (all processes) ...
    step_seconds: float = 0.0  # ... and the seconds they took (validation and saving excluded)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def previous_run_dir(self) -> Path | None:
        """The run folder of the checkpoint this run resumed from (None for a fresh start)."""
        return Path(self.resumed_from).parent.parent if self.resumed_from else None

    def elapsed_s(self) -> float:
        """Seconds of training in this session."""
        return time.time() - self.started

    def checkpoint(self, rank_states: list, metrics: dict) -> dict:
        plan = {"planned_epochs": self.budget.planned, "train_seconds": self.budget.spent_s + self.elapsed_s()}
        return self.state.checkpoint(self.record, rank_states, metrics, plan)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels


def _run_dir(cfg: TrainConfig) -> Path:
    """Rank 0's run folder: every rank writes there (Hydra resolves ${now:...} per process)."""
    run_dirs = distributed.all_gather_object(str(Path(cfg.paths.output_dir).resolve()))
    if len(set(run_dirs)) > 1:
        log.warning(
            "ranks resolved different run folders %s; rank 0's is used: pass hydra.run.dir=... with torchrun",
            sorted(set(run_dirs)),
        )
    return Path(run_dirs[0])


def _negotiate_resume(cfg: TrainConfig, config: dict, run_dir: Path, is_main: bool) -> tuple[dict | None, str | None]:
    """Rank 0 finds, loads (weights_only) and checks the checkpoint to resume from and hands it to the others, so a
    multi-node job needs the run folder on rank 0's node only. (checkpoint or None, its path or None)."""
    payload = None
    if is_main:
        try:
            path = resume_path(cfg.trainer.resume, run_dir)
            saved = load_checkpoint(path) if path else None
            if saved is not None:
                check_compatible(saved, config, path)
                if "format" not in saved:
                    raise LitsError(
                        f"{path}: written by an older lits, which evaluate.py and predict.py still read "
                        "but training cannot continue; start a new run (another hydra.run.dir)"
                    )
            lost = reconcile_best(saved, run_dir / "checkpoints", path)
            if lost:
                log.warning("%s", lost)
            payload = {"path": str(path) if path else None, "state": saved}
        except LitsError as exc:
            payload = {"error": str(exc)}
    payload = distributed.broadcast_object(payload)
    if "error" in payload:
        raise LitsError(payload["error"])
    saved, path = payload["state"], payload["path"]
    if saved is not None and is_main:
        log.info("resuming from %s (step %d)", path, saved["step"])
        changed = config_differences(saved["config"], config, ignore=RESUME_IGNORED)
        if changed:
            log.warning(
                "resuming with changed settings (the run is no longer one uninterrupted run): %s", "; ".join(changed)
            )
    return saved, path


def _prepare_data(cfg: TrainConfig, ctx: distributed.Context, splits: dict | None, run_dir: Path):
    """Generate (synthetic), cache once and split by patient: rank 0 first, then the first process of every node
    (node-local storage), then the rest, so no two processes build the same files at once."""
    prepared, error = None, None
    if ctx.is_main:
        try:
            prepared = prepare(
                cfg.data,
                cfg.seed,
                splits=splits,
                only=("train", "val"),
                progress=cfg.trainer.progress,
                report_dir=run_dir,
            )
            if not prepared[1]["val"]:
                error = no_validation_cases(cfg)
        except LitsError as exc:
            error = str(exc)
    error, splits = distributed.broadcast_object((error, prepared[0] if prepared else None))
    if error:
        raise LitsError(error)
    for local_first in (True, False):
        if not ctx.is_main and (ctx.local_rank == 0) == local_first:
            prepared = prepare(cfg.data, cfg.seed, splits=splits, only=("train", "val"), progress=False)
        distributed.barrier()
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(prepared[0], run_dir / "split.json")
    return prepared


def no_validation_cases(cfg: TrainConfig) -> str:
    """The one line that refuses a run without validation cases at start-up (validation chooses best.pt and tunes
    post-processing; without it the run would crash at its first validation, with nothing saved)."""
    return (
        f"no validation cases (data.split.val={checks.show(cfg.data.split.val)}, after data.on_error="
        f"{cfg.data.on_error}): validation chooses best.pt, so give it at least one case, e.g. data.split.val=0.2, "
        "or fix the validation cases the log lists as skipped"
    )


def _sampling_index(cfg: TrainConfig, cases: dict) -> tuple[SliceIndex, np.ndarray]:
    index = SliceIndex(cases["train"])
    weights = index.weights(cfg.data.sampling)
    log.info(
        "train: %d cases, %d slices (%d with tumour, drawn %.0f%% of the time); val: %d cases",
        len(cases["train"]),
        len(index),
        int((index.tumor > 0).sum()),
        100 * weights[index.tumor > 0].sum(),
        len(cases["val"]),
    )
    return index, weights


def _wrap(model: torch.nn.Module, cfg: TrainConfig, ctx: distributed.Context, device: torch.device):
    """What the steps run: DDP around the network under torchrun, torch.compile on request."""
    wrapped = model
    if ctx.distributed:
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
        )
        t = cfg.trainer
        log.info(
            "DDP: %d processes (%s), batch %d per process = effective batch %d, lr %g",
            ctx.world_size,
            ctx.backend,
            t.batch_size,
            t.batch_size * ctx.world_size,
            cfg.optim.lr,
        )
    if cfg.trainer.compile:
        wrapped = torch.compile(wrapped, mode=cfg.trainer.compile_mode)
    return wrapped


def _training_state(
    cfg: TrainConfig,
    ctx: distributed.Context,
    amp: str,
    memory_format: torch.memory_format,
    saved: dict | None,
    resumed_from: str | None,
    steps_per_epoch: int,
) -> tuple[TrainState, TimeBudget]:
    """Network, optimiser, scaler, generators and the time budget, resumed from `saved` when there is one."""
    t, device = cfg.trainer, ctx.device
    seed_everything(cfg.seed, t.deterministic)  # after data preparation: model init never depends on what it drew
    model = build_model(cfg.model).to(device, memory_format=memory_format)
    parameters = count_parameters(model) / 1e6
    log.info("model %s: %.2fM parameters, device %s, amp %s", cfg.model.arch, parameters, device, amp)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    generator = torch.Generator().manual_seed(cfg.seed + AUGMENT_SEED_STRIDE * ctx.rank)
    state = TrainState(model, optimizer, scaler, generator, Best(t.monitor, t.monitor_tiebreak))
    plan = saved["scheduler"]["planned_epochs"] if saved and t.max_time else None
    budget = TimeBudget(t.max_time, t.max_epochs, spent_s=saved["train_seconds"] if saved else 0.0, planned=plan)
    if saved is not None:

        def reseed(step: int) -> None:
            seed_everything(cfg.seed + step, t.deterministic)
            generator.manual_seed(cfg.seed + step + AUGMENT_SEED_STRIDE * ctx.rank)

        state.resume(saved, resumed_from, ctx.rank, ctx.world_size, t.batch_size, steps_per_epoch, device, reseed)
    return state, budget


def build_run(cfg: TrainConfig, ctx: distributed.Context, stop: StopRequest) -> Run:
    """Everything a run needs, resumed from its checkpoint when trainer.resume finds one."""
    t, device = cfg.trainer, ctx.device
    amp = resolve_amp(t.amp, device)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    config = dataclasses.asdict(cfg)
    run_dir = _run_dir(cfg)
    saved, resumed_from = _negotiate_resume(cfg, config, run_dir, ctx.is_main)
    splits, cases = _prepare_data(cfg, ctx, saved["splits"] if saved else None, run_dir)
    if saved is not None:
        normalization = Normalization.from_dict(saved["normalization"])
    else:  # deterministic from the training cases: every rank computes the same
        normalization = from_training_cases(cfg.data, cases["train"], cfg.seed)
    log.info("input normalisation: %s", normalization.describe())
    index, weights = _sampling_index(cfg, cases)
    loader, sampler, loader_generator, steps = build_loader(cfg, index, weights, ctx.rank, ctx.world_size, device)
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    state, budget = _training_state(cfg, ctx, amp, memory_format, saved, resumed_from, steps)
    spec = InferenceSpec.for_training(
        cfg.model, cfg.data, cfg.loss.temperature, normalization, cfg.postprocess, cfg.augment
    )
    note = spec.tta_note(t.val_tta, "trainer.val_tta")
    if note and ctx.is_main:
        log.warning("%s", note)
    record = dict(
        config=config,
        splits=splits,
        normalization=normalization.to_dict(),
        inference=spec.to_dict(),
        world_size=ctx.world_size,
        batch_size=t.batch_size,
    )
    model = state.model
    run = Run(
        cfg=cfg,
        ctx=ctx,
        device=device,
        amp=amp,
        run_dir=run_dir,
        record=record,
        cases=cases,
        normalization=normalization,
        spec=spec,
        loader=loader,
        sampler=sampler,
        loader_generator=loader_generator,
        steps_per_epoch=steps,
        train_model=_wrap(model, cfg, ctx, device),
        augment=BatchAugment(cfg.augment),
        loss_fn=HybridLoss(cfg.loss),
        optimizer=state.optimizer,
        scaler=state.scaler,
        memory_format=memory_format,
        guard=NormStatsGuard(model) if any(True for _ in model.buffers()) else None,
        pending=PendingSteps(device),
        state=state,
        budget=budget,
        stop=stop,
        resumed_from=resumed_from,
    )
    run.hooks = build_hooks(run)
    return run


def build_hooks(run: Run) -> Hooks:
    """The hooks of this rank: console and checkpoints everywhere, files on rank 0, faults only under debug=faults;
    tuning (rank 0) first, so that the console's closing summary names what it chose."""
    hooks: list[Hook] = [TuningHook(), ConsoleHook()]
    if run.ctx.is_main:
        hooks += [TensorBoardHook(), HistoryHook(), ProgressPlotHook()]
    faults = run.cfg.faults
    dying = faults is not None and faults.kill_during_save is not None
    hooks.append(CheckpointHook(dying_save(faults.kill_during_save)) if dying else CheckpointHook())
    if run.cfg.faults is not None:
        hooks.append(FaultHook(run.cfg.faults, run.ctx.rank, run.ctx.world_size))
    return Hooks(hooks)
