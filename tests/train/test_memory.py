"""Training reads crops without the cache becoming resident in the process (the full figures: `python -m benchmarks
memory`)."""

import gc
import json
from pathlib import Path

import numpy as np
import pytest

from lits.data.cache import open_cached
from lits.data.preprocess import slice_stats
from lits.data.sampling import SamplingConfig, SliceIndex, TrainSlices

STATUS = Path("/proc/self/status")
pytestmark = pytest.mark.skipif(not STATUS.exists(), reason="needs Linux /proc")


def rss_mb() -> float:
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def fake_case(folder: Path, z: int = 128, size: int = 512):
    """A cached case written directly (64 MB of float16 image), every slice with liver."""
    folder.mkdir(parents=True)
    image = np.lib.format.open_memmap(folder / "image.npy", mode="w+", dtype=np.float16, shape=(z, size, size))
    for k in range(z):
        image[k] = k / z
    image.flush()
    del image
    label = np.zeros((z, size, size), np.uint8)
    label[:, 100:400, 100:400] = 1
    label[:, 200:230, 200:230] = 2
    np.save(folder / "label.npy", label)
    np.savez(folder / "slices.npz", **slice_stats(label))
    (folder / "meta.json").write_text(json.dumps({"case_id": "0", "spacing": [1.0, 1.0, 1.0]}))
    return open_cached(folder)


def test_crops_come_from_positional_reads_not_resident_maps(tmp_path):
    case = fake_case(tmp_path / "0")
    index = SliceIndex([case])
    ds = TrainSlices(index, crop_size=512, sampling=SamplingConfig(p_lesion_center=0.5), seed=0)
    gc.collect()
    before = rss_mb()
    for z in range(len(index)):
        item = ds[(z, z)]
        assert float(item["image"][0, 256, 256]) == pytest.approx(z / 128, abs=1e-3)
    del item
    gc.collect()
    grown = rss_mb() - before
    # every slice of the 64 MB image (and the 32 MB label) was read once
    assert grown < 16, f"resident memory grew by {grown:.1f} MB"

    before = rss_mb()  # the same reads through the long-lived memory map: its pages stay resident
    total = sum(float(case.image[z].max()) for z in range(case.image.shape[0]))
    assert total > 0
    assert rss_mb() - before > 24, "the measurement should see memory-mapped pages become resident"
