"""Tuning inside every run: when training ends, calibration and post-processing are chosen on the validation split
for best.pt and last.pt (lits/evaluate/tuning.py, as `python evaluate.py ckpt=... split=val tune=true` does) and
stored in their inference specs, so evaluate.py and predict.py apply them by default. `tune_after=false` turns it off.
"""

from __future__ import annotations

import logging

from lits.core.config import EvaluateConfig
from lits.evaluate.tuning import TuneSettings, choose, store, summary_line
from lits.infer.checkpoint import load_checkpoint, model_from_state
from lits.train.hooks import Hook

log = logging.getLogger(__name__)

TUNED_CHECKPOINTS = ("best.pt", "last.pt")


class TuningHook(Hook):
    """Rank 0, after training: tunes each checkpoint in TUNED_CHECKPOINTS once (the same weights, e.g. best.pt saved
    at the last epoch, are tuned once and stored in both) and adds `tuned` (checkpoint name -> the summary line) to
    the run's summary, before the console prints it."""

    def after_train(self, run, summary: dict) -> None:
        if not (run.ctx.is_main and run.cfg.tune_after):
            return
        if not run.cases["val"]:
            log.warning("no validation cases: post-processing not tuned (the checkpoints keep postprocess.*)")
            return
        t = run.cfg.trainer
        # tta None: a network trained with mirroring is tuned with and without flip TTA, and keeps the better
        settings = TuneSettings(t.val_batch_size, run.amp, None, EvaluateConfig.tune_criterion, False, t.progress)
        by_step, tuned = {}, {}
        for name in TUNED_CHECKPOINTS:
            path = run.ckpt_dir / name
            if not path.is_file():
                continue
            state = load_checkpoint(path)
            if state["step"] not in by_step:
                model, spec = model_from_state(state, path, run.device)
                by_step[state["step"]] = choose(model, spec, run.cases["val"], run.device, settings, spec.postprocess)
            spec, record = by_step[state["step"]]
            store(state, path, spec, record)
            tuned[name] = summary_line(record)
            log.info("%s: %s", name, tuned[name])
        summary["tuned"] = tuned
