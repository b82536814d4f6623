"""Evaluate a checkpoint on a split: rebuild model + preprocessing from the checkpoint, predict, post-process, score."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from lits.checkpoint import load_checkpoint
from lits.data.prepare import prepare
from lits.errors import LitsError
from lits.inference import predict_volume, resolve_device
from lits.metrics import aggregate, case_metrics
from lits.model import build_model, size_multiple
from lits.postprocess import PostprocessConfig, postprocess, probabilities_to_labels
from lits.report import format_table, write_csv, write_json

log = logging.getLogger(__name__)

CASE_COLUMNS = ["case", "liver_dice", "tumor_dice", "tumor_assd", "tumor_lesions_ref", "tumor_lesion_tp_iou50",
                "tumor_lesion_fp_iou50", "tumor_burden_ref", "tumor_burden_pred"]
SUMMARY_KEYS = ["liver_dice_per_case", "liver_dice_global", "liver_assd_mean", "tumor_dice_per_case", "tumor_dice_global",
                "tumor_assd_mean", "tumor_lesion_precision_iou50", "tumor_lesion_recall_iou50", "tumor_burden_rmse"]


def load_model(ckpt_path: str | Path, device):
    """Model (eval mode, on device) and the training config, from a checkpoint alone."""
    state = load_checkpoint(ckpt_path)
    train_cfg = OmegaConf.create(state["config"])
    model = build_model(train_cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LitsError(f"{ckpt_path}: weights do not fit the model its config describes ({first}); the checkpoint is damaged or edited") from None
    return model.to(device).eval(), train_cfg, state


def run(cfg) -> dict:
    out_dir = Path(cfg.paths.output_dir)
    device = resolve_device(cfg.device)
    model, train_cfg, state = load_model(cfg.ckpt, device)
    if cfg.split not in state["splits"]:
        raise LitsError(f"split={cfg.split}: not in the checkpoint's splits {sorted(state['splits'])}")
    data_cfg = train_cfg.data
    if cfg.data_root:
        data_cfg.root = cfg.data_root
        data_cfg.synthetic = None  # an explicit folder is read as is, never generated into
    _, cases = prepare(data_cfg, train_cfg.seed, splits=state["splits"], only=(cfg.split,), progress=cfg.progress)
    post_cfg = PostprocessConfig.from_mapping(cfg.postprocess)

    rows = {"raw": [], "post": []}
    for case in tqdm(cases[cfg.split], desc=f"evaluating {cfg.split}", unit="case", disable=not cfg.progress):
        probs = predict_volume(model, case.image, device, cfg.batch_size, cfg.amp, size_multiple(train_cfg.model),
                               train_cfg.loss.temperature)
        label = np.asarray(case.label)
        predictions = {"raw": probabilities_to_labels(probs[0], probs[1], post_cfg.threshold),
                       "post": postprocess(probs[0], probs[1], post_cfg)}
        for stage, pred in predictions.items():
            rows[stage].append({"case": case.case_id, "stage": stage, **case_metrics(pred, label, case.spacing)})

    summary = {stage: aggregate(stage_rows) for stage, stage_rows in rows.items()}
    result = {"ckpt": str(Path(cfg.ckpt).resolve()), "split": cfg.split, "num_cases": len(rows["raw"]),
              "trained_epochs": state["epoch"] + 1, "postprocess": OmegaConf.to_container(cfg.postprocess), **summary}
    write_csv(out_dir / "cases.csv", rows["raw"] + rows["post"])
    write_json(out_dir / "metrics.json", result)

    print(f"\n{cfg.split} split, {len(rows['post'])} cases, post-processed:")
    print(format_table(rows["post"], CASE_COLUMNS))
    print("\nsummary (all metrics in metrics.json):")
    print(format_table([{"metric": k, **{stage: summary[stage].get(k, "") for stage in summary}} for k in SUMMARY_KEYS],
                       ["metric", *summary]))
    print(f"wrote {out_dir / 'cases.csv'} and {out_dir / 'metrics.json'}")
    return result
