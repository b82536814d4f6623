"""export.py: a checkpoint -> a model folder (model.onnx + inference.json) that predict.py runs without torch.

The network is exported by torch.onnx's current exporter (`torch.onnx.export(dynamo=True)`: torch.export, then
onnxscript's translation) at ONNX opset OPSET, with the batch, height and width dynamic, and checked with
`onnx.checker`. Before anything is written, onnxruntime runs the exported model on a batch of another shape than the
one exported from and its logits are compared with the checkpoint's (VERIFY_TOLERANCE); the difference is recorded in
inference.json. The folder's files appear only when both are complete: model.onnx first, then inference.json with its
checksum (a folder without a matching inference.json is refused by predict.py).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import lits
from lits.core.config import ExportConfig, typed
from lits.core.errors import LitsError
from lits.core.files import atomic_path, check_writable_folder, sha256_of, write_json
from lits.infer.checkpoint import checkpoint_epoch, load_checkpoint, model_from_state, tuned_tta
from lits.infer.onnx_network import INPUT_NAME, INSTALL_HINT, MODEL_FILE, MODEL_FORMAT, OUTPUT_NAME, SPEC_FILE

log = logging.getLogger(__name__)

OPSET = 18  # onnxruntime >= 1.14 runs it; the exporter's own default moves with torch releases
VERIFY_TOLERANCE = 1e-3  # max |logit difference| onnxruntime vs torch (float32; measured ~1e-5 on the four networks)


def _exporter_modules():
    """(onnx, onnxruntime, onnxscript), or one line saying how to install them."""
    try:
        import onnx
        import onnxruntime
        import onnxscript
    except ImportError as exc:
        raise LitsError(f"export.py needs {exc.name}, which is not installed; {INSTALL_HINT}") from None
    return onnx, onnxruntime, onnxscript


def _shortcut_a(x: torch.Tensor, planes: int, stride: int, spatial_dims: int) -> torch.Tensor:
    """MONAI ResNet's type-A shortcut (`ResNet._downsample_basic_block`: strided identity, channels zero-padded) without
    its `.data`, which torch.export cannot trace; the same arithmetic, so the same numbers."""
    pool = torch.nn.functional.avg_pool2d if spatial_dims == 2 else torch.nn.functional.avg_pool3d
    out = pool(x, kernel_size=1, stride=stride)
    zeros = out.new_zeros(out.size(0), planes - out.size(1), *out.shape[2:])
    return torch.cat([out, zeros], dim=1)


def exportable(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` that torch.export can trace: MONAI ResNet encoders' type-A shortcuts rebound
    (`_shortcut_a`)."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        shortcut = getattr(module, "downsample", None)
        if isinstance(shortcut, functools.partial) and shortcut.func.__name__ == "_downsample_basic_block":
            module.downsample = functools.partial(_shortcut_a, **shortcut.keywords)
    return model


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress prints, warnings and log lines kept from the console; shown if the export fails."""
    captured = io.StringIO()
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_network(model: torch.nn.Module, in_channels: int, size_multiple: int, path: Path, arch: str) -> None:
    """`model` -> ONNX at `path`: input (N, in_channels, H, W) float32, output logits; N, H, W dynamic; checked."""
    onnx, _, _ = _exporter_modules()
    example = torch.zeros(2, in_channels, 2 * size_multiple, 3 * size_multiple)
    dynamic = torch.export.Dim.DYNAMIC
    with _quiet_exporter() as captured:
        try:
            torch.onnx.export(exportable(model), (example,), str(path), dynamo=True, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False,
                              dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))  # fmt: skip
        except Exception as exc:
            log.debug("exporter output:\n%s", captured.getvalue())
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LitsError(f"model.arch={arch}: torch.onnx cannot export this network ({first[:200]})") from None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise LitsError(f"model.arch={arch}: the exported ONNX graph fails onnx.checker ({exc})") from None


def verify(model: torch.nn.Module, path: Path, in_channels: int, size_multiple: int) -> dict:
    """onnxruntime against torch on a seeded batch of another shape than the exported one: the max |logit difference|,
    refused above VERIFY_TOLERANCE."""
    _, onnxruntime, _ = _exporter_modules()
    shape = (3, in_channels, 4 * size_multiple, 5 * size_multiple)
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).float().numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    difference = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    if not difference <= VERIFY_TOLERANCE:
        raise LitsError(
            f"{path.name}: onnxruntime's logits differ from the checkpoint's by {difference:.3g} "
            f"(> {VERIFY_TOLERANCE}) on a verification batch; this network does not export faithfully"
        )
    return {"batch_shape": list(shape), "max_abs_logit_difference": difference}


def _check_output(out_dir: Path, overwrite: bool) -> None:
    existing = [out_dir / name for name in (MODEL_FILE, SPEC_FILE) if (out_dir / name).exists()]
    if existing and not overwrite:
        raise LitsError(f"{existing[0]}: already exists; pass overwrite=true to replace, or choose another output=DIR")
    check_writable_folder(out_dir, "model folder", "choose a writable output=DIR")


def export(cfg) -> dict:
    """The export task (export.py): a checkpoint in, a verified model folder out; its inference.json as a dict."""
    cfg = typed(ExportConfig, cfg)
    out_dir = Path(cfg.output)
    _check_output(out_dir, cfg.overwrite)
    _, _, onnxscript = _exporter_modules()
    state = load_checkpoint(cfg.ckpt)
    model, spec = model_from_state(state, cfg.ckpt, torch.device("cpu"))
    network = spec.network
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lits-export-") as scratch:
        staged = Path(scratch) / MODEL_FILE
        export_network(model, network.in_channels, network.size_multiple, staged, network.arch)
        verified = verify(model, staged, network.in_channels, network.size_multiple)
        info = {
            **spec.to_dict(),
            "model_format": MODEL_FORMAT,
            "model_file": MODEL_FILE,
            "sha256": sha256_of(staged),
            "opset": OPSET,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}, "
            f"onnxscript {onnxscript.__version__}",
            "input": {
                "name": INPUT_NAME,
                "shape": ["N", network.in_channels, "H", "W"],
                "dtype": "float32",
                "size_multiple": network.size_multiple,
            },  # fmt: skip
            "output": {"name": OUTPUT_NAME, "shape": ["N", 2, "H", "W"], "meaning": "logits: liver, tumour"},
            "tuned_with_tta": tuned_tta(state),
            "verified": verified,
            "source": {
                "checkpoint": str(Path(cfg.ckpt).resolve()),
                "epoch": checkpoint_epoch(state),
                "sha256": sha256_of(cfg.ckpt),
            },  # fmt: skip
            "lits_version": lits.__version__,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / MODEL_FILE) as tmp:
            shutil.copyfile(staged, tmp)
    write_json(out_dir / SPEC_FILE, info)  # last: the folder is valid once its checksum is there
    seconds = time.perf_counter() - started
    size_mb = (out_dir / MODEL_FILE).stat().st_size / 1e6
    print(f"exported {network.arch} ({size_mb:.1f} MB, opset {OPSET}, verified: max |logit difference| "
          f"{verified['max_abs_logit_difference']:.1e}) to {out_dir} in {seconds:.0f} s")  # fmt: skip
    print(f"predict without torch: python predict.py model={out_dir} input=FILE_OR_DIR output=DIR")
    return info
