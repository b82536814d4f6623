"""Post-processing and calibration chosen on the validation split and stored in the checkpoint's inference spec
(`python evaluate.py ckpt=PATH split=val tune=true`), as nnU-Net chooses its post-processing on validation folds
and keeps it beside the model (postprocessing.pkl); here evaluate.py and predict.py then apply it by default.

1. Every validation case is predicted once; the probabilities are kept (float16) inside the box of reference and
   predicted liver, where post-processing acts.
2. Calibration: a temperature factor per head fitted on region voxels of all cases (lits/evaluate/calibration.py).
3. Candidates, on the calibrated probabilities: the checkpoint's post-processing first, then a grid of tumour
   thresholds x size limits in mm^3 x keeping small confident components x hysteresis; each is scored on every case
   with the official lesion matching (`case_metrics(detail="lesions")`) by `tune_criterion`: `lesion_score` = mean
   of tumour Dice per case and lesion F1 at IoU > 0.5, or `tumor_dice` (per case). The first best wins a tie, so
   the checkpoint's own setting stays unless another beats it.
4. With the CRF extra installed and `tune_crf=true`, the best candidate plus CRF refinement is scored too and kept
   only if it scores higher.
The checkpoint is rewritten atomically with the chosen spec and a `tuning` record (split, criterion, every
candidate's score): the numbers behind the choice travel with the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lits.core.config import EvaluateConfig, PostprocessConfig
from lits.core.device import resolve_device
from lits.core.errors import LitsError
from lits.core.files import check_writable_folder
from lits.core.vocabulary import lesion_score
from lits.data.prepare import prepare
from lits.evaluate.calibration import calibrate, fit_temperature, region_sample, reliability
from lits.evaluate.metrics import aggregate, case_metrics
from lits.infer.batches import add_identity_view
from lits.infer.checkpoint import load_model, save_checkpoint
from lits.infer.postprocess import postprocess, shaped_masks, size_filtered_labels
from lits.infer.predictor import predict_volume
from lits.infer.spec import data_from_checkpoint

log = logging.getLogger(__name__)

TUMOR_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
SIZE_LIMITS_MM3 = (0.0, 10.0, 25.0, 50.0, 100.0, 250.0)
KEEP_CONFIDENT = (1.0, 0.9)
SAMPLE_VOXELS = 200_000  # calibration voxels per case
REGION_MARGIN = 8  # voxels around the liver region kept in-plane (and the tumour restriction's reach)


@dataclass
class ValidationCase:
    case_id: str
    probs: np.ndarray  # (2, z, y, x) float16, inside the liver region
    label: np.ndarray  # (z, y, x) uint8, same region
    spacing: tuple[float, float, float]
    image: np.ndarray | None  # [0, 1] window, same region (CRF only)


def candidates(base: PostprocessConfig) -> list[PostprocessConfig]:
    """The checkpoint's post-processing, then the grid (size limits in mm^3 replace the voxel limit)."""
    grid = [base]
    for threshold, size, keep, hysteresis in itertools.product(
        TUMOR_THRESHOLDS, SIZE_LIMITS_MM3, KEEP_CONFIDENT, (False, True)
    ):
        if keep < 1.0 and size == 0.0:
            continue  # nothing small is removed, so nothing to keep
        low = round(max(0.1, threshold - 0.2), 3)
        grid.append(
            dataclasses.replace(
                base,
                tumor_threshold=threshold,
                min_tumor_voxels=0,
                min_tumor_mm3=size,
                keep_confident=keep,
                hysteresis=hysteresis,
                hysteresis_high=threshold,
                hysteresis_low=low,
                crf=False,
            )
        )
    return grid


def score(summary: dict, criterion: str) -> float:
    return summary["tumor_dice_per_case"] if criterion == "tumor_dice" else lesion_score(summary)


# The size filter's settings, the last step: candidates that differ only in these start from the same masks
SIZE_OFF = {"min_tumor_voxels": 0, "min_tumor_mm3": 0.0, "keep_confident": 1.0}


