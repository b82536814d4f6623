"""Batched training augmentation, run on the training device.

CPU data-loader workers only slice memmapped arrays; this package then augments the whole batch at
once on whatever device the batch lives on (CUDA in practice). The transforms and their defaults
follow nnU-Net v2 (batchgeneratorsv2, ``nnUNetTrainer.get_training_transforms``); the ``augment``
config group ``default`` keeps the original rotate/elastic/intensity recipe, ``nnunet`` switches on
the nnU-Net v2 2d recipe.

Modules: ``config`` (``AugmentConfig``, the validated settings), ``params`` (``AugmentParams``, the
per-sample parameters, and how they are drawn), ``spatial`` (mirroring, scaling, rotation and elastic
deformation as one sampling grid), ``intensity`` (noise, blur, brightness, contrast, low resolution,
gamma, intensity scale/shift) and ``batch`` (``BatchAugment``, the ``nn.Module`` that draws and applies
them).

Each transform has its own probability, drawn independently per sample. Samples selected for no
spatial transform are returned bit-identical (they are not resampled at all), samples selected for
no intensity transform are not touched by that stage, and a transform with zero magnitude
(``max_rotate_deg == 0``, ``elastic_sigma == 0``, a range of [1, 1] for scaling, brightness, contrast
or gamma, ``noise_std`` [0, 0]) is treated as not selected.

All random parameters are drawn on the CPU from a CPU ``torch.Generator`` (always the same number
of draws, whatever the probabilities: new parameters are drawn after the original ones, so the
original parameters and therefore the ``default`` recipe reproduce earlier runs) and then moved to
the device, so a seed reproduces the same augmentation on CPU and CUDA. All arithmetic runs in
float32 with autocast disabled; outputs keep the input shapes, dtypes, device and memory format
(channels_last is preserved).

Why batched here and not MONAI's / nnU-Net's per-sample transforms: those run per sample in the
data-loader workers. Batched here, rotation + elastic + intensity on 8 x 1 x 256 x 256 takes ~9 ms on
2 CPU cores vs ~150 ms for MONAI per-sample ``RandRotated`` + ``Rand2DElasticd`` (~16x, measured when
this augmentation was written); on CUDA it keeps the CPU workers free, and every new transform costs a
few batched kernels instead of a Python loop over samples (the one exception: each noised sample's
field is one CPU ``randn`` call, so that it is reproducible across devices). On 2 CPU cores, 8 x 1 x 256 x 256
takes ~9-11 ms with the ``default`` recipe and ~11-14 ms with the ``nnunet`` recipe (8 x 1 x 128 x 128:
~3-5 vs ~6-8 ms; measured side by side on a shared machine when the nnU-Net transforms were added).
"""

from lits.core.config.augment import AugmentConfig
from lits.train.augment.batch import BatchAugment
from lits.train.augment.params import AugmentParams

__all__ = ["AugmentConfig", "AugmentParams", "BatchAugment"]
