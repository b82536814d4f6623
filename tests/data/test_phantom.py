"""The phantom's lesions: sampled distributions against their targets, what the generated data measures (with the
scorer's lesion definition), label consistency, determinism, tiny sizes, and the data set's generator version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import compose_train
from omegaconf import OmegaConf
from scipy import ndimage

from lits.core.config.synthetic import SyntheticParams
from lits.core.errors import LitsError
from lits.data.prepare import ensure_synthetic
from lits.data.synthetic import GENERATOR_VERSION, MANIFEST, generate_case, generate_dataset
from lits.data.synthetic.anatomy import Phantom
from lits.data.synthetic.lesions import MIN_VOXELS, LiverSites, contrast_classes, lesion_count, lesion_diameters
from lits.data.synthetic.montage import save_panels
from lits.data.synthetic.phases import PHASES, draw_phase
from studies import phantom_stats as stats
from studies.__main__ import main as studies_main

DEFAULT = SyntheticParams()
SMOKE = SyntheticParams(size=96, num_slices=(20, 28))  # debug=smoke's data


# ------------------------------------------------------------------------------------ sampled distributions
def test_lesion_count_is_heavy_tailed_with_the_target_quantiles():
    rng = np.random.default_rng(0)
    counts = np.array([lesion_count(rng, DEFAULT) for _ in range(20000)])
    assert abs(np.mean(counts == 0) - DEFAULT.tumor_free_fraction) < 0.01
    bearing = counts[counts > 0]
    assert np.median(bearing) == 3
    q1, q3 = np.percentile(bearing, [25, 75])
    assert q1 <= 2 and 7 <= q3 <= 11
    assert 0.06 <= np.mean(bearing >= 20) <= 0.12  # dozens of metastases in a few cases
    assert bearing.max() == DEFAULT.max_tumors and np.mean(bearing == 1) > 0.25  # capped; many single lesions
    assert lesion_count(rng, SyntheticParams(max_tumors=0)) == 0


def test_lesion_diameters_many_small_few_masses():
    rng = np.random.default_rng(1)
    cases = [lesion_diameters(rng, DEFAULT, int(n)) for n in rng.integers(1, 30, 3000)]
    every = np.concatenate(cases)
    lo, hi = DEFAULT.tumor_diameter_range_mm
    assert every.min() >= lo and every.max() <= hi
    assert all(np.all(np.diff(d) <= 0) for d in cases)  # largest first
    assert 0.40 <= np.mean(every < 10) <= 0.60  # a large share under 10 mm
    assert 0.10 <= np.mean(every > 20) <= 0.30
    firsts = np.array([d[0] for d in cases])
    assert 0.6 <= np.mean(firsts > 30) <= 0.9  # a dominant mass in most tumour-bearing cases
    # a dominant mass scales with the anatomy (mass_scale), every other lesion with the scanner's mm (lesion_scale)
    massive = SyntheticParams(dominant_lesion_fraction=1.0, dominant_diameter_mm=110.0, dominant_diameter_sigma=0.01)
    plain = lesion_diameters(np.random.default_rng(2), massive, 6)
    scaled = lesion_diameters(np.random.default_rng(2), massive, 6, mass_scale=0.8, lesion_scale=0.5)
    assert scaled[0] == pytest.approx(0.8 * plain[0]) and np.allclose(scaled[1:], 0.5 * plain[1:])


def test_contrast_classes_follow_the_shares_and_the_phase():
    rng = np.random.default_rng(2)
    portal = draw_phase(np.random.default_rng(0), SyntheticParams(phase_fractions=(1.0, 0.0, 0.0)))
    arterial = draw_phase(np.random.default_rng(0), SyntheticParams(phase_fractions=(0.0, 1.0, 0.0)))
    assert (portal.name, arterial.name) == ("portal_venous", "arterial")
    shares = np.bincount(contrast_classes(rng, DEFAULT, portal, 50000), minlength=3) / 50000
    assert np.allclose(shares, DEFAULT.contrast_fractions, atol=0.01)
    hyper = np.mean(contrast_classes(rng, DEFAULT, arterial, 50000) == 2)
    assert 0.2 < hyper < 0.3  # three times the weight: 0.3 / 1.2
    phases = [draw_phase(rng, DEFAULT).name for _ in range(4000)]
    assert np.allclose([phases.count(p) / 4000 for p in PHASES], DEFAULT.phase_fractions, atol=0.025)


# --------------------------------------------------------------------------- what the generated data measures
@pytest.fixture(scope="module")
def measured():
    """16 default cases (seed 0, the default data set's first cases): measured lesions and what was drawn."""
    out = []
    for case, vol, seg, aff, phantom in stats.generated_cases(16, 0, DEFAULT):
        found = stats.measure_case(case, vol, seg, aff)
        found.drawn = phantom
        out.append(found)
    return out


def test_measured_statistics_match_the_targets(measured):
    s = stats.summarise(measured)
    assert 0.04 <= s["tumour_free"] <= 0.2
    med, q1, q3, mx = s["per_case"]
    assert 1 <= med <= 4 and q3 >= 4 and mx >= 8  # heavy tail (the sampled counts' test checks dozens)
    small, middle, large = s["bins"]
    assert 0.35 <= small <= 0.65 and 0.15 <= middle <= 0.4 and 0.1 <= large <= 0.35
    assert s["diameter"][1] < 6.0  # lesions from a few mm
    c = s["classes"]
    assert c["hypodense"] >= 0.6 and 0.02 <= c["isodense"] <= 0.3 and 0.04 <= c["hyperdense"] <= 0.25
    assert 0.15 <= s["boundary"] <= 0.8  # small lesions in real mm are large against the 256-pixel liver
    drawn = s["drawn"]
    assert drawn["placements"]["boundary"] > 0.1 and drawn["placements"]["vessel"] > 0.05
    assert drawn["exophytic"] > 0.03 and drawn["necrotic"] > 0.03 and drawn["rim"] > 0.05
    # every drawn lesion left a label; merges and the liver surface can only make the measured count smaller
    assert s["lesions"] <= drawn["lesions"] + 2


def test_small_lesions_are_calibrated_against_the_real_ct(measured):
    """Lesions under 10 mm: voxels, contrast and contrast-to-noise ratio within 25 % of the real CT's; few invisible;
    thin-slice scans common."""
    small = stats.small_lesions(measured)
    assert small["lesions"] >= 15
    for key in ("voxels", "contrast_hu", "cnr"):
        assert abs(small[key] - stats.SMALL_REAL[key]) <= stats.SMALL_TOLERANCE * abs(stats.SMALL_REAL[key]), key
    assert small["invisible"] <= 0.15
    spacings = [c.spacing_z_mm for c in measured]
    assert 0.25 <= np.mean(np.array(spacings) <= 1.5) <= 0.9


def test_small_lesion_measures_on_a_known_case():
    """A 40-voxel lesion 30 HU below a liver whose HU is 100 +- noise: contrast -30, CNR 30 / noise sd."""
    rng = np.random.default_rng(0)
    seg = np.ones((20, 40, 40), dtype=np.uint8)
    vol = 100 + 10 * rng.standard_normal(seg.shape)
    seg[8:10, 18:22, 18:23] = 2  # 2 x 4 x 5 = 40 voxels
    vol[seg == 2] -= 30
    affine = np.diag([0.8, 0.8, 1.0, 1.0])
    case = stats.measure_case("k", vol.transpose(2, 1, 0), seg.transpose(2, 1, 0), affine)
    assert case.voxels == [40] and case.spacing_z_mm == 1.0
    assert case.noise_hu == pytest.approx(10.0, rel=0.05)  # robust sd of the liver away from the lesion
    small = stats.small_lesions([case])
    assert small["voxels"] == 40 and small["contrast_hu"] == pytest.approx(-30.0, abs=2.0)
    assert small["cnr"] == pytest.approx(3.0, rel=0.1) and small["invisible"] == 0.0
    assert "| voxels per small lesion (median) | 40 | 100 | no |" in stats.small_table(small, "known")


def test_edge_share_of_a_known_lesion():
    """Edge voxels 12 HU below the liver around a core 30 HU below it: the edge keeps 0.4 of the core's contrast."""
    seg = np.ones((20, 40, 40), dtype=np.uint8)
    seg[8:11, 15:25, 15:25] = 2
    vol = np.full(seg.shape, 100.0)
    vol[seg == 2] = 88.0
    vol[8:11, 16:24, 16:24] = 70.0  # the core: the lesion less its in-plane edge
    case = stats.measure_case("k", vol.transpose(2, 1, 0), seg.transpose(2, 1, 0), np.diag([0.8, 0.8, 1.0, 1.0]))
    assert case.edge_shares == [pytest.approx(0.4)]


def test_labels_are_consistent_in_default_cases(measured):
    for found in measured[:8]:
        ph = found.drawn
        seg_tumour, liver = ph.tumor, ph.liver
        assert not (seg_tumour & ~liver).any()  # tumour is part of the liver mask
        assert not (liver & ~ph.body3).any()  # nothing labelled outside the body ...
        assert not (liver & ~ph.cav3).any()  # ... nor outside the abdominal cavity
        assert ndimage.label(liver)[1] == 1  # bulging lesions keep the liver one organ
        assert all(les.voxels >= MIN_VOXELS for les in ph.lesions)
        if ph.lesions:
            lab, n = ndimage.label(seg_tumour)
            assert n >= 1 and min(np.bincount(lab.ravel())[1:]) >= MIN_VOXELS


def test_every_placement_occurs(measured):
    lesions = [les for found in measured for les in found.drawn.lesions]
    assert {les.placement for les in lesions} == {"parenchyma", "boundary", "vessel"}
    assert any(les.exophytic for les in lesions) and not any(
        les.exophytic for les in lesions if les.placement != "boundary"
    )


@pytest.fixture()
def built():
    """A built default case whose lesion steps can be replayed on its liver (case 3 of seed 0 holds lesions)."""
    ph = Phantom(np.random.default_rng([0, 3]), DEFAULT)
    ph.build()
    assert ph.lesions
    ph.tumor[:] = False
    return ph


def test_a_perivascular_lesion_wraps_its_vein(built):
    ph = built
    sites = LiverSites(ph)
    for _ in range(20):
        c, vein = ph._vein_site(sites, 6.0)
        if c is not None and ph._draw_lesion(c, 6.0, 0, "vessel", vein) is not None:
            break
    else:
        pytest.fail("no perivascular lesion could be placed")
    csl, lumen = ph.capsule(*vein)
    assert ph.tumor.any() and not (ph.tumor[csl] & lumen).any()  # the vein keeps its voxels
    assert (ndimage.binary_dilation(ph.tumor, iterations=2)[csl] & lumen).any()  # ... and the lesion is against it


def test_a_bulging_lesion_grows_the_liver_into_the_fat(built):
    ph, rng = built, np.random.default_rng(1)
    sites = LiverSites(ph)
    grown = 0
    for _ in range(20):
        c = sites.pick(rng, 0.0, max(sites.f * ph.s, ph.sz) + 0.1)  # a voxel at the liver surface
        sl, q, _, (_, _, w) = ph._lesion_shape(c, 8.0)
        before, cavity = ph.liver.copy(), ph.cav3 & ~ph.occ
        ph._bulge(sl, q, w)
        new = ph.liver & ~before
        assert not (new & ~cavity).any()  # only unclaimed cavity (fat) became liver
        grown += int(new.sum())
    assert grown > 0 and ndimage.label(ph.liver)[1] == 1


def test_script_arrays_equal_generate_case():
    _, vol, seg, aff, _ = next(stats.generated_cases(3, 5, SMOKE))
    v2, s2, a2 = generate_case(0, 5, SMOKE)
    assert np.array_equal(vol, v2) and np.array_equal(seg, s2) and np.array_equal(aff, a2)


def test_determinism_of_the_drawn_lesions():
    a = Phantom(np.random.default_rng([4, 7]), SMOKE)
    b = Phantom(np.random.default_rng([4, 7]), SMOKE)
    va, sa, _ = a.build()
    vb, sb, _ = b.build()
    assert np.array_equal(va, vb) and np.array_equal(sa, sb)
    assert a.lesions == b.lesions and a.phase == b.phase


@pytest.mark.parametrize("params", [SMOKE, SyntheticParams(size=48, num_slices=(16, 20))], ids=["smoke", "48px"])
def test_tiny_sizes_give_valid_non_trivial_data(params):
    with_tumour = 0
    for i in range(5):
        ph = Phantom(np.random.default_rng([0, i]), params)
        vol, seg, _ = ph.build()
        assert set(np.unique(seg).tolist()) <= {0, 1, 2} and (seg >= 1).mean() > 0.01
        assert not (ph.tumor & ~ph.liver).any()
        if (seg == 2).any():
            with_tumour += 1
            lesion = vol[seg == 2].astype(float).mean()
            assert abs(lesion - vol[seg == 1].astype(float).mean()) < 200  # soft tissue, not air or bone
    assert with_tumour >= 3  # the smoke data set still has tumours to learn


# ------------------------------------------------------------------------------------- measuring, on known data
def test_measure_case_on_known_lesions():
    """Two spheres in a box liver: one hypodense in the middle, one hyperdense touching the liver surface."""
    shape = (60, 60, 20)  # X, Y, Z
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    seg = np.zeros(shape, np.uint8)
    seg[10:50, 10:50, 2:18] = 1
    inner = (x - 25) ** 2 + (y - 25) ** 2 + ((z - 10) * 2) ** 2 <= 36  # radius 6 px = 6 mm in-plane
    edge = (x - 45) ** 2 + (y - 45) ** 2 + ((z - 10) * 2) ** 2 <= 25
    seg[inner] = 2
    seg[edge & (seg == 1)] = 2
    vol = np.where(seg == 1, 100, -100).astype(np.int16)
    vol[inner] = 60
    vol[edge & (seg == 2)] = 140
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    found = stats.measure_case("k", vol, seg, affine)
    assert len(found.diameters_mm) == 2
    order = np.argsort(found.diameters_mm)[::-1]
    volume = float(inner.sum()) * 2.0  # mm^3
    assert found.diameters_mm[order[0]] == pytest.approx((6 * volume / np.pi) ** (1 / 3))
    assert [found.classes[i] for i in order] == ["hypodense", "hyperdense"]
    assert [found.at_boundary[i] for i in order] == [False, True]
    assert found.slices[order[0]] == 10


def test_script_on_a_folder_writes_the_table_and_the_montage(tmp_path, capsys):
    root = generate_dataset(tmp_path / "d", 3, seed=2, params=SMOKE, progress=False)
    outputs = ["--out", str(tmp_path / "t.md"), "--montage", str(tmp_path / "m.png")]
    rc = studies_main(["phantom", "--root", str(root), *outputs])
    assert rc == 0
    text = (tmp_path / "t.md").read_text()
    assert "| tumour-free cases |" in text and "| lesions < 10 / 10-20 / > 20 mm |" in text and "| 3 |" in text
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert studies_main(["phantom", "--root", str(tmp_path / "nothing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_save_panels(tmp_path):
    img = np.full((40, 30), 100, np.int16)
    lab = np.zeros((40, 30), np.uint8)
    lab[5:35, 5:25] = 1
    lab[10:15, 10:15] = 2
    path = save_panels([(img, lab, "a"), (img, lab, "b")], tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(LitsError, match="no slices"):
        save_panels([], tmp_path / "q.png")


# ----------------------------------------------------------------------------------- the data set's identity
def test_manifest_records_the_generator_version_and_old_folders_are_refused(tmp_path):
    cfg = OmegaConf.create(
        {
            "name": "synthetic",
            "root": str(tmp_path / "synth"),
            "cache_dir": str(tmp_path / "cache"),
            "synthetic": {"num_cases": 2, "seed": 0, "size": 48, "num_slices": [16, 16]},
        }
    )
    ensure_synthetic(cfg)
    path = tmp_path / "synth" / MANIFEST
    record = json.loads(path.read_text())
    assert record["generator"] == GENERATOR_VERSION == 3
    del record["generator"]  # as the first generator wrote it
    path.write_text(json.dumps(record))
    with pytest.raises(LitsError, match=r"synth: made by synthetic generator version 1, this lits makes version 3"):
        ensure_synthetic(cfg)


def test_default_folder_name_carries_the_generator_version():
    root = compose_train().data.root
    assert f"synthetic-v{GENERATOR_VERSION}-40x256-seed0" in str(root)