class CandidateCache:
    """What the candidates share, per validation case: the masks before the size filter (`shaped_masks` of every
    candidate that differs only in it: 8 of the grid's 89 per case) and the metrics of each distinct label map. The
    labels and scores are exactly those of `postprocess` and `case_metrics` on every candidate (tested)."""

    def __init__(self):
        self.masks: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.rows: dict[tuple, dict] = {}

    def labels(self, index: int, case: ValidationCase, post: PostprocessConfig) -> np.ndarray:
        if post.crf:  # the CRF refines the probabilities first: nothing to share
            probs = case.probs.astype(np.float32)
            return postprocess(probs[0], probs[1], post, case.spacing, case.image)
        key = (index, dataclasses.replace(post, **SIZE_OFF))
        if key not in self.masks:
            probs = case.probs.astype(np.float32)
            liver, tumor = probs[0] > post.threshold, probs[1] > post.tumor_cut
            self.masks[key] = shaped_masks(liver, tumor, post, probs[1] if post.hysteresis else None)
        liver, tumor = self.masks[key]
        confident = post.removes_small_tumors and post.keep_confident < 1.0  # the size filter reads the peaks
        tumor_prob = case.probs[1].astype(np.float32) if confident else None
        return size_filtered_labels(liver, tumor.copy(), post, tumor_prob, case.spacing)

    def metrics(self, index: int, case: ValidationCase, labels: np.ndarray) -> dict:
        key = (index, hashlib.blake2b(np.ascontiguousarray(labels, dtype=np.uint8)).digest())
        if key not in self.rows:
            self.rows[key] = case_metrics(labels, case.label, case.spacing, detail="lesions")
        return self.rows[key]


def evaluate_candidate(
    cases: list[ValidationCase], post: PostprocessConfig, criterion: str, cache: CandidateCache | None = None
) -> dict:
    cache = cache or CandidateCache()
    rows = [cache.metrics(i, case, cache.labels(i, case, post)) for i, case in enumerate(cases)]
    summary = aggregate(rows)
    return {
        "score": score(summary, criterion),
        "tumor_dice_per_case": summary["tumor_dice_per_case"],
        "lesion_recall_iou50": summary["tumor_lesion_recall_iou50"],
        "lesion_precision_iou50": summary["tumor_lesion_precision_iou50"],
    }


