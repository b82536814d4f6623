"""Shared test toolbox: Hydra composition, the smoke training, the entry-point runner and tiny NIfTI phantoms.

    pytest -m "not slow"   quick inner loop: skips subprocess and end-to-end trainings, evaluations and predictions
    pytest                 everything, as CI runs it

The smoke training is spelled out here only (SMOKE, SMOKE_SIZES, train_args, train_config), so that a change of the
config layout touches this file alone.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lits.core.compose import compose_raw
from lits.core.config.store import register
from lits.core.errors import LitsError
from lits.data.cache import CachedCase, cache_cases
from lits.data.nifti import CasePaths
from lits.data.preprocess import Preprocessing
from lits.data.sources import find_lits

REPO = Path(__file__).resolve().parents[1]
register()  # the typed schema, as the entry points register it before composing

# ---------------------------------------------------------------------------------------------- configs


def compose(config_name: str, *overrides: str):
    """configs/<config_name>.yaml with overrides, as the tools compose it (lits.core.compose: no Hydra runtime, so
    callers that resolve paths give paths.root_dir / paths.output_dir themselves; else they are the cwd)."""
    return compose_raw(config_name, overrides)


# placeholder paths for configs whose values are only read, never used to write anything
PLACEHOLDER_PATHS = ("paths.root_dir=/tmp/lits-root", "paths.output_dir=/tmp/lits-root/out")


def compose_train(*overrides: str):
    """The training config for tests that read its values (paths pinned to a placeholder root)."""
    return compose("train", *overrides, *PLACEHOLDER_PATHS)


# The smoke training: tiny synthetic data, a small network and two epochs, seconds on a CPU (configs/debug/smoke.yaml);
# FAULTS: the same with fault injection switched on (faults.nan_steps, faults.kill_at_step, ...:
# configs/debug/faults.yaml)
SMOKE = ("debug=smoke",)
FAULTS = ("debug=faults",)
# The same settings as plain overrides, for sweeps that choose the experiment themselves (train.py -m experiment=a,b)
SMOKE_SIZES = (
    "data.crop_size=64",
    "data.num_workers=0",
    "data.split.val=0.2",
    "data.split.test=0.2",
    "data.sampling.samples_per_epoch=32",
    "data.synthetic.num_cases=5",
    "data.synthetic.size=96",
    "data.synthetic.num_slices=[20,28]",
    "model.channels=[8,16,32]",
    "model.strides=[2,2]",
    "model.num_res_units=1",
    "trainer.max_epochs=2",
    "trainer.batch_size=4",
    "loss.schedule.bce_epochs=1",
    "loss.schedule.dice_epoch=2",
)
QUIET_TRAINING = ("trainer.progress=false", "trainer.log_images=false")  # no progress bars, no TensorBoard images


def train_args(run: str, *overrides: str, debug: tuple[str, ...] = SMOKE) -> list[str]:
    """train.py's command line for the smoke training of run `run` (in outputs/<run> of the working folder);
    debug=FAULTS for runs that inject faults."""
    return [*debug, *QUIET_TRAINING, *overrides, f"hydra.run.dir=outputs/{run}"]


def train_config(work, run: str, *overrides: str, debug: tuple[str, ...] = SMOKE):
    """The config of `train.py *train_args(run, *overrides)` run from `work`, composed in this process (paths
    pinned: no Hydra runtime here)."""
    paths = (f"paths.root_dir={work}", f"paths.output_dir={work}/outputs/{run}")
    return compose("train", *debug, *QUIET_TRAINING, *overrides, *paths)


# ---------------------------------------------------------------------------------------------- subprocesses


def run_python(*args, cwd, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python args...` in a child process (this interpreter), output captured as text; env None: inherited."""
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def run_cli(script: str, *args, cwd, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """A script of the repository (train.py, scripts/compare_runs.py, ...) run as a user would, from `cwd`."""
    return run_python(REPO / script, *args, cwd=cwd, timeout=timeout, env=env)


def run_module(module: str, *args, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m module args...` from `cwd`, the checkout on PYTHONPATH (benchmarks/ and studies/ run from it)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return run_python("-m", module, *args, cwd=cwd, timeout=timeout, env=env)


def read_csv_rows(path) -> list[dict]:
    """A CSV report (cases.csv, predictions.csv, ...) as one dict per row."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_line_error(result):
    """The entry points' contract for bad input: exit 2 and exactly one `error: ...` line on stderr."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------- NIfTI phantoms

LPS = np.diag([-0.8, -0.8, 2.5, 1.0])  # the usual LiTS / DICOM voxel axes
# a non-canonical affine: voxel axes permuted and flipped (i -> -S, j -> +R, k -> -A), with an offset
ODD = np.array([[0, 0.75, 0, -20], [0, 0, -0.9, 30], [-3.0, 0, 0, 40], [0, 0, 0, 1]])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def write_huge_header(path: Path, shape=(3000, 3000, 3000)) -> Path:
    """A NIfTI file whose header claims `shape` int16 voxels (54 GB for 3000^3) but holds 1 kB of them: what a
    corrupt or hostile file looks like to a reader that trusts its header (.nii.gz: a few kB on disk)."""
    import gzip

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_qform(LPS, code=1)
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 1024  # header, no extensions, the first voxels
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def truncate(path: Path) -> None:
    """Cut a file in half, as an interrupted copy leaves it."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def make_case(shape=(40, 36, 12), seed=0, tumor=True):
    """(volume int16 HU, segmentation uint8) in source (X, Y, Z) order: a liver block with an optional tumour."""
    rng = np.random.default_rng(seed)
    seg = np.zeros(shape, np.uint8)
    seg[8:30, 6:28, 2:10] = 1
    if tumor:
        seg[14:20, 12:18, 4:7] = 2
    vol = rng.normal(0, 10, shape) + np.choose(seg, [-50, 120, 60])
    return vol.astype(np.int16), seg


@pytest.fixture
def lits_tree(tmp_path):
    """A folder with three LiTS-layout pairs (one without tumour), non-trivial affine."""
    root = tmp_path / "lits"
    root.mkdir()
    for i in range(3):
        vol, seg = make_case(seed=i, tumor=i != 1)
        write_nifti(root / f"volume-{i}.nii.gz", vol, LPS)
        write_nifti(root / f"segmentation-{i}.nii.gz", seg, LPS)
    return root


def odd_case(seed=0, tumor=True):
    """make_case data re-laid out for the ODD affine (same anatomy, different voxel order)."""
    vol, seg = make_case(seed=seed, tumor=tumor)  # (X, Y, Z)
    return np.ascontiguousarray(np.transpose(vol, (2, 0, 1))), np.ascontiguousarray(np.transpose(seg, (2, 0, 1)))


def write_scaled(path: Path, hu: np.ndarray, affine: np.ndarray) -> Path:
    """Float HU stored as int16 with scl_slope / scl_inter (nibabel picks them to fit the data)."""
    img = nib.Nifti1Image(hu.astype(np.float32), affine)
    img.set_data_dtype(np.int16)
    nib.save(img, str(path))
    assert nib.load(str(path)).dataobj.slope != 1.0
    return path


def make_lits_tree(root: Path, n: int = 6) -> Path:
    """n cases split over 'Training Batch 1/2' like the LiTS download, .nii and .nii.gz. Case 1 is tumour-free,
    case 2 has a non-canonical affine, case 3 int16 with scl_slope/inter, case 4 float32 HU with int16 labels,
    case 5 uint8 voxels with float64 labels."""
    for i in range(n):
        folder = root / f"Training Batch {1 + i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        ext = ".nii" if i % 3 == 0 else ".nii.gz"
        vol, seg = make_case(seed=i, tumor=i != 1)
        affine = LPS
        if i == 2:
            vol, seg = odd_case(seed=i)
            affine = ODD
        if i == 3:
            write_scaled(folder / f"volume-{i}{ext}", vol * 1.37 + 0.3, affine)
        else:
            if i == 4:
                vol, seg = vol.astype(np.float32) + 0.25, seg.astype(np.int16)
            if i == 5:
                vol, seg = np.clip(vol + 60, 0, 255).astype(np.uint8), seg.astype(np.float64)
            write_nifti(folder / f"volume-{i}{ext}", vol, affine)
        write_nifti(folder / f"segmentation-{i}{ext}", seg, affine)
    return root


def make_msd_tree(root: Path, n: int = 4) -> Path:
    """Task03_Liver: imagesTr/liver_N.nii.gz + labelsTr/liver_N.nii.gz, macOS '._' junk, an unlabelled imagesTs."""
    task = root / "Task03_Liver"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        vol, seg = odd_case(seed=i) if i == 1 else make_case(seed=i)
        affine = ODD if i == 1 else LPS
        write_nifti(task / "imagesTr" / f"liver_{i}.nii.gz", vol, affine)
        write_nifti(task / "labelsTr" / f"liver_{i}.nii.gz", seg, affine)
        (task / "imagesTr" / f"._liver_{i}.nii.gz").write_bytes(b"\x00\x05\x16\x07 resource fork")
    write_nifti(task / "imagesTs" / "liver_200.nii.gz", make_case()[0], LPS)
    (task / "dataset.json").write_text("{}")
    return task


def find_lits_pairs(root) -> list[CasePaths]:
    """All `volume-N.nii[.gz]` under root (recursively) with their `segmentation-N.nii[.gz]`; the first problem
    raises."""
    cases, problems = find_lits(root)
    if problems:
        raise LitsError(problems[0].reason)
    return cases


def build_cache(
    cases: list[CasePaths],
    cache_root: str | Path,
    window: tuple[float, float],
    source_root: str | Path,
    progress: bool = True,
    target_spacing_xy=None,
    workers: int = 1,
) -> list[CachedCase]:
    """Preprocess every case not yet cached (or whose source changed) and open them all; the first bad case raises."""
    prep = Preprocessing(window=tuple(window), target_spacing_xy=target_spacing_xy)
    cached, _ = cache_cases(cases, cache_root, prep, source_root, progress, workers, on_error="fail")
    return [cached[c.case_id] for c in cases]


# ------------------------------------------------------------------- post-processing phantoms and checkpoints
# Tiny noise-free cases on a flipped + permuted (non-canonical) grid, for the evaluate and predict tests.

# x -> -z, y -> x, z -> -y (mm): canonical (Z, Y, X) arrays differ from the stored (i, j, k) order
PHANTOM_AFFINE = np.array([[0, 0, -2.5, 10], [0.8, 0, 0, -5], [0, -0.7, 0, 3], [0, 0, 0, 1.0]])
PHANTOM_SHAPE = (40, 36, 12)
# phantom intensities (HU); the evaluate tests' fake model reads probabilities off them
BACKGROUND_HU, LIVER_HU, CORE_HU, RIM_HU, OUTSIDE_TUMOR_HU = -100, 100, 40, 20, -60


def ablation_phantom(tumor=True):
    """(CT HU int16, segmentation uint8) in stored order, each post-processing step with an artefact to remove.

    Liver block; tumour = a confident core (prob 0.9) inside a low-confidence rim (0.4) that only hysteresis
    recovers; a second 'liver' (spleen, label 0) the largest-component step removes; tumour-looking voxels
    sticking out of the liver (label 0) that tumour-in-liver trims and small-component removal finishes; an
    8-voxel false tumour inside the liver that small-component removal drops.
    """
    vol = np.full(PHANTOM_SHAPE, BACKGROUND_HU, np.int16)
    seg = np.zeros(PHANTOM_SHAPE, np.uint8)
    vol[6:26, 6:28, 2:10], seg[6:26, 6:28, 2:10] = LIVER_HU, 1
    if tumor:
        vol[11:19, 11:19, 4:7], seg[11:19, 11:19, 4:7] = RIM_HU, 2
        vol[12:18, 12:18, 4:7] = CORE_HU
    vol[30:36, 6:12, 2:6] = LIVER_HU  # spleen
    vol[26:32, 14:18, 4:8] = OUTSIDE_TUMOR_HU  # touches the liver face x=25
    vol[22:24, 22:24, 7:9] = CORE_HU  # small false tumour inside the liver (label stays 1)
    return vol, seg


def write_phantom_tree(root, cases=(0, 1, 2), affine=PHANTOM_AFFINE):
    """LiTS-layout ablation phantoms (case 1 without tumour) in root."""
    root.mkdir(parents=True, exist_ok=True)
    for i in cases:
        vol, seg = ablation_phantom(tumor=i != 1)
        write_nifti(root / f"volume-{i}.nii.gz", vol, affine)
        write_nifti(root / f"segmentation-{i}.nii.gz", seg, affine)
    return root


def make_checkpoint(tmp_path, data_root, test_ids=("0", "1", "2"), prior=(0.5, 0.5), overrides=()):
    """A checkpoint as train.py writes it (smoke-sized, untrained) for data=lits at data_root, in
    tmp_path/outputs/run/checkpoints/ beside an empty tensorboard/ folder.

    prior 0.5: the untrained network's masks then depend on the input, so they are not trivially empty.
    """
    from lits.core.config import TrainConfig, typed
    from lits.data.normalization import Normalization
    from lits.infer.checkpoint import save_checkpoint
    from lits.infer.networks import build_model
    from lits.infer.spec import InferenceSpec
    from lits.train.state import CHECKPOINT_FORMAT

    cfg = train_config(
        tmp_path,
        "run",
        "data=lits",
        f"data.root={data_root}",
        "data.synthetic=null",
        f"data.cache_dir={tmp_path}/cache",
        f"model.output_prior=[{prior[0]},{prior[1]}]",
        *overrides,
    )
    torch.manual_seed(0)
    model = build_model(cfg.model)
    typed_cfg = typed(TrainConfig, cfg)
    window = Normalization("window", typed_cfg.data.window)
    spec = InferenceSpec.for_training(typed_cfg.model, typed_cfg.data, typed_cfg.loss.temperature, window,
                                      typed_cfg.postprocess, typed_cfg.augment)  # fmt: skip
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "inference": spec.to_dict(),
        "normalization": window.to_dict(),
        "epoch": 4,  # the last completed epoch, numbered from 1
        "splits": {"train": [], "val": [test_ids[0]], "test": list(test_ids)},
    }
    run_dir = Path(cfg.paths.output_dir)
    (run_dir / "tensorboard").mkdir(parents=True, exist_ok=True)
    return save_checkpoint(state, run_dir / "checkpoints/best.pt")


def evaluate_cfg(tmp_path, *overrides, out="eval"):
    """evaluate.py's config without progress bars, writing to tmp_path/<out>."""
    return compose(
        "evaluate", *overrides, "progress=false", f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / out}"
    )


# ---------------------------------------------------------------------------------------------- data preparation

WINDOW = (-200.0, 250.0)


def data_cfg(root, cache, **over):
    """A data config for preparing the LiTS tree `root` into `cache` directly (no Hydra); `over` replaces keys."""
    cfg = {
        "layout": "lits",
        "root": str(root),
        "cache_dir": str(cache),
        "window": list(WINDOW),
        "on_error": "fail",
        "prepare_workers": 1,
        "liver_margin_mm": None,
        "target_spacing_xy": None,
        "context_slices": 0,
        "split": {"val": 0.2, "test": 0.2, "train": None, "seed": None, "file": None},
        "fold": None,
        "num_folds": 5,
        "synthetic": None,
    }
    cfg.update(over)
    return OmegaConf.create(cfg)


PREPARE_DATA = "scripts/prepare_data.py"


def prepare_args(root, cache, workers=1):
    """scripts/prepare_data.py's arguments for the LiTS tree `root` and the cache folder `cache`."""
    return ["data=lits", f"data.root={root}", f"data.cache_dir={cache}", f"data.prepare_workers={workers}"]


def prepare_cmd(root, cache, workers=1):
    """The command line for a preparer in a child process this test controls (killed, or two at once)."""
    return [sys.executable, str(REPO / PREPARE_DATA), *prepare_args(root, cache, workers)]


def big_tree(root: Path, n: int) -> Path:
    """Cases big enough (~1.5 MB of voxels each) that a run takes a few seconds."""
    root.mkdir(parents=True)
    for i in range(n):
        vol, seg = make_case(shape=(128, 128, 48), seed=i)
        write_nifti(root / f"volume-{i}.nii.gz", vol, LPS)
        write_nifti(root / f"segmentation-{i}.nii.gz", seg, LPS)
    return root


# ---------------------------------------------------------------------------------------------- a stand-in network


def fake_predict_volume(model, image, *args, **kwargs):
    """Stands in for the network: probabilities read off the phantom's intensities (window [-200, 250])."""
    hu = np.asarray(image, np.float32) * 450 - 200
    near = lambda value: np.abs(hu - value) < 5  # noqa: E731
    liver = np.where(hu > -20, 0.9, 0.05)
    tumor = np.select([near(CORE_HU) | near(OUTSIDE_TUMOR_HU), near(RIM_HU)], [0.9, 0.4], 0.02)
    return np.stack([liver, tumor]).astype(np.float32)


# ---------------------------------------------------------------------------------------------- checkpoints


def tensors(tree, prefix=""):
    """{path: tensor} of every tensor in a nested checkpoint structure."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in tensors(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in tensors(sub, f"{prefix}/{i}").items()}
    return {}
