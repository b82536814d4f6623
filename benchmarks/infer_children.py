"""The children of `python -m benchmarks infer`: predict.py, the whole-volume path and evaluate.py, each with a
clock on every stage, run in a process of its own (its own peak RSS); each returns one JSON-able dict."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.probes import own_cpu_s, peak_rss_mb, rss_mb

STAGES = ("reading", "preprocessing", "network", "batching", "post-processing", "metrics", "writing", "other")


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

    def result(self, total: float, baseline_mb: float, cpu0: float) -> dict:
        """A child's JSON result: wall seconds, seconds per stage (`other`: the rest), peak and baseline RSS, CPU s."""
        self.seconds["other"] = total - sum(self.seconds.values())
        return {"total_s": total, "stages": self.seconds, "peak_rss_mb": peak_rss_mb(), "baseline_mb": baseline_mb,
                "cpu_s": own_cpu_s() - cpu0}  # fmt: skip

    def time_forward(self, model) -> None:
        """Charge the model's forward passes to `network`."""
        model.register_forward_pre_hook(lambda *_: self.enter("network"))
        model.register_forward_hook(lambda *_: self.leave())


# ---------------------------------------------------------------------------------------------- children
def predict_child(args) -> dict:
    """The predict task with a clock on every stage."""
    import torch

    import lits.data.nifti
    import lits.data.preprocess
    import lits.infer.checkpoint
    import lits.infer.predict
    from lits.core.config import PredictConfig, typed

    baseline, cpu0 = rss_mb(), own_cpu_s()
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
    return clock.result(total, baseline, cpu0)


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

    baseline, cpu0 = rss_mb(), own_cpu_s()
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
    return clock.result(total, baseline, cpu0)


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
    baseline, cpu0 = rss_mb(), own_cpu_s()
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
    return clock.result(total, baseline, cpu0)


CHILDREN = {"predict": predict_child, "whole-volume": whole_volume_child, "evaluate": evaluate_child}
