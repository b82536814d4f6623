"""The `model` group: which network, and its size. Defaults: MONAI UNet 16..256 (1.6M parameters, CPU-sized)."""

from __future__ import annotations

from dataclasses import dataclass, field

import lits.core.config.checks as checks

ARCHITECTURES = ("unet", "flexible_unet", "dynunet")
NORMS = ("batch", "instance", "group", "layer")
# Settings that do not change the network's tensors: checkpoints differing only in these still fit.
NON_ARCHITECTURE_KEYS = ("output_prior", "dropout")


@dataclass
class ModelConfig:
    """A 2D segmentation network with two sigmoid outputs (liver, tumour), built by name (lits/infer/networks.py)."""

    arch: str = "unet"  # unet: MONAI UNet | flexible_unet: MONAI FlexibleUNet (ResNet encoder) | dynunet: nnU-Net's
    in_channels: int = 1  # 2 * data.context_slices + 1
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # unet, dynunet: features per level
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])  # unet, dynunet: downsampling per level
    num_res_units: int = 2  # unet: residual units per level
    norm: str = "batch"  # batch norm: ~2x faster whole-slice inference on CPU than instance norm (measured)
    dropout: float = 0.0  # unet
    backbone: str = "resnet34"  # flexible_unet: the encoder (trained from scratch, no download)
    res_block: bool = False  # dynunet: residual blocks
    deep_supervision: bool = (
        False  # dynunet: auxiliary outputs of coarser decoder levels (lits/train/deep_supervision.py)
    )
    deep_supr_num: int = 2  # dynunet: how many auxiliary outputs
    output_prior: tuple[float, float] | None = (0.1, 0.01)  # initial liver / tumour probability (output bias)

    def __post_init__(self) -> None:
        self.arch = checks.choice("model.arch", self.arch, ARCHITECTURES, "architecture")
        self.in_channels = checks.integer("model.in_channels", self.in_channels, 1)
        self.channels = [checks.integer("model.channels", c, 1) for c in self.channels]
        self.strides = [checks.integer("model.strides", s, 1) for s in self.strides]
        if self.arch != "flexible_unet" and len(self.channels) < 2:
            fix = "give at least 2 levels, e.g. [16,32] (a U-Net downsamples at least once)"
            raise checks.fail("model.channels", self.channels, fix)
        if len(self.channels) != len(self.strides) + 1:
            raise checks.fail(
                "model.strides",
                self.strides,
                f"give one stride per level after the first "
                f"({len(self.channels) - 1} for {len(self.channels)} channels)",
            )
        self.num_res_units = checks.integer("model.num_res_units", self.num_res_units, 0)
        self.norm = checks.choice("model.norm", self.norm, NORMS, "normalisation")
        self.dropout = checks.number("model.dropout", self.dropout, 0.0, 1.0)
        self.deep_supr_num = checks.integer("model.deep_supr_num", self.deep_supr_num, 1)
        if self.arch == "dynunet" and self.deep_supervision and self.deep_supr_num >= len(self.strides):
            raise checks.fail(
                "model.deep_supr_num", self.deep_supr_num,
                f"give at most {len(self.strides) - 1}: dynunet's decoder has {len(self.strides)} up-sampling levels "
                f"(model.strides={checks.show(self.strides)}) and the last one is the output itself",
            )  # fmt: skip
        if self.output_prior is not None:
            prior = tuple(self.output_prior)
            if len(prior) != 2 or not all(checks.is_number(p) and 0.0 < float(p) < 1.0 for p in prior):
                raise checks.fail("model.output_prior", prior, "give 2 probabilities in (0, 1) (liver, tumour)")
            self.output_prior = tuple(float(p) for p in prior)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be a multiple of this: the network's total downsampling."""
        if self.arch == "flexible_unet":
            return 32  # ResNet encoders downsample 5 times
        multiple = 1
        for stride in self.strides:
            multiple *= stride
        return multiple
