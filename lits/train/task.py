"""The training task: a composed config in, a trained run folder out (train.py calls it; so do the tests)."""

from __future__ import annotations

import logging
from pathlib import Path

from lits.core.cli import mark_started
from lits.core.config import TrainConfig, typed
from lits.core.errors import LitsError
from lits.core.files import write_json
from lits.train import distributed
from lits.train.console import opening_line, watch_line
from lits.train.fit import fit
from lits.train.loader import close_loader
from lits.train.run import build_run
from lits.train.signals import StopRequest

log = logging.getLogger(__name__)


def train(cfg) -> dict:
    """Train with `cfg` (a composed train config or TrainConfig) in this process: alone, or as one rank of a torchrun
    job. Rank 0 writes train_summary.json and, with evaluate_after, scores best.pt into <run dir>/evaluate."""
    cfg = typed(TrainConfig, cfg)
    t = cfg.trainer
    ctx = distributed.setup(t.device, t.dist_backend, t.dist_timeout_min)
    stop = StopRequest()
    stop.install()
    lits_logger = logging.getLogger("lits")
    level = lits_logger.level
    if ctx.distributed and not ctx.is_main:  # only rank 0 logs progress; warnings and errors of every rank still show
        lits_logger.setLevel(logging.WARNING)
    run = None
    try:
        if ctx.is_main:
            log.info(opening_line(Path(cfg.paths.output_dir)))
        run = build_run(cfg, ctx, stop)
        mark_started()  # a failure from here on keeps the run folder (lits.core.cli)
        if ctx.is_main:
            log.info(watch_line(Path(cfg.paths.output_dir)))
        stop.deferred = True  # the loop stops politely after a step; setup and evaluate_after stop at once
        summary = fit(run)
        stop.deferred = False
        if ctx.is_main:
            write_json(run.run_dir / "train_summary.json", summary)
            if cfg.evaluate_after:  # the test-set numbers of this run, as `python evaluate.py ckpt=.../best.pt` gives
                from lits.evaluate.scoring import evaluate_checkpoint

                best = run.ckpt_dir / "best.pt"
                if not best.is_file():
                    raise LitsError(
                        f"{best}: no validation improved trainer.monitor={t.monitor} (see the log), so there is no "
                        f"best.pt to evaluate; score last.pt with evaluate.py ckpt={run.ckpt_dir / 'last.pt'}"
                    )
                evaluate_checkpoint(best, run.run_dir / "evaluate", cfg.evaluate_after, t.progress)
        return summary
    finally:
        if run is not None:
            close_loader(run.loader)
        stop.restore()
        lits_logger.setLevel(level)
        distributed.teardown(ctx)
