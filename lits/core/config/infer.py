"""Post-processing (`postprocess`, also part of a checkpoint's inference spec) and the evaluate / predict tasks."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from omegaconf import MISSING

import lits.core.config.checks as checks
from lits.core.config.data import DataConfig
from lits.core.config.typed import Schema
from lits.core.errors import LitsError

NAMINGS = ("auto", "lits", "input")
SPLITS = ("train", "val", "test")


@dataclass(unsafe_hash=True)  # mutable: Hydra overrides it; hashable once normalised
class PostprocessConfig(Schema):
    """Connected-component clean-up of predictions (lits/infer/postprocess.py applies the steps in this order)."""

    PREFIX = "postprocess"

    threshold: float = 0.5  # probability threshold of both heads ...
    tumor_threshold: float | None = None  # ... or of the liver head only, when the tumour head has its own
    largest_liver_component: bool = True  # keep the largest 3D liver component
    tumor_in_liver: bool = True  # tumour kept only inside the (dilated) liver
    liver_dilation: int = 2  # voxels
    min_tumor_voxels: int = 50  # drop smaller 3D tumour components (0 = off) ...
    min_tumor_mm3: float = 0.0  # ... and those under this volume (mm^3: the same at any voxel size; 0 = off) ...
    keep_confident: float = 1.0  # ... unless their peak tumour probability reaches this (1: size alone decides)
    fill_liver_holes: bool = False  # fill enclosed 3D cavities of the liver mask
    hysteresis: bool = False  # tumour mask by hysteresis instead of `threshold`: voxels above low ...
    hysteresis_low: float = 0.3  # ... connected to a voxel above high ...
    hysteresis_high: float = 0.5  # ... (high = threshold only grows confident detections)
    crf: bool = False  # dense-CRF refinement of the probabilities, slice by slice, first (pip install -e ".[crf]")
    crf_iterations: int = 5  # mean-field iterations
    crf_sxy: float = 10.0  # bilateral kernel: spatial std (pixels) ...
    crf_srgb: float = 10.0  # ... and intensity std (grey levels of the [0, 255]-scaled HU window)
    crf_weight: float = 5.0  # bilateral compatibility (the smoothness Gaussian kernel has sxy 3, weight 3)

    def __post_init__(self) -> None:
        for name in ("threshold", "hysteresis_low", "hysteresis_high"):
            value = getattr(self, name)
            if not (checks.is_number(value) and 0.0 <= float(value) < 1.0):
                raise checks.fail(f"postprocess.{name}", value, "give a number in [0, 1)")
            object.__setattr__(self, name, float(value))
        if self.tumor_threshold is not None:
            value = self.tumor_threshold
            if not (checks.is_number(value) and 0.0 <= float(value) < 1.0):
                raise checks.fail("postprocess.tumor_threshold", value, "give a number in [0, 1), or null")
            object.__setattr__(self, "tumor_threshold", float(value))
        if self.hysteresis_low > self.hysteresis_high:
            raise checks.fail(
                "postprocess.hysteresis_low",
                self.hysteresis_low,
                f"give at most hysteresis_high={self.hysteresis_high}",
            )
        for name in ("largest_liver_component", "tumor_in_liver", "fill_liver_holes", "hysteresis", "crf"):
            object.__setattr__(self, name, checks.flag(f"postprocess.{name}", getattr(self, name)))
        for name in ("liver_dilation", "min_tumor_voxels"):
            object.__setattr__(self, name, checks.integer(f"postprocess.{name}", getattr(self, name), 0))
        object.__setattr__(self, "min_tumor_mm3", checks.number("postprocess.min_tumor_mm3", self.min_tumor_mm3, 0.0))
        object.__setattr__(
            self, "keep_confident", checks.probability("postprocess.keep_confident", self.keep_confident)
        )
        object.__setattr__(self, "crf_iterations", checks.integer("postprocess.crf_iterations", self.crf_iterations, 1))
        for name in ("crf_sxy", "crf_srgb", "crf_weight"):
            object.__setattr__(
                self, name, checks.number(f"postprocess.{name}", getattr(self, name), 0.0, open_low=True)
            )

    @property
    def tumor_cut(self) -> float:
        """The tumour head's threshold."""
        return self.threshold if self.tumor_threshold is None else self.tumor_threshold

    @property
    def removes_small_tumors(self) -> bool:
        return self.min_tumor_voxels > 0 or self.min_tumor_mm3 > 0

    def with_overrides(self, overrides: PostprocessOverrides) -> PostprocessConfig:
        """This configuration with every non-null setting of `overrides` replacing its own."""
        given = {k: v for k, v in dataclasses.asdict(overrides).items() if v is not None}
        return PostprocessConfig.from_mapping({**dataclasses.asdict(self), **given})


