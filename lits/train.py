"""The training loop: data -> model -> HybridLoss(alpha(epoch)) -> AMP steps -> validation -> checkpoints.

Plain top-to-bottom code; each piece it uses lives in its own module.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import lits
from lits.checkpoint import save_checkpoint
from lits.data.augment import AugmentConfig, BatchAugment
from lits.data.prepare import prepare, write_split
from lits.data.slices import LesionSampler, SamplingConfig, SliceIndex, TrainSlices
from lits.errors import LitsError
from lits.inference import autocast, predict_volume, resolve_device
from lits.loss import HybridLoss, alpha_at, targets_from_labels
from lits.metrics import aggregate, case_metrics
from lits.model import build_model, count_parameters, size_multiple
from lits.postprocess import PostprocessConfig, postprocess, probabilities_to_labels
from lits.report import comparison_grid, write_json

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        raise LitsError("trainer.amp=fp16 needs CUDA; use trainer.amp=bf16 or off on CPU")
    if amp not in ("off", "fp16", "bf16"):
        raise LitsError(f"trainer.amp={amp}: choose auto, off, fp16 or bf16")
    return amp


def validate(model, cases, cfg, device, amp: str, post_cfg: PostprocessConfig) -> tuple[dict, list[dict], np.ndarray | None]:
    """3D per-case Dice on whole validation volumes, raw and post-processed; plus an overlay picture."""
    raw_rows, post_rows, picture = [], [], None
    multiple = size_multiple(cfg.model)
    shown = []
    for case in cases:
        probs = predict_volume(model, case.image, device, cfg.trainer.val_batch_size, amp, multiple, cfg.loss.temperature)
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


def run(cfg) -> dict:
    run_dir = Path(cfg.paths.output_dir)
    ckpt_dir = run_dir / "checkpoints"
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    device = resolve_device(cfg.trainer.device)
    amp = resolve_amp(cfg.trainer.amp, device)
    resolved = OmegaConf.to_container(cfg, resolve=True)

    # data: generate (synthetic), cache once, split by patient
    splits, cases = prepare(cfg.data, cfg.seed, only=("train", "val"), progress=cfg.trainer.progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_split(splits, run_dir / "split.json")
    sampling = SamplingConfig(**cfg.data.sampling)
    index = SliceIndex(cases["train"])
    weights = index.weights(sampling)
    lesion_share = weights[index.tumor > 0].sum()
    log.info("train: %d cases, %d slices (%d with tumour, drawn %.0f%% of the time); val: %d cases",
             len(cases["train"]), len(index), int((index.tumor > 0).sum()), 100 * lesion_share, len(cases["val"]))
    sampler = LesionSampler(weights, sampling.samples_per_epoch, seed=cfg.seed)
    loader = DataLoader(
        TrainSlices(index, cfg.data.crop_size, sampling, seed=cfg.seed),
        batch_size=cfg.trainer.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
        drop_last=True,
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise LitsError(f"data.sampling.samples_per_epoch={sampling.samples_per_epoch} is smaller than trainer.batch_size={cfg.trainer.batch_size}; raise it")

    # model, loss, optimisation
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model = build_model(cfg.model).to(device, memory_format=memory_format)
    log.info("model %s: %.2fM parameters, device %s, amp %s", cfg.model.arch, count_parameters(model) / 1e6, device, amp)
    augment = BatchAugment(AugmentConfig.from_mapping(cfg.augment))
    loss_fn = HybridLoss(cfg.loss)
    if cfg.optim.name != "adamw":
        raise LitsError(f"optim.name={cfg.optim.name}: unknown optimizer; use optim=adamw")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.optim.t_max, eta_min=cfg.optim.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    post_cfg = PostprocessConfig.from_mapping(cfg.postprocess)
    aug_generator = torch.Generator().manual_seed(cfg.seed)

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg, resolve=True) + "\n```")
    history_path = run_dir / "history.jsonl"
    monitor = cfg.trainer.monitor
    best, best_epoch, step = -math.inf, -1, 0
    val_metrics: dict = {}
    started = time.time()

    for epoch in range(cfg.trainer.max_epochs):
        alpha = alpha_at(epoch, cfg.loss.schedule)
        sampler.set_epoch(epoch)
        model.train()
        sums = {"loss": 0.0, "bce": 0.0, "dice": 0.0}
        epoch_start = time.time()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.trainer.max_epochs} alpha={alpha:.2f}", leave=False,
                   disable=not cfg.trainer.progress, dynamic_ncols=True)
        for batch in bar:
            image = batch["image"].to(device, non_blocking=True).float().contiguous(memory_format=memory_format)
            label = batch["label"].to(device, non_blocking=True)
            image, label = augment(image, label, aug_generator)
            with autocast(device, amp):
                logits = model(image)
            loss, parts = loss_fn(logits, targets_from_labels(label), alpha)
            if not torch.isfinite(loss):
                raise LitsError(f"non-finite loss at epoch {epoch} step {step}; lower optim.lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.trainer.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            values = {"loss": loss.item(), "bce": parts["bce"].item(), "dice": parts["dice"].item()}
            for k, v in values.items():
                sums[k] += v
            if step % 10 == 0:
                writer.add_scalar("train/loss_step", values["loss"], step)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
        epoch_time = time.time() - epoch_start
        train_metrics = {f"train/{k}": v / steps_per_epoch for k, v in sums.items()}
        train_metrics.update({"train/alpha": alpha, "train/lr": optimizer.param_groups[0]["lr"],
                              "train/samples_per_s": steps_per_epoch * cfg.trainer.batch_size / epoch_time})
        scheduler.step()

        is_last = epoch == cfg.trainer.max_epochs - 1
        if (epoch + 1) % cfg.trainer.val_every == 0 or is_last:
            val_metrics, _, picture = validate(model, cases["val"], cfg, device, amp, post_cfg)
            if picture is not None:
                writer.add_image("val/overlay", picture, epoch, dataformats="HWC")
        for k, v in {**train_metrics, **val_metrics}.items():
            writer.add_scalar(k, v, epoch)
        improved = monitor in val_metrics and val_metrics[monitor] > best
        if improved:
            best, best_epoch = val_metrics[monitor], epoch
        record = {"epoch": epoch, "step": step, "elapsed_s": round(time.time() - started, 1), **train_metrics, **val_metrics}
        with open(history_path, "a") as f:
            f.write(json.dumps(record) + "\n")

        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step": step,
            "best": {"metric": monitor, "value": best, "epoch": best_epoch},
            "metrics": val_metrics,
            "config": resolved,
            "splits": splits,
            "lits_version": lits.__version__,
        }
        save_checkpoint(state, ckpt_dir / "last.pt")
        if improved:
            save_checkpoint(state, ckpt_dir / "best.pt")
        shown = " ".join(f"{k.split('/')[1]}={v:.4f}" for k, v in val_metrics.items() if k in (monitor, "val/liver_dice", "val/tumor_dice_post"))
        log.info("epoch %d/%d alpha=%.2f loss=%.4f (bce %.4f dice %.4f) %.0f samples/s %s%s", epoch + 1, cfg.trainer.max_epochs,
                 alpha, train_metrics["train/loss"], train_metrics["train/bce"], train_metrics["train/dice"],
                 train_metrics["train/samples_per_s"], shown, " *best*" if improved else "")
        val_metrics = {}

    writer.close()
    summary = {"best_metric": monitor, "best_value": best, "best_epoch": best_epoch, "epochs": cfg.trainer.max_epochs,
               "minutes": round((time.time() - started) / 60, 2), "run_dir": str(run_dir)}
    write_json(run_dir / "train_summary.json", summary)
    log.info("done in %.1f min: best %s=%.4f at epoch %d -> %s", summary["minutes"], monitor, best, best_epoch + 1, ckpt_dir / "best.pt")
    return summary
