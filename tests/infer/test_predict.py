"""predict.py: new CTs (no labels) from a checkpoint alone, on a file and on a folder; non-CT input refused
in one line; flip TTA; the same label maps evaluate.py exports."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import (
    LPS,
    PHANTOM_AFFINE,
    PHANTOM_SHAPE,
    ablation_phantom,
    compose,
    evaluate_cfg,
    make_checkpoint,
    one_line_error,
    read_csv_rows,
    run_cli,
    truncate,
    write_huge_header,
    write_nifti,
    write_phantom_tree,
)

import lits.evaluate.scoring
import lits.infer.predict
from lits.core.errors import LitsError
from lits.infer.predictor import predict_volume


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    root = write_phantom_tree(tmp / "lits", cases=(0, 1))
    return tmp, root, make_checkpoint(tmp, root, test_ids=("0", "1"))


def predict_cfg(tmp_path, *overrides):
    return compose(
        "predict", *overrides, "progress=false", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run"
    )


def test_predict_a_file(setup, tmp_path, capsys):
    _, root, ckpt = setup
    lits.infer.predict.predict(
        predict_cfg(
            tmp_path,
            f"ckpt={ckpt}",
            f"input={root}/volume-0.nii.gz",
            f"output={tmp_path}/out",
            "tta=true",
            "save_probabilities=true",
        )
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".lits-predict.json",
        "predictions.csv",
        "test-segmentation-0.nii.gz",  # compressed unless naming=lits asks for the submission's .nii
        "test-segmentation-0_probabilities.nii.gz",
    ]
    seg, ct = nib.load(tmp_path / "out/test-segmentation-0.nii.gz"), nib.load(root / "volume-0.nii.gz")
    assert seg.shape == ct.shape == PHANTOM_SHAPE and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, ct.affine, atol=1e-6)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
    assert nib.load(tmp_path / "out/test-segmentation-0_probabilities.nii.gz").shape == (*PHANTOM_SHAPE, 2)
    rows = read_csv_rows(tmp_path / "out/predictions.csv")  # beside the label maps
    assert [r["output"].endswith("test-segmentation-0.nii.gz") for r in rows] == [True]
    out = capsys.readouterr().out
    assert "tumor_ml" in out and out.splitlines()[-1] == (
        f"wrote 1 label map (0 background, 1 liver, 2 tumour) and predictions.csv to {tmp_path}/out"
    )


@pytest.mark.slow
def test_predict_a_folder_from_the_command_line(setup, tmp_path):
    _, root, ckpt = setup
    folder = tmp_path / "cts"
    folder.mkdir()
    vol, seg = ablation_phantom()
    write_nifti(folder / "volume-4.nii.gz", vol, PHANTOM_AFFINE)
    write_nifti(folder / "patient_b.nii", vol[:, :20], LPS)  # other size and grid
    write_nifti(folder / "segmentation-4.nii.gz", seg, PHANTOM_AFFINE)  # a label file: skipped
    (folder / "README.txt").write_text("not a CT")
    result = run_cli("predict.py", f"ckpt={ckpt}", f"input={folder}", "output=out", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".lits-predict.json",  # the model and settings they were made with: a rerun continues
        "patient_b.nii.gz",
        "predictions.csv",
        "test-segmentation-4.nii.gz",
    ]
    assert nib.load(tmp_path / "out/patient_b.nii.gz").shape == (40, 20, 12)
    np.testing.assert_allclose(nib.load(tmp_path / "out/patient_b.nii.gz").affine, LPS)
    assert len(read_csv_rows(tmp_path / "out/predictions.csv")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cts", "out"]  # no run folder, no log elsewhere
    # the same run again has nothing left to do; a run with other settings is refused, changes nothing ...
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    again = run_cli("predict.py", f"ckpt={ckpt}", f"input={folder}", "output=out", cwd=tmp_path, timeout=300)
    assert "wrote 2 label maps (2 of them by an earlier run of the same model and settings)" in again.stdout
    again = run_cli("predict.py", f"ckpt={ckpt}", f"input={folder}", "output=out", "postprocess.threshold=0.6",
                    cwd=tmp_path, timeout=300)  # fmt: skip
    assert "out/patient_b.nii.gz: already exists (and 2 more" in one_line_error(again)
    assert "made with another model or settings" in one_line_error(again)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cts", "out"]
    # ... unless overwrite=true; naming=lits writes the LiTS submission's uncompressed names
    again = run_cli("predict.py", f"ckpt={ckpt}", f"input={folder / 'volume-4.nii.gz'}", "output=out",
                    "overwrite=true", "naming=lits", cwd=tmp_path, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "out/test-segmentation-4.nii").is_file()
    rows = read_csv_rows(tmp_path / "out/predictions.csv")
    assert [r["output"] for r in rows] == [str(tmp_path / "out/test-segmentation-4.nii")]  # absolute paths
    assert rows[0]["input"] == str(folder / "volume-4.nii.gz") and len(rows[0]["liver_ml"].partition(".")[2]) <= 2


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(path, data, np.eye(4))
    return path


def make_input(kind, folder):
    """A bad input of the given kind under `folder`; returns what to pass as input=."""
    folder.mkdir()
    if kind == "dicom":
        (folder / "ct.dcm").write_bytes(b"DICM")
        return folder / "ct.dcm"
    if kind == "missing":
        return folder / "missing.nii.gz"
    if kind == "empty":
        return folder
    if kind == "no_nifti":
        (folder / "a.txt").write_text("x")
        return folder
    if kind == "4d":
        return _write(folder / "ct4d.nii.gz", np.zeros((8, 8, 4, 3), np.int16))
    if kind == "2d":
        return _write(folder / "slice.nii", np.zeros((8, 8), np.int16))
    if kind == "corrupt":
        (folder / "bad.nii").write_bytes(b"garbage" * 10)
        return folder / "bad.nii"
    if kind == "same_output":  # both would become test-segmentation-3.nii
        _write(folder / "volume-3.nii", np.zeros((8, 8, 4), np.int16))
        _write(folder / "test-volume-3.nii.gz", np.zeros((8, 8, 4), np.int16))
        return folder
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("dicom", "ct.dcm: not a NIfTI file"),
        ("missing", "missing.nii.gz: input not found"),
        ("empty", "in: empty folder"),
        ("no_nifti", r"no CT volumes \(.nii / .nii.gz\) among its 1 entries"),
        ("4d", r"ct4d.nii.gz: expected a 3D CT volume, got shape \(8, 8, 4, 3\)"),
        ("2d", r"slice.nii: expected a 3D CT volume, got shape \(8, 8\)"),
        ("corrupt", "bad.nii: cannot read NIfTI"),
        ("same_output", "would overwrite the one of"),
    ],
)
def test_non_ct_input_is_refused_before_anything_is_written(setup, tmp_path, kind, message):
    _, _, ckpt = setup
    target = make_input(kind, tmp_path / "in")
    with pytest.raises(LitsError, match=message):
        lits.infer.predict.predict(predict_cfg(tmp_path, f"ckpt={ckpt}", f"input={target}", f"output={tmp_path}/out"))
    assert not (tmp_path / "out").exists()


def test_output_may_not_overwrite_the_input(setup):
    tmp, root, ckpt = setup
    with pytest.raises(LitsError, match="would overwrite this CT"):
        lits.infer.predict.predict(
            predict_cfg(tmp, f"ckpt={ckpt}", f"input={root}/volume-0.nii.gz", f"output={root}", "naming=input")
        )


@pytest.mark.slow
def test_cli_error_is_one_line(setup, tmp_path):
    _, _, ckpt = setup
    _write(tmp_path / "ct4d.nii.gz", np.zeros((8, 8, 4, 3), np.int16))
    line = one_line_error(
        run_cli("predict.py", f"ckpt={ckpt}", "input=ct4d.nii.gz", "output=out", cwd=tmp_path, timeout=300)
    )
    assert "ct4d.nii.gz: expected a 3D CT volume" in line
    assert [p.name for p in tmp_path.iterdir()] == ["ct4d.nii.gz"]  # a refused run leaves no folder behind


def test_predict_requires_ckpt_or_model_input_and_output(tmp_path):
    from omegaconf import OmegaConf

    from lits.core.config import PredictConfig, typed

    cfg = predict_cfg(tmp_path)
    assert all(OmegaConf.is_missing(cfg, key) for key in ("input", "output"))
    with pytest.raises(LitsError, match=r"ckpt or model is required: pass ckpt=PATH \(a checkpoint\) or model=DIR"):
        typed(PredictConfig, predict_cfg(tmp_path, "input=a.nii", "output=out"))


@pytest.mark.parametrize("spacing", [None, "[1.4,1.6]"])
def test_predict_matches_what_evaluate_exports(tmp_path, spacing):
    # same checkpoint (untrained, output prior 0.5: masks follow the input), same case: predict.py preprocesses
    # the CT itself, evaluate.py reads the preprocessing cache; the label maps must be identical, also when the
    # model was trained on an in-plane resampled grid
    root = write_phantom_tree(tmp_path / "lits", cases=(1,))
    extra = [f"data.target_spacing_xy={spacing}"] if spacing else []
    ckpt = make_checkpoint(tmp_path, root, test_ids=("1",), overrides=extra)
    lits.infer.predict.predict(
        predict_cfg(tmp_path, f"ckpt={ckpt}", f"input={root}/volume-1.nii.gz", f"output={tmp_path}/pred")
    )
    lits.evaluate.scoring.evaluate(
        evaluate_cfg(
            tmp_path,
            f"ckpt={ckpt}",
            "save_predictions=true",
            "ablation=false",
            "report.montages=false",
            "report.plot=false",
            "tensorboard_dir=null",
        )
    )
    ours = np.asarray(nib.load(tmp_path / "pred/test-segmentation-1.nii.gz").dataobj)
    theirs = np.asarray(nib.load(tmp_path / "eval/predictions/test-segmentation-1.nii").dataobj)
    assert ours.shape == PHANTOM_SHAPE and 0 < np.count_nonzero(ours) < ours.size  # not a trivial mask
    np.testing.assert_array_equal(ours, theirs)
    assert json.loads((tmp_path / "eval/metrics.json").read_text())["tta"] is False


@pytest.mark.parametrize("context", [0, 1])
def test_tta_is_the_mean_of_identity_and_flips(context):
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    model = UNet(
        spatial_dims=2, in_channels=2 * context + 1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0
    )
    image = np.random.default_rng(0).random((5, 13, 10)).astype(np.float16)  # odd sizes: padding must not shift flips
    args = dict(device=torch.device("cpu"), batch_size=2, size_multiple=4, context_slices=context)
    plain = predict_volume(model, image, **args)
    manual = [plain]
    for axis in (-1, -2):  # predict the flipped CT, flip the answer back
        flipped = np.ascontiguousarray(np.flip(image, axis))
        manual.append(np.flip(predict_volume(model, flipped, **args), axis))
    tta = predict_volume(model, image, flips=((), (3,), (2,)), **args)
    np.testing.assert_allclose(tta, np.mean(manual, axis=0), atol=1e-6)
    assert np.abs(tta - plain).max() > 1e-4  # the network is not flip-invariant: TTA changed something
    only_x = predict_volume(model, image, flips=((), (3,)), **args)
    np.testing.assert_allclose(only_x, np.mean(manual[:2], axis=0), atol=1e-6)
    assert plain.shape == (2, 5, 13, 10) and plain.dtype == np.float32


def broken_folder(folder):
    """Five CTs: volume-4 good, volume-5 truncated (its header still reads), volume-6 not NIfTI at all, volume-7 stored
    as HU + 1024 in uint16 without a rescale intercept, volume-8 a header claiming 3000^3 voxels."""
    folder.mkdir()
    vol, _ = ablation_phantom()
    write_nifti(folder / "volume-4.nii.gz", vol, PHANTOM_AFFINE)
    write_nifti(folder / "volume-5.nii.gz", vol, PHANTOM_AFFINE)
    truncate(folder / "volume-5.nii.gz")
    (folder / "volume-6.nii").write_bytes(b"garbage" * 100)
    write_nifti(folder / "volume-7.nii.gz", (vol.astype(np.int32) + 1024).astype(np.uint16), PHANTOM_AFFINE)
    write_huge_header(folder / "volume-8.nii.gz")  # claims 54 GB: refused from its header, never allocated
    return folder


def test_a_broken_volume_stops_the_folder_unless_skipped(setup, tmp_path):
    _, _, ckpt = setup
    folder = broken_folder(tmp_path / "cts")
    with pytest.raises(LitsError, match=r"volume-6.nii: cannot read NIfTI .*; or on_error=skip to predict the other"):
        lits.infer.predict.predict(predict_cfg(tmp_path, f"ckpt={ckpt}", f"input={folder}", f"output={tmp_path}/out"))
    assert not (tmp_path / "out").exists()

    result = lits.infer.predict.predict(
        predict_cfg(tmp_path, f"ckpt={ckpt}", f"input={folder}", f"output={tmp_path}/out", "on_error=skip")
    )
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [".lits-predict.json", "predictions.csv", "skipped_inputs.json", "test-segmentation-4.nii.gz"]
    assert [Path(r["input"]).name for r in read_csv_rows(tmp_path / "out/predictions.csv")] == ["volume-4.nii.gz"]
    listed = json.loads((tmp_path / "out/skipped_inputs.json").read_text())
    reasons = {Path(r["input"]).name: r["reason"] for r in listed}
    assert sorted(reasons) == ["volume-5.nii.gz", "volume-6.nii", "volume-7.nii.gz", "volume-8.nii.gz"]
    assert sorted(result["skipped"]) == sorted(str(folder / name) for name in reasons)
    assert "cannot read NIfTI" in reasons["volume-5.nii.gz"] and "cannot read NIfTI" in reasons["volume-6.nii"]
    assert "looks like HU + 1024 stored without its rescale intercept" in reasons["volume-7.nii.gz"]
    assert "header claims 3000 x 3000 x 3000 voxels (54 GB)" in reasons["volume-8.nii.gz"]


def test_a_mis_scaled_ct_is_refused_naming_the_file(setup, tmp_path):
    _, _, ckpt = setup
    folder = broken_folder(tmp_path / "cts")
    with pytest.raises(LitsError, match=r"volume-7.nii.gz: looks like HU \+ 1024 .*scl_inter=-1024"):
        lits.infer.predict.predict(
            predict_cfg(tmp_path, f"ckpt={ckpt}", f"input={folder}/volume-7.nii.gz", f"output={tmp_path}/out")
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spacing, hysteresis", [(None, False), ("[1.4,1.6]", True)])
def test_streamed_prediction_equals_the_whole_volume_path(tmp_path, monkeypatch, spacing, hysteresis):
    # predict.py streams: the CT windowed slab by slab into float16, the network's probabilities thresholded batch by
    # batch into masks (resampled back first); the whole-volume path holds float32 volumes. Same numbers, same labels.
    import dataclasses

    import lits.data.nifti
    from lits.data.nifti import CasePaths, load_case, open_pair
    from lits.data.preprocess import preprocess_image, preprocess_pair
    from lits.data.resample import resize_inplane
    from lits.infer.checkpoint import load_model
    from lits.infer.postprocess import count_lesions, postprocess, postprocess_masks, predicted_lesions
    from lits.infer.predictor import predict_masks

    monkeypatch.setattr(lits.data.nifti, "CHUNK_SLICES", 5)  # several slabs even on a small phantom
    root = write_phantom_tree(tmp_path / "lits", cases=(0,))
    extra = [f"data.target_spacing_xy={spacing}"] if spacing else []
    cpu = torch.device("cpu")
    model, spec, _ = load_model(make_checkpoint(tmp_path, root, test_ids=("0",), overrides=extra), cpu)
    post = dataclasses.replace(spec.postprocess, hysteresis=hysteresis, hysteresis_low=0.5, hysteresis_high=0.52)
    paths = CasePaths("0", root / "volume-0.nii.gz", None)
    settings = dict(batch_size=3, **spec.predictor_settings())

    case = load_case(paths)  # the whole-volume path
    image = preprocess_image(case.image, case.spacing, spec.preprocessing).astype(np.float16)
    probs = resize_inplane(predict_volume(model, image, cpu, **settings), case.image.shape[1:], order=1)
    expected = postprocess(probs[0], probs[1], post)

    streamed = preprocess_pair(open_pair(paths), spec.preprocessing)
    assert streamed.dtype == np.float16 and np.array_equal(streamed, image)
    assert (streamed.shape != case.image.shape) == (spacing is not None)  # the network's grid was resampled
    masks = predict_masks(
        model,
        streamed,
        cpu,
        post.threshold,
        case.image.shape[1:],
        tumor_probability=True,
        probabilities=True,
        **settings,
    )
    np.testing.assert_array_equal(masks.probabilities, probs)
    np.testing.assert_array_equal(masks.tumor_probability, probs[1])
    np.testing.assert_array_equal(masks.liver, probs[0] > post.threshold)
    labels = postprocess_masks(masks.liver, masks.tumor, post, masks.tumor_probability)
    np.testing.assert_array_equal(labels, expected)
    tumor = labels == 2
    assert 0 < np.count_nonzero(tumor) < tumor.size and count_lesions(tumor) == predicted_lesions(tumor)[1] > 0


def test_an_interrupted_folder_continues_on_rerun_and_lists_what_finished(setup, tmp_path):
    _, root, ckpt = setup
    folder = tmp_path / "cts"
    folder.mkdir()
    vol, _ = ablation_phantom()
    write_nifti(folder / "volume-4.nii.gz", vol, PHANTOM_AFFINE)
    write_nifti(folder / "volume-5.nii.gz", (vol.astype(np.int32) + 1024).astype(np.uint16), PHANTOM_AFFINE)
    args = (f"ckpt={ckpt}", f"input={folder}", f"output={tmp_path}/out")
    with pytest.raises(LitsError, match="volume-5.nii.gz: looks like HU"):  # stops at the second CT
        lits.infer.predict.predict(predict_cfg(tmp_path, *args))
    rows = read_csv_rows(tmp_path / "out/predictions.csv")  # the finished part is listed
    assert [Path(r["output"]).name for r in rows] == ["test-segmentation-4.nii.gz"]
    first = (tmp_path / "out/test-segmentation-4.nii.gz").stat().st_mtime_ns
    write_nifti(folder / "volume-5.nii.gz", vol, PHANTOM_AFFINE)  # the user fixes the CT and reruns
    result = lits.infer.predict.predict(predict_cfg(tmp_path, *args))
    assert (tmp_path / "out/test-segmentation-4.nii.gz").stat().st_mtime_ns == first  # not predicted again
    assert [Path(r["output"]).name for r in result["rows"]] == [
        "test-segmentation-4.nii.gz",
        "test-segmentation-5.nii.gz",
    ]
    assert len(read_csv_rows(tmp_path / "out/predictions.csv")) == 2