def _overrides_class() -> type:
    """PostprocessConfig's keys, each optional with default null: evaluate/predict start from the checkpoint's
    post-processing and replace only what the command line sets (`postprocess.min_tumor_voxels=100`)."""
    hints = typing.get_type_hints(PostprocessConfig)
    specs = [(f.name, hints[f.name] | None, field(default=None)) for f in dataclasses.fields(PostprocessConfig)]
    overrides = dataclasses.make_dataclass("PostprocessOverrides", specs)
    overrides.__module__ = __name__
    return overrides


PostprocessOverrides = _overrides_class()


@dataclass
class ReportConfig:
    """What evaluate.py draws beside its tables."""

    montages: bool = True  # montages/case-N.png: the slices with the largest tumour error
    montage_slices: int = 3  # slices per case in a montage
    crop_margin: int | None = 24  # pixels kept around the liver in montages (null: whole slice)
    plot: bool = True  # tumor_dice_vs_volume.png

    def __post_init__(self) -> None:
        self.montage_slices = checks.integer("report.montage_slices", self.montage_slices, 1)
        self.crop_margin = checks.optional(checks.integer, "report.crop_margin", self.crop_margin, 0)


@dataclass
class PathsConfig:
    """Where things go, relative to the folder you run from."""

    root_dir: str = "${hydra:runtime.cwd}"
    data_dir: str = "${paths.root_dir}/data"  # generated data and preprocessing caches
    output_root: str = "${paths.root_dir}/outputs"
    output_dir: str = "${hydra:runtime.output_dir}"  # this run's folder


