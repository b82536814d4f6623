"""`python -m benchmarks train` stays runnable and its ratio is the arithmetic its table states: every `--block` loop
steps a block of as many pure steps, per epoch, and the headline over the epochs after the first."""

import re

import pytest
from conftest import run_module

pytestmark = pytest.mark.slow


def test_interleaved_blocks_and_the_ratio_they_give(tmp_path):
    result = run_module("benchmarks", "train", "--steps", "4", "--epochs", "3", "--block", "2", "--size", "64",
                        "--cases", "3", "--crop", "32", "--batch-size", "2", "--workers", "1", "--data-dir", "data",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines() if re.match(r"\| \d", line)]
    assert [r[0].strip() for r in rows] == ["1 (warm-up)", "2", "3"]
    assert all(r[4].strip() == "2" for r in rows)  # 4 steps per epoch in blocks of 2
    loop = [float(r[1]) for r in rows[1:]]
    pure = [float(r[2]) for r in rows[1:]]
    for r, lo, pu in zip(rows[1:], loop, pure):
        assert float(r[3].strip(" %")) == pytest.approx(100 * lo / pu, abs=0.15)
    pattern = r"loop / pure step: ([\d.]+)% over epochs 2\.\.3 \(loop ([\d.]+), pure ([\d.]+)"
    headline = re.search(pattern, result.stdout)
    ratio, loop_all, pure_all = map(float, headline.groups())
    assert ratio == pytest.approx(100 * loop_all / pure_all, abs=0.15)
    assert min(loop) - 0.1 <= loop_all <= max(loop) + 0.1 and min(pure) - 0.1 <= pure_all <= max(pure) + 0.1
