"""The training groups: `loss`, `optim`, `trainer`, and `faults` (test-only fault injection, set by `debug=faults`)."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

import lits.core.config.checks as checks
from lits.core.vocabulary import MONITORS

REGIONS = ("dice", "generalized_dice", "log_dice", "tversky")
BLOB_REGIONS = ("dice", "tversky")  # region terms the lesion-wise blob term mixes with
PIXELS = ("bce", "focal")
SCHEDULES = ("progressive", "constant")
DICE_REDUCTIONS = ("local", "global")
OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "poly")
AMP_MODES = ("auto", "off", "fp16", "bf16")
DIST_BACKENDS = ("auto", "nccl", "gloo")


@dataclass
class DiceConfig:
    """The soft Dice of the region term (MONAI DiceLoss settings)."""

    eps: float = 1.0e-5  # smoothing in numerator and denominator (generalized_dice too)
    batch: bool = True  # sums over the whole batch (stable when a sample has no tumour); false: per-sample Dice
    squared: bool = False  # V-Net denominator sum p^2 + sum g^2 (dice, log_dice)
    jaccard: bool = False  # soft IoU instead of Dice (dice, log_dice)

    def __post_init__(self) -> None:
        self.eps = checks.number("loss.dice.eps", self.eps, 0.0)


@dataclass
class ScheduleConfig:
    """alpha, the weight of the region (Dice) term, per epoch of a trainer.max_epochs-long run (lits/train/loss.py).

    trainer.max_time stretches the epochs onto those that fit; a shorter max_epochs does not (set the epochs below).
    """

    kind: str = "progressive"  # progressive: BCE -> rising hybrid -> Dice | constant: alpha throughout
    alpha: float = 0.5  # constant only
    bce_epochs: int = 5  # progressive: the first bce_epochs epochs are pure BCE (epochs 1-5)
    dice_epoch: int = 15  # progressive: final_alpha after this many epochs (from epoch 16 on)
    hybrid_start: float = 0.3  # alpha of the first epoch after the BCE ones (epoch 6) ...
    hybrid_step: float = 0.04  # ... rising this much per epoch ...
    hybrid_max: float = 0.7  # ... capped here
    final_alpha: float = 1.0  # pure Dice fine-tuning (the article's code keeps 0.7)

    def __post_init__(self) -> None:
        self.kind = checks.choice("loss.schedule.kind", self.kind, SCHEDULES, "schedule")
        for name in ("alpha", "hybrid_start", "hybrid_max", "final_alpha"):
            setattr(self, name, checks.probability(f"loss.schedule.{name}", getattr(self, name)))
        self.hybrid_step = checks.number("loss.schedule.hybrid_step", self.hybrid_step, 0.0)
        self.bce_epochs = checks.integer("loss.schedule.bce_epochs", self.bce_epochs, 0)
        self.dice_epoch = checks.integer("loss.schedule.dice_epoch", self.dice_epoch, self.bce_epochs)


@dataclass
class LossConfig:
    """scale * (alpha * REGION + (1 - alpha) * PIXEL) (lits/train/loss.py); alpha follows `schedule`.

    Defaults: REGION soft Dice, PIXEL BCEWithLogits, scale 1: the hybrid loss of the progressive recipe. The loop logs
    PIXEL as train/bce and REGION as train/dice whatever the variant.
    """

    region: str = "dice"  # dice (MONAI DiceLoss per channel) | generalized_dice | log_dice (-log(clamp(Dice, floor)))
    # | tversky (MONAI TverskyLoss per channel: false negatives weighted tversky_beta, false positives 1 - beta)
    pixel: str = "bce"  # bce: BCEWithLogits | focal: MONAI FocalLoss, sigmoid, (1 - p_t)^focal_gamma * BCE
    log_dice_floor: float = 0.01  # log_dice only: the Dice is clamped to this before the log
    focal_gamma: float = 2.0  # focal only: 0 is BCE
    tversky_beta: float = 0.7  # tversky only: > 0.5 favours recall (missed tumour costs more); 0.5 is the soft Dice
    # tumour channel's region term = (1 - w) * region + w * blob, blob = a Dice per reference lesion of the crop,
    # averaged over lesions (lits/train/lesion_loss.py): a missed small lesion costs as much as a missed mass; 0 = off
    blob_weight: float = 0.0
    scale: float = 1.0  # the total is multiplied by this (experiment dice_ce: 2 with alpha 0.5 = Dice + BCE)
    temperature: float = 1.0  # sigmoid temperature (2.0 gives softer probabilities); inference uses the same
    channel_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # liver, tumour: one per output channel
    dice: DiceConfig = field(default_factory=DiceConfig)
    dice_reduction: str = "local"  # local: Dice of each process's batch | global: all-reduced over DDP ranks first
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        self.region = checks.choice("loss.region", self.region, REGIONS, "region term")
        self.pixel = checks.choice("loss.pixel", self.pixel, PIXELS, "pixel term")
        self.log_dice_floor = checks.number("loss.log_dice_floor", self.log_dice_floor, 0.0, 1.0, open_low=True)
        self.focal_gamma = checks.number("loss.focal_gamma", self.focal_gamma, 0.0)
        self.tversky_beta = checks.number("loss.tversky_beta", self.tversky_beta, 0.0, 1.0)
        self.blob_weight = checks.probability("loss.blob_weight", self.blob_weight)
        if self.blob_weight > 0 and self.region not in BLOB_REGIONS:
            regions = " or ".join(BLOB_REGIONS)
            reason = f"mixes with loss.region={regions} only (got {self.region}); set loss.blob_weight=0"
            raise checks.fail("loss.blob_weight", self.blob_weight, reason)
        self.scale = checks.number("loss.scale", self.scale, 0.0, open_low=True)
        self.temperature = checks.number("loss.temperature", self.temperature, 0.0, open_low=True)
        weights = [checks.number("loss.channel_weights", w, 0.0) for w in self.channel_weights]
        if not weights or sum(weights) <= 0:
            raise checks.fail(
                "loss.channel_weights",
                weights,
                "give one non-negative weight per channel (liver, tumour), not all zero",
            )
        self.channel_weights = weights
        self.dice_reduction = checks.choice("loss.dice_reduction", self.dice_reduction, DICE_REDUCTIONS)
        if self.dice_reduction == "global" and not self.dice.batch:
            raise checks.fail(
                "loss.dice_reduction", "global", "sums over the whole batch; it needs loss.dice.batch=true"
            )
        if self.dice_reduction == "global" and self.region != "dice":
            reason = f"is implemented for loss.region=dice only (got {self.region}); set loss.dice_reduction=local"
            raise checks.fail("loss.dice_reduction", "global", reason)
        if self.region == "generalized_dice" and (self.dice.squared or self.dice.jaccard):
            raise checks.fail(
                "loss.region",
                self.region,
                "has no squared or Jaccard form; set loss.dice.squared=false loss.dice.jaccard=false",
            )


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (lits/train/optim.py). Defaults: AdamW + cosine annealing."""

    name: str = "adamw"  # adamw | sgd (Nesterov momentum, nnU-Net's)
    lr: float = 3.0e-4  # learning rate at the start of the schedule
    weight_decay: float = 1.0e-5  # decoupled (AdamW) or L2 (SGD) weight decay
    schedule: str = "cosine"  # cosine over t_max epochs | poly: lr * (1 - epoch / trainer.max_epochs) ** poly_exponent
    t_max: float = "${trainer.max_epochs}"  # cosine period in epochs (the article uses 20 with 30 epochs)
    min_lr: float = 0.0  # cosine floor
    momentum: float = 0.99  # sgd
    nesterov: bool = True  # sgd
    poly_exponent: float = 0.9  # poly

    def __post_init__(self) -> None:
        self.name = checks.choice("optim.name", self.name, OPTIMIZERS, "optimizer")
        self.lr = checks.number("optim.lr", self.lr, 0.0, open_low=True)
        self.weight_decay = checks.number("optim.weight_decay", self.weight_decay, 0.0)
        self.schedule = checks.choice("optim.schedule", self.schedule, LR_SCHEDULES, "learning-rate schedule")
        self.t_max = checks.number("optim.t_max", self.t_max, 0.0, open_low=True)
        self.min_lr = checks.number("optim.min_lr", self.min_lr, 0.0)
        self.momentum = checks.number("optim.momentum", self.momentum, 0.0, 1.0)
        self.poly_exponent = checks.number("optim.poly_exponent", self.poly_exponent, 0.0)


