"""The inference spec: everything a checkpoint's network needs around it to segment a CT, versioned.

A training run writes it into every checkpoint (`inference`); evaluate.py and predict.py read only this (plus the
patient split and the data location for evaluation), never the training config's layout:

    version             SPEC_VERSION
    network             the model settings (lits.core.config.ModelConfig) the weights belong to
    window              HU window mapped to [0, 1] (the preprocessing cache's)
    target_spacing_xy   in-plane resampling before the network (null: native grid)
    context_slices      2.5D neighbours each side, stacked as channels
    temperature         sigmoid temperature of the logits (the loss's)
    calibration         per head (liver, tumour), a factor on the temperature fitted on validation data
                        (evaluate.py tune=true; 1.0 = uncalibrated): calibrated probabilities for every threshold
    normalization       what the network sees: the window values or nnU-Net's CT z-score (lits/data/normalization.py)
    postprocess         the post-processing settings (lits.core.config.PostprocessConfig)
    tta_flips           the mirror flips the network was trained with (augment.p_mirror_x / p_mirror_y), as dims of a
                        (N, C, Y, X) slice batch: [3] mirrors X, [2] Y, [2, 3] both. tta=true averages the identity
                        and these views only: averaging views the network never saw in training lowers Dice.

Version 1 (before tta_flips) is read as a network trained without mirroring: tta=true predicts the identity view.
Checkpoints written before the spec existed (no `format` key) are migrated from their training config: same network,
window, resampling, context and temperature; post-processing = the defaults, which is what evaluate.py and predict.py
applied to them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from lits.core.config import AugmentConfig, DataConfig, ModelConfig, PostprocessConfig, typed
from lits.core.errors import LitsError
from lits.data.normalization import Normalization
from lits.data.preprocess import Preprocessing

log = logging.getLogger(__name__)

SPEC_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no tta_flips (trained without mirroring as far as the spec knows)
MIRROR_X, MIRROR_Y = (3,), (2,)  # flip dims of a (N, C, Y, X) slice batch
# What evaluate.py and predict.py applied to checkpoints written before the spec (their defaults then), spelled out so
# that later default changes leave those checkpoints' results as they were.
LEGACY_POSTPROCESS = PostprocessConfig(threshold=0.5, largest_liver_component=True, tumor_in_liver=True,
                                       liver_dilation=2, min_tumor_voxels=50, min_tumor_mm3=0.0, keep_confident=1.0,
                                       fill_liver_holes=False, hysteresis=False, hysteresis_low=0.3,
                                       hysteresis_high=0.5, crf=False)  # fmt: skip


@dataclass(frozen=True)
class InferenceSpec:
    network: ModelConfig
    window: tuple[float, float]
    target_spacing_xy: tuple[float, float] | None
    context_slices: int
    temperature: float
    normalization: Normalization
    postprocess: PostprocessConfig
    calibration: tuple[float, float] = (1.0, 1.0)
    tta_flips: tuple[tuple[int, ...], ...] = ()

    def views(self, tta: bool) -> tuple[tuple[int, ...], ...]:
        """The flips to average: the identity, plus with `tta` every flip the network was trained with."""
        return ((), *self.tta_flips) if tta else ((),)

    def averages(self, tta: bool) -> bool:
        """Whether `tta` averages anything: tta=true and the network was trained with mirroring."""
        return len(self.views(tta)) > 1

    def tta_note(self, tta: bool, where: str) -> str | None:
        """The one line to log when tta=true has nothing to average (None otherwise)."""
        if tta and not self.tta_flips:
            return (
                f"{where}: tta=true, but its network was trained without mirroring (augment.p_mirror_x and "
                "p_mirror_y 0), so no flipped view matches its training: predicting without TTA"
            )
        return None

    @property
    def preprocessing(self) -> Preprocessing:
        """The cache's windowing and resampling for a new CT (predict.py)."""
        return Preprocessing(window=self.window, target_spacing_xy=self.target_spacing_xy)

    def predictor_settings(self) -> dict:
        """The keyword arguments of `predict_volume` that the trained network and its tuning fix: the temperature
        per head is the training temperature times the calibration factor fitted on validation."""
        return {
            "size_multiple": self.network.size_multiple,
            "temperature": tuple(self.temperature * c for c in self.calibration),
            "context_slices": self.context_slices,
            "normalization": self.normalization,
        }

    def tuned(self, postprocess: PostprocessConfig, calibration: tuple[float, float]) -> InferenceSpec:
        """This spec with post-processing and calibration chosen on validation data."""
        return dataclasses.replace(self, postprocess=postprocess, calibration=tuple(calibration))

    def to_dict(self) -> dict:
        return {
            "version": SPEC_VERSION,
            "network": dataclasses.asdict(self.network),
            "window": list(self.window),
            "target_spacing_xy": None if self.target_spacing_xy is None else list(self.target_spacing_xy),
            "context_slices": self.context_slices,
            "temperature": self.temperature,
            "calibration": list(self.calibration),
            "normalization": self.normalization.to_dict(),
            "postprocess": dataclasses.asdict(self.postprocess),
            "tta_flips": [list(f) for f in self.tta_flips],
        }

    @classmethod
    def from_dict(cls, spec: dict, where: str) -> InferenceSpec:
        if spec.get("version") not in READABLE_VERSIONS:
            raise LitsError(
                f"{where}: inference spec version {spec.get('version')} is not one this lits reads "
                f"({', '.join(map(str, READABLE_VERSIONS))}); use the lits version that wrote it, or retrain"
            )
        spacing = spec["target_spacing_xy"]
        return cls(
            network=typed(ModelConfig, spec["network"], "model"),
            window=tuple(float(w) for w in spec["window"]),
            target_spacing_xy=None if spacing is None else tuple(float(s) for s in spacing),
            context_slices=int(spec["context_slices"]),
            temperature=float(spec["temperature"]),
            normalization=Normalization.from_dict(spec["normalization"]),
            postprocess=PostprocessConfig.from_mapping(spec["postprocess"]),
            calibration=tuple(float(c) for c in spec["calibration"]),
            tta_flips=tuple(tuple(int(d) for d in f) for f in spec["tta_flips"]) if spec["version"] >= 2 else (),
        )

    @classmethod
    def for_training(
        cls,
        model: ModelConfig,
        data: DataConfig,
        temperature: float,
        normalization: Normalization,
        postprocess: PostprocessConfig,
        augment: AugmentConfig,
    ) -> InferenceSpec:
        return cls(
            model,
            tuple(data.window),
            data.target_spacing_xy,
            data.context_slices,
            float(temperature),
            normalization,
            postprocess,
            tta_flips=trained_flips(augment),
        )


