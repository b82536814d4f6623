"""export.py and predict.py model=DIR: a checkpoint exported to ONNX segments CTs with onnxruntime, without importing
torch, into label maps identical to the checkpoint's; a damaged or foreign model folder is refused in one line."""

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, compose, make_checkpoint, one_line_error, run_cli, run_python, write_phantom_tree

import lits.infer.predict
from lits.core.config import PostprocessConfig
from lits.core.errors import LitsError
from lits.data.nifti import CasePaths, open_pair
from lits.data.preprocess import preprocess_pair
from lits.infer import batches, predictor
from lits.infer.checkpoint import load_checkpoint, load_model, save_checkpoint
from lits.infer.onnx_export import export
from lits.infer.onnx_network import MODEL_FILE, SPEC_FILE, open_model_folder
from lits.infer.spec import InferenceSpec

pytest.importorskip("onnxruntime", reason='the onnx extra: pip install -e ".[onnx]"')

NETWORKS = {  # the four networks of configs/model/, at the smoke sizes of conftest.make_checkpoint
    "unet_small": (),
    "unet": ("model=unet",),
    "resunet34": ("model=resunet34",),
    "dynunet": ("model=dynunet",),
}
TUNED = dict(hysteresis=True, hysteresis_low=0.35, hysteresis_high=0.6, keep_confident=0.7, min_tumor_voxels=4,
             fill_liver_holes=True)  # fmt: skip


def spread_outputs(ckpt: Path, root: Path, spread: float = 6.0) -> None:
    """Rescale the seeded network's output layer so that its logits on phantom case 0 have median 0 and sd `spread`
    per head, and store it back: its probabilities then run from 0 to 1 with the input's structure and both heads
    cross the threshold, as a trained network's do (an untrained one sits at its prior, where float rounding alone
    would decide every voxel)."""
    state = load_checkpoint(ckpt)
    model, spec, _ = load_model(ckpt, torch.device("cpu"))
    image = preprocess_pair(open_pair(CasePaths("0", root / "volume-0.nii.gz", None)), spec.preprocessing)
    logits = torch.logit(torch.from_numpy(predictor.predict_volume(model, image, torch.device("cpu"),
                                                                   **spec.predictor_settings())), eps=1e-7)  # fmt: skip
    flat = logits.reshape(2, -1)
    scale = spread / flat.std(dim=1)
    shift = -flat.median(dim=1).values * scale
    heads = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
             and m.out_channels == 2]  # fmt: skip
    with torch.no_grad():
        for head in heads:  # logits -> scale * logits + shift, per output channel
            out_dim = 1 if isinstance(head, torch.nn.ConvTranspose2d) else 0
            shape = [1] * head.weight.dim()
            shape[out_dim] = 2
            head.weight.mul_(scale.reshape(shape))
            head.bias.mul_(scale).add_(shift)
    state["model"] = model.state_dict()
    save_checkpoint(state, ckpt)


def tune(ckpt: Path) -> None:
    """Store tuned post-processing and calibration in the checkpoint, as evaluate.py tune=true does."""
    state = load_checkpoint(ckpt)
    spec = InferenceSpec.from_dict(state["inference"], str(ckpt))
    post = PostprocessConfig.from_mapping({**dataclasses.asdict(spec.postprocess), **TUNED})
    state["inference"] = spec.tuned(post, (1.2, 0.8)).to_dict()
    state["tuning"] = {"tta": True}
    save_checkpoint(state, ckpt)


def export_cfg(tmp_path, *overrides):
    return compose("export", *overrides, f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}")


def predict_cfg(tmp_path, *overrides):
    paths = (f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}")
    return compose("predict", *overrides, "progress=false", *paths)


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def exported(request, tmp_path_factory):
    """(work folder, phantom tree, seeded and tuned checkpoint with mirror TTA, its exported model folder)."""
    tmp = tmp_path_factory.mktemp(f"onnx-{request.param}")
    root = write_phantom_tree(tmp / "lits", cases=(0, 1))
    mirror = ("augment.p_mirror_x=0.5", "augment.p_mirror_y=0.5")
    ckpt = make_checkpoint(tmp, root, test_ids=("0", "1"), overrides=(*NETWORKS[request.param], *mirror))
    spread_outputs(ckpt, root)
    tune(ckpt)
    export(export_cfg(tmp, f"ckpt={ckpt}", f"output={tmp}/model"))
    return tmp, root, ckpt, tmp / "model"


@pytest.mark.slow
@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_match_the_checkpoint(exported, tta):
    _, root, ckpt, folder = exported
    model, spec, _ = load_model(ckpt, torch.device("cpu"))
    network, folder_spec, tuned_tta = open_model_folder(folder, "cpu", "auto")
    assert folder_spec == spec and tuned_tta is True and spec.averages(True)  # tuned, mirror-trained
    image = preprocess_pair(open_pair(CasePaths("0", root / "volume-0.nii.gz", None)), spec.preprocessing)
    settings = dict(flips=spec.views(tta), batch_size=5, **spec.predictor_settings())
    expected = predictor.predict_volume(model, image, torch.device("cpu"), **settings)
    got = batches.predict_volume(network, image, **settings)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert expected.min() < 0.1 and expected.max() > 0.9  # a trained network's spread, not a prior's plateau