@dataclass
class InferenceSettings:
    """What evaluate and predict share: device, precision, batch and test-time augmentation."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (fp16 on CUDA, off on CPU) | off | fp16 | bf16
    batch_size: int = 16  # slices per forward pass
    # flip test-time augmentation, the mean of the identity and the flips the network was trained with: null = as
    # the checkpoint's tuning chose on validation (TTA only where it scored higher there; off when untuned)
    tta: bool | None = None
    progress: bool = True  # progress bars

    def __post_init__(self) -> None:
        if self.tta is not None:
            self.tta = checks.flag("tta", self.tta)
        self.amp = checks.choice("amp", self.amp, ("auto", "off", "fp16", "bf16"), "precision")
        self.batch_size = checks.integer("batch_size", self.batch_size, 1)


@dataclass
class EvaluateConfig(InferenceSettings):
    """python evaluate.py ckpt=PATH [split=test|val] | predictions=DIR data=lits data.root=DIR"""

    # ckpt: required unless predictions= is given; data.root: with predictions= (lits/evaluate/sources.py says which)
    MAY_BE_MISSING = ("ckpt", "data.root")

    name: str = "evaluate"
    ckpt: str | None = MISSING  # a checkpoint (best.pt / last.pt) ...
    predictions: str | None = None  # ... or a folder of segmentation-N.nii[.gz] predictions to score instead
    # predictions=: a reference case without a prediction file is scored as an empty prediction (empty: the LiTS
    # leaderboard's rule, Dice 0 where the reference has tumour) or left out (skip); either way the report says which
    missing_predictions: str = "empty"
    split: str = "test"  # test | val | train (checkpoint mode)
    data_root: str | None = None  # where the data lives now, if it moved since training
    data: DataConfig | None = None  # predictions mode only: data=lits data.root=DIR (where the references are)
    ablation: bool = True  # score every cumulative post-processing step (false: only raw and post)
    tune: bool = False  # split=val: choose calibration and post-processing here and store them in the checkpoint
    tune_criterion: str = "lesion_score"  # lesion_score: mean of tumour Dice and lesion F1 (IoU > 0.5) | tumor_dice
    tune_crf: bool = False  # also try the dense-CRF stage while tuning (slow; needs the crf extra)
    detection_curve: bool = True  # lesion recall vs false positives per case over the tumour threshold (main stage)
    save_predictions: bool = False  # write the post stage as NIfTI label maps to <run>/predictions/
    save_probabilities: bool = False  # ... and <name>_probabilities.nii.gz (liver, tumour) beside them
    naming: str = "lits"  # lits: test-segmentation-N.nii | input: the input CT's file name | auto
    tensorboard_dir: str | None = "auto"  # auto: <ckpt run>/tensorboard/evaluate/<split> | null: off | a folder
    postprocess: PostprocessOverrides = field(default_factory=PostprocessOverrides)  # null: the checkpoint's
    report: ReportConfig = field(default_factory=ReportConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ckpt == MISSING:
            self.ckpt = None
        self.split = checks.choice("split", self.split, SPLITS, "split")
        self.tune_criterion = checks.choice("tune_criterion", self.tune_criterion, ("lesion_score", "tumor_dice"))
        self.missing_predictions = checks.choice("missing_predictions", self.missing_predictions, ("empty", "skip"))
        self.naming = checks.choice("naming", self.naming, NAMINGS, "naming")


@dataclass
class PredictConfig(InferenceSettings):
    """python predict.py ckpt=PATH | model=DIR  input=FILE_OR_DIR output=DIR"""

    name: str = "predict"
    ckpt: str | None = None  # a checkpoint (best.pt / last.pt), run by PyTorch ...
    # ... or a model folder written by export.py, run by onnxruntime without torch. On the command line `model=DIR`
    # (predict.py passes it here: `model` is also the training config group of the networks, configs/model/)
    model_dir: str | None = None
    input: str = MISSING  # a .nii / .nii.gz CT, or a folder of them (LiTS segmentation-N files in it are skipped)
    output: str = MISSING  # folder for the label maps and predictions.csv (created when the first one is written)
    # auto: test-segmentation-N.nii.gz when the input name has a case number, else <input name>.nii.gz |
    # lits: the LiTS submission's test-segmentation-N.nii (uncompressed) | input: <input name>.nii.gz
    naming: str = "auto"
    overwrite: bool = False  # replace label maps (and predictions.csv) already in output=; refused otherwise
    save_probabilities: bool = False  # also <name>_probabilities.nii.gz: 4D (X, Y, Z, 2) liver / tumour probabilities
    on_error: str = "fail"  # fail: an unreadable or implausible CT stops the run | skip: predict the rest, list it
    postprocess: PostprocessOverrides = field(default_factory=PostprocessOverrides)  # null: the checkpoint's
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.naming = checks.choice("naming", self.naming, NAMINGS, "naming")
        self.on_error = checks.choice("on_error", self.on_error, ("fail", "skip"))
        if self.ckpt is None and self.model_dir is None:
            raise LitsError("ckpt or model is required: pass ckpt=PATH (a checkpoint) or model=DIR (a model folder "
                            "written by export.py)")  # fmt: skip
        if self.ckpt is not None and self.model_dir is not None:
            raise LitsError(f"ckpt={self.ckpt} and model={self.model_dir}: pass one of them, not both")


@dataclass
class ExportConfig:
    """python export.py ckpt=PATH output=DIR"""

    name: str = "export"
    ckpt: str = MISSING  # a checkpoint (best.pt / last.pt), tuned or not: its inference spec goes with the network
    output: str = MISSING  # the model folder: model.onnx and inference.json (created when both are ready)
    overwrite: bool = False  # replace a model folder's files already in output=; refused otherwise
    paths: PathsConfig = field(default_factory=PathsConfig)
