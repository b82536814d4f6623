"""Networks from config, by name. A registry rather than `_target_` so a checkpoint's config can never import code."""

from __future__ import annotations

import torch
from monai.networks.nets import FlexibleUNet, UNet

from lits.errors import LitsError

OUT_CHANNELS = 2  # sigmoid channels: liver (label >= 1), tumour (label == 2)


def _unet(cfg) -> torch.nn.Module:
    return UNet(
        spatial_dims=2,
        in_channels=cfg.in_channels,
        out_channels=OUT_CHANNELS,
        channels=tuple(cfg.channels),
        strides=tuple(cfg.strides),
        num_res_units=cfg.num_res_units,
        norm=cfg.norm,
        dropout=cfg.dropout,
    )


def _flexible_unet(cfg) -> torch.nn.Module:
    # pretrained=False: no weight download; the encoder is trained from scratch
    return FlexibleUNet(in_channels=cfg.in_channels, out_channels=OUT_CHANNELS, backbone=cfg.backbone,
                        pretrained=False, spatial_dims=2, norm=cfg.norm)


ARCHITECTURES = {"unet": _unet, "flexible_unet": _flexible_unet}


def build_model(cfg) -> torch.nn.Module:
    """The network named by cfg.arch, built from the model config alone."""
    if cfg.arch not in ARCHITECTURES:
        raise LitsError(f"model.arch={cfg.arch}: unknown architecture; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[cfg.arch](cfg)


def size_multiple(cfg) -> int:
    """Input height/width must be a multiple of this (the total downsampling)."""
    if cfg.arch == "unet":
        m = 1
        for s in cfg.strides:
            m *= s
        return m
    return 32  # ResNet encoders downsample 5 times


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