@dataclass
class TrainerConfig:
    """How training runs: length, batch, device and precision, validation, checkpoints, resume, DDP."""

    max_epochs: int = 30  # epochs of the run (the LR and loss schedules count them; max_time stretches them)
    max_time: float | None = None  # minutes of training: as many epochs as fit, schedules stretched onto them
    batch_size: int = 8  # per process
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (CUDA: fp16 + GradScaler; CPU: off) | off | fp16 | bf16 (fp16 on CPU: slow, for tests)
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    val_every: int = 2  # validate every N epochs (and after the last)
    val_tta: bool = False  # validation with flip test-time augmentation (3x the forward passes)
    val_batch_size: int = 16  # slices per forward pass in validation
    # best.pt keeps the highest value of this validation metric. val/lesion_score = mean of tumour Dice per case and
    # lesion F1 at IoU > 0.5 (post-processed): finding lesions counts as much as outlining them. Chosen over tumour
    # Dice alone (the published recipe's criterion) by the recipe study on validation.
    monitor: str = "val/lesion_score"
    # on a tie of `monitor` (e.g. tumour Dice 0 in the first epochs) the higher of this wins, then the later epoch
    monitor_tiebreak: str | None = "val/liver_dice_post"
    channels_last: bool = True  # NHWC tensors: faster convolutions on GPUs (and most CPUs)
    deterministic: bool = False  # deterministic kernels, no cudnn.benchmark: bit-exact resume (slower)
    num_threads: int | None = None  # torch CPU threads (null = torch's default)
    progress: bool = True  # progress bars (the epoch lines are logged either way)
    log_images: bool = True  # CT / reference / prediction overlays in TensorBoard at each validation
    resume: str | None = "auto"  # auto: <run dir>/checkpoints/last.pt if any | PATH: that last.pt or run | null: fresh
    save_every_steps: int = 0  # also save last.pt every N steps inside an epoch (0 = at epoch ends only)
    max_bad_steps: int = 5  # a non-finite loss skips its step; this many in a row abort the run
    compile: bool = False  # torch.compile the training model (the first steps are slow while it compiles)
    compile_mode: str | None = None  # null (default) | reduce-overhead | max-autotune
    dist_backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    dist_timeout_min: float = 30.0  # collective timeout; must exceed one validation (rank 0 validates, others wait)

    def __post_init__(self) -> None:
        self.max_epochs = checks.integer("trainer.max_epochs", self.max_epochs, 1)
        self.max_time = checks.optional(checks.number, "trainer.max_time", self.max_time, 0.0, open_low=True)
        self.batch_size = checks.integer("trainer.batch_size", self.batch_size, 1)
        self.amp = checks.choice("trainer.amp", self.amp, AMP_MODES, "precision")
        self.grad_clip = checks.number("trainer.grad_clip", self.grad_clip, 0.0)
        self.val_every = checks.integer("trainer.val_every", self.val_every, 1)
        self.val_batch_size = checks.integer("trainer.val_batch_size", self.val_batch_size, 1)
        self.monitor = checks.choice("trainer.monitor", self.monitor, MONITORS, "validation metric")
        self.monitor_tiebreak = checks.optional(
            checks.choice, "trainer.monitor_tiebreak", self.monitor_tiebreak, MONITORS, "validation metric"
        )
        self.num_threads = checks.optional(checks.integer, "trainer.num_threads", self.num_threads, 1)
        self.save_every_steps = checks.integer("trainer.save_every_steps", self.save_every_steps, 0)
        self.max_bad_steps = checks.integer("trainer.max_bad_steps", self.max_bad_steps, 1,
                                            hint=" (non-finite losses in a row that abort)")  # fmt: skip
        self.dist_backend = checks.choice("trainer.dist_backend", self.dist_backend, DIST_BACKENDS, "backend")
        self.dist_timeout_min = checks.number("trainer.dist_timeout_min", self.dist_timeout_min, 0.0, open_low=True)