def _region(probs: np.ndarray, label: np.ndarray) -> tuple[slice, ...]:
    seen = (np.asarray(label) >= 1) | (probs[0] > 0.05) | (probs[1] > 0.05)
    if not seen.any():
        return (slice(0, 1),) * 3
    spans = [np.flatnonzero(seen.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    margins = (2, REGION_MARGIN, REGION_MARGIN)
    return tuple(slice(max(0, s[0] - m), s[-1] + 1 + m) for s, m in zip(spans, margins))


@dataclass(frozen=True)
class TuneSettings:
    """How the validation cases are predicted and the candidates judged."""

    batch_size: int
    amp: str
    # flip TTA: None = try the identity view and, for a network trained with mirroring, the average with its trained
    # flips, and keep TTA only where it scores higher; True / False = only that one
    tta: bool | None
    criterion: str  # lesion_score | tumor_dice
    crf: bool  # also try the dense-CRF stage
    progress: bool

    @classmethod
    def of(cls, cfg: EvaluateConfig) -> TuneSettings:
        crf = cfg.tune_crf and _crf_available()
        return cls(cfg.batch_size, cfg.amp, cfg.tta, cfg.tune_criterion, crf, cfg.progress)

    def view_sets(self, spec) -> tuple[bool, ...]:
        """The view sets to tune on (False: identity; True: identity and the trained flips averaged)."""
        if not spec.tta_flips or self.tta is False:
            return (False,)
        return (True,) if self.tta else (False, True)


def collect(model, spec, cases, device, settings: TuneSettings) -> dict[bool, list[ValidationCase]]:
    """Predict every validation case once per view and keep what post-processing needs, inside the liver region:
    {False: identity view, True: identity and trained flips averaged} for `settings.view_sets(spec)`. The flips are
    predicted apart from the identity, so trying both costs no second identity pass."""
    infer = dict(device=device, batch_size=settings.batch_size, amp=settings.amp, **spec.predictor_settings())
    view_sets, flips = settings.view_sets(spec), spec.tta_flips
    kept = {tta: [] for tta in view_sets}
    for case in tqdm(cases, desc="tuning: predicting", unit="case", disable=not settings.progress):
        plain = case.to_native(predict_volume(model, case.image, flips=((),), **infer), order=1)
        probs = {False: plain}
        if True in view_sets:
            flipped = case.to_native(predict_volume(model, case.image, flips=flips, **infer), order=1)
            probs[True] = add_identity_view(flipped, plain, len(flips))
        label = np.asarray(case.native_label)
        box = _region(np.maximum.reduce([probs[t] for t in view_sets]), label)
        image = case.to_native(np.asarray(case.image, np.float32), order=1)[box] if settings.crf else None
        region_label = label[box].copy()  # read-only from here: the view sets share it
        for tta in view_sets:
            region = probs[tta][(slice(None), *box)].astype(np.float16)
            kept[tta].append(ValidationCase(case.case_id, region, region_label, case.native_spacing, image))
    return kept


def fit_calibration(cases: list[ValidationCase]) -> tuple[tuple[float, float], dict]:
    """Per head: the temperature factor and the ECE before and after, on region voxels of every case."""
    samples = [region_sample(c.probs.astype(np.float32), c.label, SAMPLE_VOXELS, seed=i) for i, c in enumerate(cases)]
    factors, record = [], {}
    for head, (p_index, y_index) in {"liver": (0, 1), "tumour": (2, 3)}.items():
        p = np.concatenate([s[p_index] for s in samples])
        y = np.concatenate([s[y_index] for s in samples])
        factor = fit_temperature(p, y)
        before, after = reliability(p, y), reliability(calibrate(p, factor), y)
        factors.append(factor)
        record[head] = {
            "factor": factor,
            "ece_before": before.ece,
            "ece_after": after.ece,
            "voxels": int(p.size),
            "before": _curve(before),
            "after": _curve(after),
        }
    return (factors[0], factors[1]), record


def _curve(r) -> dict:
    return {
        "confidence": np.nan_to_num(r.confidence).tolist(),
        "frequency": np.nan_to_num(r.frequency).tolist(),
        "count": r.count.tolist(),
    }


def choose(model, spec, cases: list, device, settings: TuneSettings, base: PostprocessConfig):
    """Calibration, post-processing and (see TuneSettings.tta) flip TTA chosen on the validation `cases` for `model`:
    (the tuned spec, the record: every candidate's scores, the calibration fit, the view set and its score against
    the other's, the seconds it took). `base` is candidate 0. Trying both views, TTA is kept only where it earns its
    forward passes on validation (`_tta_earns_its_views`)."""
    started = time.perf_counter()
    uncalibrated = dataclasses.replace(spec, calibration=(1.0, 1.0))  # a second tuning fits afresh
    kept = collect(model, uncalibrated, cases, device, settings)
    tuned = {tta: _tune_views(views, settings, base) for tta, views in kept.items()}
    best = {tta: t["candidates"][t["chosen"]] for tta, t in tuned.items()}
    views = {}
    if len(tuned) == 1:
        (tta,) = tuned
    else:
        tta = _tta_earns_its_views(best[True], best[False])
        views["view_scores"] = {
            name: {"score": best[t]["score"], "tumor_dice_per_case": best[t]["tumor_dice_per_case"]}
            for name, t in (("identity", False), ("tta", True))
        }
    record = {"split": "val", "criterion": settings.criterion, "cases": len(kept[tta]), "tta": tta, **views}
    record.update(tuned[tta], seconds=round(time.perf_counter() - started, 1))
    chosen = PostprocessConfig.from_mapping(record["candidates"][record["chosen"]]["postprocess"])
    factors = tuple(record["calibration"][head]["factor"] for head in ("liver", "tumour"))
    return spec.tuned(chosen, factors), record


def _tta_earns_its_views(tta: dict, identity: dict) -> bool:
    """Flip TTA is kept when its best candidate scores higher than the identity view's by the criterion and its tumour
    Dice per case is not lower (a tie keeps the identity view: averaging costs forward passes, and a higher lesion
    score can hide a lower Dice)."""
    return tta["score"] > identity["score"] and tta["tumor_dice_per_case"] >= identity["tumor_dice_per_case"]


def _tune_views(kept: list[ValidationCase], settings: TuneSettings, base: PostprocessConfig) -> dict:
    """Calibration fitted on one view set's probabilities, then the candidates scored on them: the record's
    calibration, candidates and chosen index."""
    factors, calibration = fit_calibration(kept)
    for case in kept:
        case.probs = np.stack([calibrate(case.probs[h].astype(np.float32), factors[h]) for h in (0, 1)]).astype(
            np.float16
        )
    table, cache = [], CandidateCache()
    for post in tqdm(candidates(base), desc="tuning: post-processing", disable=not settings.progress):
        scores = evaluate_candidate(kept, post, settings.criterion, cache)
        table.append({"postprocess": dataclasses.asdict(post), **scores})
    best = max(range(len(table)), key=lambda i: (table[i]["score"], -i))
    if settings.crf:
        with_crf = dataclasses.replace(PostprocessConfig.from_mapping(table[best]["postprocess"]), crf=True)
        table.append(
            {"postprocess": dataclasses.asdict(with_crf), **evaluate_candidate(kept, with_crf, settings.criterion)}
        )
        if table[-1]["score"] > table[best]["score"]:
            best = len(table) - 1
    return {"chosen": best, "calibration": calibration, "candidates": table}


def summary_line(record: dict) -> str:
    """'tuned post-processing: ...' as train.log, the end-of-run summary and evaluate's log say it."""
    chosen = record["candidates"][record["chosen"]]
    post = PostprocessConfig.from_mapping(chosen["postprocess"])
    factors = [round(record["calibration"][head]["factor"], 3) for head in ("liver", "tumour")]
    views = record.get("view_scores")
    tta = (
        f"; flip TTA {'on' if record['tta'] else 'off'} (best {views['tta']['score']:.4f}, tumour Dice "
        f"{views['tta']['tumor_dice_per_case']:.4f} with it; {views['identity']['score']:.4f}, "
        f"{views['identity']['tumor_dice_per_case']:.4f} without)"
        if views
        else ""
    )
    return (
        f"tuned post-processing: {_describe(post)}; calibration x{factors[0]:g} liver, x{factors[1]:g} tumour{tta} "
        f"(on {record['cases']} validation cases by {record['criterion']}: {chosen['score']:.4f}, the untuned "
        f"{record['candidates'][0]['score']:.4f}; {record['seconds']:g} s)"
    )


def store(state: dict, path, spec, record: dict) -> None:
    """Write the tuned spec and the tuning record into the checkpoint `state` and save it to `path` atomically."""
    state["inference"] = spec.to_dict()
    state["tuning"] = record
    save_checkpoint(state, path)


def tune(cfg: EvaluateConfig) -> dict:
    """Choose calibration and post-processing on cfg.split (val) and write them into cfg.ckpt; the record."""
    if cfg.split != "val":
        raise LitsError(
            f"tune=true with split={cfg.split}: choosing on the test split would leak into the reported "
            "numbers; tune on split=val"
        )
    # tuning writes into the checkpoint: a folder it cannot write is refused before minutes of tuning, not after
    check_writable_folder(Path(cfg.ckpt).parent, "tuned checkpoint", "copy the checkpoint to a writable folder and "
                          "tune the copy")  # fmt: skip
    device = resolve_device(cfg.device, key="device")
    model, spec, state = load_model(cfg.ckpt, device)
    if "val" not in state["splits"] or not state["splits"]["val"]:
        raise LitsError(f"{cfg.ckpt}: the checkpoint's split has no validation cases to tune on")
    data = data_from_checkpoint(state, cfg.ckpt)
    if cfg.data_root:
        data = dataclasses.replace(data, root=cfg.data_root, synthetic=None)
    _, prepared = prepare(
        data, 0, splits=state["splits"], only=("val",), progress=cfg.progress, report_dir=cfg.paths.output_dir
    )
    base = spec.postprocess.with_overrides(cfg.postprocess)  # candidate 0: the checkpoint's, as overridden here
    tuned, record = choose(model, spec, prepared["val"], device, TuneSettings.of(cfg), base)
    store(state, cfg.ckpt, tuned, record)
    log.info("%s", summary_line(record))
    return record


def _describe(post: PostprocessConfig) -> str:
    on = {True: "on", False: "off"}
    return (
        f"tumour threshold {post.tumor_cut:g}, min {post.min_tumor_mm3:g} mm3 / {post.min_tumor_voxels} voxels, "
        f"keep confident {post.keep_confident:g}, hysteresis {on[post.hysteresis]}, crf {on[post.crf]}"
    )


def _crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        log.warning("tune_crf=true but pydensecrf2 is not installed (pip install -e '.[crf]'): CRF not tried")
        return False
    return True


def write_tuning_files(out_dir, record: dict) -> None:
    """tuning.json (every candidate's scores), tuning.md (the best candidates as a table) and reliability.png."""
    from pathlib import Path

    from lits.core.files import write_atomic, write_bytes_atomic, write_json
    from lits.core.tables import format_table
    from lits.evaluate.calibration import Reliability, reliability_png

    out_dir = Path(out_dir)
    write_json(out_dir / "tuning.json", record)
    curves = {}
    for head, fit in record["calibration"].items():
        for when in ("before", "after"):
            c = fit[when]
            ece = fit[f"ece_{when}"]
            label = f"{head}, {'raw' if when == 'before' else 'calibrated x' + format(fit['factor'], '.3g')}"
            curves[label] = Reliability(np.array(c["confidence"]), np.array(c["frequency"]), np.array(c["count"]), ece)
    write_bytes_atomic(out_dir / "reliability.png", reliability_png(curves, "validation voxels around the liver"))
    ranked = sorted(range(len(record["candidates"])), key=lambda i: -record["candidates"][i]["score"])[:10]
    rows = [{"rank": r + 1, "candidate": i, **_short(record["candidates"][i])} for r, i in enumerate(ranked)]
    columns = [
        "rank",
        "candidate",
        "score",
        "tumor_dice_per_case",
        "lesion_recall_iou50",
        "lesion_precision_iou50",
        "setting",
    ]
    text = (
        f"# Tuning on the validation split ({record['cases']} cases, criterion {record['criterion']})\n\n"
        f"Chosen: candidate {record['chosen']} (0 = the checkpoint's own post-processing).\n\n"
        + format_table(rows, columns)
        + "\n"
    )
    write_atomic(out_dir / "tuning.md", text)


def _short(candidate: dict) -> dict:
    post = PostprocessConfig.from_mapping(candidate["postprocess"])
    return {**{k: v for k, v in candidate.items() if k != "postprocess"}, "setting": _describe(post)}
