"""Generate the synthetic LiTS-format data set (volume-N.nii.gz / segmentation-N.nii.gz).

    python scripts/make_synthetic.py --out data/synthetic-demo --num-cases 20 --seed 0 \
        --montage docs/synthetic_montage.png

The folder is written atomically (temporary sibling, renamed when complete); an existing
non-empty folder is refused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lits.core.errors import LitsError
from lits.data.synthetic import SyntheticParams, case_filenames, generate_dataset, save_montage


def _parser() -> argparse.ArgumentParser:
    d = SyntheticParams()
    p = argparse.ArgumentParser(description="Write a synthetic LiTS-format CT data set.")
    p.add_argument("--out", required=True, type=Path, help="target folder (must not exist or be empty)")
    p.add_argument("--num-cases", type=int, default=20, help="number of cases (default 20)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument(
        "--montage", type=Path, default=None, help="also write a PNG montage of the first tumour-bearing case"
    )
    p.add_argument("--size", type=int, default=d.size, help=f"in-plane voxels (default {d.size})")
    p.add_argument(
        "--min-slices", type=int, default=d.num_slices[0], help=f"minimum slices per case (default {d.num_slices[0]})"
    )
    p.add_argument(
        "--max-slices", type=int, default=d.num_slices[1], help=f"maximum slices per case (default {d.num_slices[1]})"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        params = SyntheticParams(size=args.size, num_slices=(args.min_slices, args.max_slices))
        t0 = time.perf_counter()
        root = generate_dataset(args.out, args.num_cases, seed=args.seed, params=params, progress=not args.quiet)
        dt = time.perf_counter() - t0
        print(f"wrote {args.num_cases} cases to {root.resolve()} ({dt:.1f} s, {dt / args.num_cases:.2f} s/case)")
        if args.montage is not None:
            import nibabel as nib
            import numpy as np

            for i in range(args.num_cases):
                vname, sname = case_filenames(i)
                seg_img = nib.load(str(root / sname))
                seg = np.asarray(seg_img.dataobj)
                if (seg == 2).any() or i == args.num_cases - 1:
                    vol = np.asarray(nib.load(str(root / vname)).dataobj)
                    path = save_montage(vol, seg, args.montage, affine=seg_img.affine)
                    print(f"wrote montage of case {i} to {path.resolve()}")
                    break
    except LitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
