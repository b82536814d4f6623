"""Networks from config, by name. A registry rather than `_target_` so a checkpoint's config can never import code."""

from __future__ import annotations

import math

import torch
from monai.networks.nets import DynUNet, FlexibleUNet, UNet

from lits.core.config import ModelConfig, typed
from lits.core.errors import LitsError

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
    return FlexibleUNet(
        in_channels=cfg.in_channels,
        out_channels=OUT_CHANNELS,
        backbone=cfg.backbone,
        pretrained=False,
        spatial_dims=2,
        norm=cfg.norm,
    )


def _dynunet(cfg) -> torch.nn.Module:
    # nnU-Net's network in MONAI: two 3x3 conv-norm-LeakyReLU per level, strided-conv downsampling, transposed-conv
    # upsampling; deep_supervision adds 1x1 heads on the next decoder levels (training mode only; see
    # lits/train/deep_supervision.py)
    strides = [1, *cfg.strides]
    return DynUNet(
        spatial_dims=2,
        in_channels=cfg.in_channels,
        out_channels=OUT_CHANNELS,
        kernel_size=[3] * len(strides),
        strides=strides,
        upsample_kernel_size=list(cfg.strides),
        filters=list(cfg.channels),
        norm_name=cfg.norm,
        deep_supervision=bool(cfg.deep_supervision),
        deep_supr_num=int(cfg.deep_supr_num),
        res_block=bool(cfg.res_block),
    )


ARCHITECTURES = {"unet": _unet, "flexible_unet": _flexible_unet, "dynunet": _dynunet}


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """The network named by cfg.arch, built from the model settings alone (a mapping is validated first)."""
    cfg = typed(ModelConfig, cfg, "model")
    if cfg.arch not in ARCHITECTURES:
        raise LitsError(f"model.arch={cfg.arch}: unknown architecture; choose one of {sorted(ARCHITECTURES)}")
    model = ARCHITECTURES[cfg.arch](cfg)
    if cfg.output_prior:
        init_output_bias(model, cfg.output_prior)
    return model


def init_output_bias(model: torch.nn.Module, priors) -> None:
    """Start the output layer at the foreground priors: bias = log(p / (1 - p)) (RetinaNet's trick).

    From a zero bias every pixel starts at p = 0.5, and Adam moves a bias by about lr per step, so
    learning that tumour is rare takes thousands of steps; measured here, 60 steps on one batch reach
    BCE 0.16 from the prior versus 0.49 from zero.
    """
    if len(priors) != OUT_CHANNELS or not all(0 < p < 1 for p in priors):
        raise LitsError(
            f"model.output_prior={list(priors)}: give {OUT_CHANNELS} probabilities in (0, 1) (liver, tumour)"
        )
    heads = [
        m
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
        and m.out_channels == OUT_CHANNELS
        and m.bias is not None
    ]
    if not isinstance(model, DynUNet):
        heads = heads[-1:]  # the output layer; DynUNet: its output block and every deep-supervision head
    with torch.no_grad():
        for head in heads:
            head.bias.copy_(torch.tensor([math.log(p / (1 - p)) for p in priors]))


def size_multiple(cfg: ModelConfig) -> int:
    """Input height/width must be a multiple of this (the total downsampling; ModelConfig.size_multiple)."""
    return typed(ModelConfig, cfg, "model").size_multiple


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