@pytest.mark.slow
@pytest.mark.parametrize("tta", ["false", "true"])
def test_label_maps_identical_voxel_for_voxel(exported, tta, tmp_path):
    work, root, ckpt, folder = exported
    outputs = {}
    for source, arg in (("torch", f"ckpt={ckpt}"), ("onnx", f"model_dir={folder}")):
        out = tmp_path / source
        lits.infer.predict.predict(predict_cfg(work, arg, f"input={root}", f"output={out}", f"tta={tta}"))
        outputs[source] = {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("*.nii.gz"))}
    assert sorted(outputs["onnx"]) == sorted(outputs["torch"]) == ["test-segmentation-0.nii.gz",
                                                                   "test-segmentation-1.nii.gz"]  # fmt: skip
    for name, labels in outputs["torch"].items():
        assert np.count_nonzero(outputs["onnx"][name] != labels) == 0, name
    found = np.concatenate([labels.ravel() for labels in outputs["torch"].values()])
    assert {1, 2} <= set(np.unique(found))  # liver and tumour predicted: the comparison is not of empty maps


@pytest.mark.slow
def test_predict_with_a_model_folder_imports_no_torch(small_folder, tmp_path):
    work, root, _, folder = small_folder
    result = run_python("-X", "importtime", str(REPO / "predict.py"), f"model={folder}", f"input={root}",
                        f"output={tmp_path}/out", "progress=false", cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time")]
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines]
    assert "nibabel" in imported and "onnxruntime" in imported  # the list is the real one
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]
    assert (tmp_path / "out/test-segmentation-0.nii.gz").is_file()


# ---------------------------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """An exported unet_small (untrained) and its phantom tree."""
    tmp = tmp_path_factory.mktemp("onnx-refusals")
    root = write_phantom_tree(tmp / "lits", cases=(0,))
    ckpt = make_checkpoint(tmp, root, test_ids=("0",))
    export(export_cfg(tmp, f"ckpt={ckpt}", f"output={tmp}/model"))
    return tmp, root, ckpt, tmp / "model"


def damaged_copy(folder: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    edit(copy)
    return copy


def flip_a_byte(folder: Path) -> None:
    raw = bytearray((folder / MODEL_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / MODEL_FILE).write_bytes(bytes(raw))


def edit_json(key, value):
    def edit(folder: Path) -> None:
        info = json.loads((folder / SPEC_FILE).read_text())
        info[key] = value
        (folder / SPEC_FILE).write_text(json.dumps(info))

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (flip_a_byte, "does not match inference.json"),
        (edit_json("version", 99), "inference spec version 99 is not one this lits reads"),
        (edit_json("model_format", 7), "model_format 7 is not the one this lits reads"),
        (lambda folder: (folder / SPEC_FILE).unlink(), "not a model folder"),
    ],
    ids=["checksum", "spec-version", "folder-format", "no-spec"],
)
def test_a_damaged_or_foreign_model_folder_is_refused_and_nothing_written(small_folder, tmp_path, edit, expected):
    work, root, _, folder = small_folder
    copy = damaged_copy(folder, tmp_path, edit)
    cfg = predict_cfg(work, f"model_dir={copy}", f"input={root}", f"output={tmp_path}/out")
    with pytest.raises(LitsError, match=expected):
        lits.infer.predict.predict(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_command_line_refusals_are_one_line(small_folder, tmp_path):
    work, root, ckpt, folder = small_folder
    cases = {
        ("predict.py", f"model={folder}", f"ckpt={ckpt}"): "pass one of them, not both",
        ("predict.py",): "ckpt or model is required",
        ("predict.py", f"model={folder}", "amp=fp16"): "an exported model runs in float32",
        ("export.py", f"ckpt={ckpt}", f"output={folder}"): "already exists; pass overwrite=true",
    }
    for (script, *args), expected in cases.items():
        io = () if script == "export.py" else (f"input={root}", f"output={tmp_path}/out")
        result = run_cli(script, *args, *io, cwd=work)
        assert result.returncode == 2 and expected in one_line_error(result), (args, result.stderr[-500:])
        assert not (tmp_path / "out").exists()


def test_export_without_the_onnx_extra_says_how_to_install(small_folder, tmp_path, monkeypatch):
    work, _, ckpt, _ = small_folder
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(LitsError, match=r'onnxscript, which is not installed; pip install "lits\[onnx\]"'):
        export(export_cfg(work, f"ckpt={ckpt}", f"output={tmp_path}/model"))
    assert not (tmp_path / "model").exists()


def test_inference_json_is_the_spec_plus_the_checksum(small_folder):
    _, _, ckpt, folder = small_folder
    info = json.loads((folder / SPEC_FILE).read_text())
    state = load_checkpoint(ckpt)
    spec = json.loads(json.dumps(state["inference"]))  # tuples as JSON has them
    assert {k: info[k] for k in spec} == spec  # the checkpoint's spec, as it is
    assert info["sha256"] == hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
    assert info["opset"] == 18 and info["verified"]["max_abs_logit_difference"] < 1e-3
    assert info["tuned_with_tta"] is None  # untuned checkpoint
