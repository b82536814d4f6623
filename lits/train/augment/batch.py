"""``BatchAugment``: draw the per-sample parameters, then apply the spatial and the intensity step."""

from __future__ import annotations

import torch

from lits.core.config.augment import AugmentConfig
from lits.train.augment.intensity import apply_nnunet_intensity, apply_scale_shift
from lits.train.augment.params import AugmentParams, sample_params
from lits.train.augment.spatial import apply_spatial

__all__ = ["BatchAugment"]


class BatchAugment(torch.nn.Module):
    """Augment a whole (image, label) batch on its device; see the ``lits.train.augment`` docstring."""

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg

    def extra_repr(self) -> str:
        return repr(self.cfg)

    def sample_params(self, batch: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the per-sample parameters on the CPU (fixed number of draws, so streams stay stable).

        The original parameters are drawn first, in their original order; the nnU-Net additions follow.
        """
        return sample_params(self.cfg, batch, generator)

    def forward(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, C, H, W) float, label (B, H, W) integer (or bool) -> same shapes, dtypes, device.

        Random parameters come from the CPU ``generator`` (None: the global RNG). Returns the inputs
        themselves when ``cfg.enabled`` is False.
        """
        if not self.cfg.enabled:
            return image, label
        return self.apply_params(image, label, self.sample_params(image.shape[0], generator))

    def apply_params(
        self, image: torch.Tensor, label: torch.Tensor, params: AugmentParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply explicit parameters (used by ``forward``; tests call it to force angles/displacements).

        The inputs are never modified; a sample selected for no transform comes back bit-identical.
        """
        _check_batch(image, label)
        out_img, out_lab = apply_spatial(image, label, params)
        out_img = apply_nnunet_intensity(out_img, image, params, self.cfg.blur_sigma[1])
        return apply_scale_shift(out_img, image, params), out_lab


def _check_batch(image: torch.Tensor, label: torch.Tensor) -> None:
    """Raise ``ValueError`` unless image is a float (B, C, H, W) and label an integer (B, H, W) on its device."""
    if image.dim() != 4 or not image.is_floating_point():
        raise ValueError(f"image must be a float (B, C, H, W) tensor, got {tuple(image.shape)} {image.dtype}")
    lab_shape = tuple(label.shape) if label.dim() == 3 else None
    if lab_shape != (image.shape[0], *image.shape[2:]):
        raise ValueError(
            f"label must be (B, H, W) = {(image.shape[0], *image.shape[2:])} to match image "
            f"{tuple(image.shape)}, got {tuple(label.shape)}"
        )
    if label.is_floating_point() or label.is_complex():
        raise ValueError(f"label must be an integer or bool tensor, got {label.dtype}")
    if label.device != image.device:
        raise ValueError(f"image on {image.device} but label on {label.device}")