def trained_flips(augment: AugmentConfig) -> tuple[tuple[int, ...], ...]:
    """The mirror flips an augmentation config trains with: X and/or Y (and both together when both are on)."""
    if not augment.enabled:
        return ()
    x, y = augment.p_mirror_x > 0, augment.p_mirror_y > 0
    return tuple(f for f, on in ((MIRROR_X, x), (MIRROR_Y, y), (MIRROR_Y + MIRROR_X, x and y)) if on)


def _legacy_section(config: dict, name: str, schema: type, where: str):
    """A section of an old checkpoint's training config as today's schema; keys the schema no longer has are dropped."""
    known = {f.name for f in dataclasses.fields(schema)}
    section = dict(config[name])
    dropped = sorted(set(section) - known)
    if dropped:
        log.warning("%s: ignoring %s settings of an older lits: %s", where, name, ", ".join(dropped))
    return typed(schema, {k: v for k, v in section.items() if k in known}, name)


def spec_from_checkpoint(state: dict, where: str) -> InferenceSpec:
    """The checkpoint's inference spec; older checkpoints (without one) are migrated from their training config."""
    if "inference" in state:
        return InferenceSpec.from_dict(state["inference"], where)
    config = state["config"]
    data = config["data"]
    return InferenceSpec(
        network=_legacy_section(config, "model", ModelConfig, where),
        window=tuple(float(w) for w in data["window"]),
        target_spacing_xy=None if data.get("target_spacing_xy") is None else tuple(data["target_spacing_xy"]),
        context_slices=int(data.get("context_slices") or 0),  # absent before 2.5D existed: plain 2D
        temperature=float(config["loss"]["temperature"]),
        normalization=Normalization.from_dict(state.get("normalization")),  # absent: the HU window
        postprocess=LEGACY_POSTPROCESS,
    )


def data_from_checkpoint(state: dict, where: str) -> DataConfig:
    """Where the run's cases are (root, layout, cache, window ...): its training data config, migrated if older."""
    return _legacy_section(state["config"], "data", DataConfig, where)


def warn_about_tta(spec: InferenceSpec, tta: bool | None, tuned_tta: bool | None, where: str) -> bool:
    """Whether test-time augmentation happens: `tta` None follows the tuning (`tuned_tta`, what the tuning record
    says; None: no record, no TTA); tta=true needs a network trained with mirroring (else one line says why not).
    A warning when an explicit `tta` differs from what the post-processing was tuned on (thresholds chosen for
    TTA-averaged probabilities, applied to single-view ones, or the reverse)."""
    if tta is None:
        return bool(tuned_tta)
    note = spec.tta_note(tta, str(where))
    if note:
        log.warning("%s", note)
    averaged = spec.averages(tta)
    if tuned_tta is not None and tuned_tta != averaged:
        log.warning(
            "%s: its post-processing was tuned %s flip TTA; pass tta=%s for the setting it was chosen for",
            where,
            "with" if tuned_tta else "without",
            str(tuned_tta).lower(),
        )
    return averaged
