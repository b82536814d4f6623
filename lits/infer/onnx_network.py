"""An exported model folder (export.py) and its network on onnxruntime: what `predict.py model=DIR` runs, without
torch.

A model folder holds two files:

    model.onnx       the network alone: input `image` (N, C, H, W) float32, output `logits` (N, 2, H, W); N, H and W
                     dynamic, H and W multiples of the network's size multiple (the predictor pads to it)
    inference.json   the checkpoint's inference spec (lits/infer/spec.py, with its version) plus `model_format`,
                     the sha256 of model.onnx, the opset and exporter, whether the post-processing was tuned on flip
                     TTA, and where it came from

Everything around the network (reading, windowing, resampling, batching, TTA, calibration, post-processing, NIfTI
writing) is the same code as for a checkpoint (lits/infer/batches.py, lits/infer/predict.py): only the forward pass
runs in onnxruntime. A folder whose model.onnx does not match its checksum, or whose spec or folder format this lits
does not read, is refused in one line before anything is predicted or written.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
from scipy.special import expit

from lits.core.errors import LitsError
from lits.core.files import sha256_of
from lits.infer.spec import InferenceSpec

MODEL_FILE = "model.onnx"
SPEC_FILE = "inference.json"
MODEL_FORMAT = 1  # the folder's layout and inference.json's keys beside the spec; bumped when they change
INPUT_NAME, OUTPUT_NAME = "image", "logits"
INSTALL_HINT = 'pip install "lits[onnx]"'
FOLDER_KEYS = ("sha256", "tuned_with_tta")  # what inference.json holds beside the spec and model_format, read here


class OnnxNetwork:
    """An onnxruntime session as a `lits.infer.batches.SliceNetwork`: numpy batches in, float32 numpy logits out."""

    def __init__(self, session):
        self.session = session

    def inference(self):
        return contextlib.nullcontext()

    def to_batch(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float32)

    def flip(self, x: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
        return np.flip(x, dims)

    def pad(self, x: np.ndarray, pad_y: int, pad_x: int) -> np.ndarray:
        if not (pad_y or pad_x):
            return x
        return np.pad(x, ((0, 0), (0, 0), (0, pad_y), (0, pad_x)))

    def logits(self, x: np.ndarray) -> np.ndarray:
        feed = {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}
        return self.session.run([OUTPUT_NAME], feed)[0]

    def sigmoid(self, logits: np.ndarray, temperatures: np.ndarray | None) -> np.ndarray:
        return expit(logits if temperatures is None else logits / temperatures.reshape(1, 2, 1, 1))

    def to_host(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32).transpose(1, 0, 2, 3)  # already on the host

    def numpy(self, handle: np.ndarray) -> np.ndarray:
        return handle


def read_model_folder(folder: str | Path) -> tuple[InferenceSpec, dict]:
    """(inference spec, the whole inference.json) of a model folder whose model.onnx matches its checksum."""
    folder = Path(folder)
    spec_path, model_path = folder / SPEC_FILE, folder / MODEL_FILE
    if not folder.is_dir() or not spec_path.is_file() or not model_path.is_file():
        raise LitsError(
            f"{folder}: not a model folder ({MODEL_FILE} and {SPEC_FILE}); make one with "
            "python export.py ckpt=PATH output=DIR"
        )
    try:
        info = json.loads(spec_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LitsError(f"{spec_path}: not readable JSON ({type(exc).__name__}); export the model again") from None
    if not isinstance(info, dict) or info.get("model_format") != MODEL_FORMAT:
        found = info.get("model_format") if isinstance(info, dict) else None
        raise LitsError(
            f"{spec_path}: model_format {found} is not the one this lits reads ({MODEL_FORMAT}); export the "
            "checkpoint again with this lits, or use the lits version that exported it"
        )
    missing = [key for key in FOLDER_KEYS if key not in info]
    if missing:
        raise LitsError(f"{spec_path}: no {', '.join(missing)}; the file was edited or damaged: export again")
    actual = sha256_of(model_path)
    if actual != info["sha256"]:
        raise LitsError(
            f"{model_path}: its sha256 {actual[:12]}... does not match {SPEC_FILE} ({str(info['sha256'])[:12]}...); "
            "the file was changed or damaged: copy the folder again, or export again"
        )
    try:
        spec = InferenceSpec.from_dict(info, str(spec_path))
    except LitsError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise LitsError(f"{spec_path}: incomplete inference spec ({type(exc).__name__}: {exc}); export again") from None
    return spec, info


def onnx_providers(device: str) -> list:
    """onnxruntime execution providers for a device setting: auto (CUDA when this onnxruntime has it, else CPU) |
    cpu | cuda | cuda:N."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu" or (device == "auto" and "CUDAExecutionProvider" not in available):
        return ["CPUExecutionProvider"]
    if device != "auto" and not device.startswith("cuda"):
        raise LitsError(f"device={device}: choose auto, cpu, cuda or cuda:N")
    if "CUDAExecutionProvider" not in available:
        raise LitsError(
            f"device={device} but this onnxruntime has no CUDA provider ({', '.join(available)}); use device=cpu, "
            "or install onnxruntime-gpu"
        )
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def open_model_folder(folder: str | Path, device: str, amp: str) -> tuple[OnnxNetwork, InferenceSpec, bool | None]:
    """(network on onnxruntime, inference spec, whether its post-processing was tuned on flip TTA) of a model folder.

    The exported network computes in float32: amp=fp16 / bf16 apply to checkpoints only and are refused here."""
    if amp not in ("auto", "off"):
        raise LitsError(f"amp={amp}: an exported model runs in float32 on onnxruntime; pass amp=auto (or off)")
    try:
        import onnxruntime
    except ImportError:
        raise LitsError(f"model={folder}: onnxruntime is not installed; {INSTALL_HINT}") from None
    spec, info = read_model_folder(folder)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are not the user's concern
    # no memory arena: on a 512 x 512 x 300 CT peak RSS 921 MB instead of 1520 MB, for 21.0 s instead of 18.8 s
    options.enable_cpu_mem_arena = False
    try:
        session = onnxruntime.InferenceSession(
            str(Path(folder) / MODEL_FILE), options, providers=onnx_providers(device)
        )
    except LitsError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LitsError(f"{Path(folder) / MODEL_FILE}: onnxruntime cannot load it ({first}); export again") from None
    tuned = info["tuned_with_tta"]
    return OnnxNetwork(session), spec, None if tuned is None else bool(tuned)