@dataclass
class FaultsConfig:
    """Fault injection for the tests (`debug=faults`); absent from real training configs."""

    nan_steps: list[int] = field(default_factory=list)  # global steps whose input batch is made NaN (last rank)
    # global steps whose backward pass overflows on the last rank (a gradient becomes Inf, the loss stays finite), as
    # an fp16 overflow does: the GradScaler must skip the step and lower its scale (needs trainer.amp=fp16)
    overflow_steps: list[int] = field(default_factory=list)
    kill_at_step: int | None = None  # at the start of this global step the last rank sends itself kill_signal
    kill_signal: str = "SIGKILL"  # SIGKILL (a crash) | SIGTERM / SIGINT (a graceful stop)
    sample_log: bool = False  # each rank appends its sample draws per epoch to <run dir>/debug/samples-rank<r>.jsonl
    kill_during_save: int | None = None  # SIGKILL halfway through writing the N-th checkpoint file (1-based) of rank 0

    def __post_init__(self) -> None:
        self.nan_steps = [checks.integer("faults.nan_steps", s, 0) for s in self.nan_steps]
        self.overflow_steps = [checks.integer("faults.overflow_steps", s, 0) for s in self.overflow_steps]
        self.kill_at_step = checks.optional(checks.integer, "faults.kill_at_step", self.kill_at_step, 0)
        self.kill_during_save = checks.optional(checks.integer, "faults.kill_during_save", self.kill_during_save, 1)
        name = str(self.kill_signal).upper()
        name = name if name.startswith("SIG") else "SIG" + name
        self.kill_signal = checks.choice("faults.kill_signal", name, ("SIGKILL", "SIGTERM", "SIGINT"), "signal")

    @property
    def signal_number(self) -> int:
        return int(signal.Signals[self.kill_signal])
