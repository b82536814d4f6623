"""nnU-Net predictions (case_NNN.nii.gz) -> segmentation-N.nii.gz for our scorer (run with the lits venv).

  python from_nnunet.py PRED_DIR OUT_DIR DATA_ROOT

nnU-Net writes each prediction on its input's grid (SimpleITK, same voxel order). The labels are copied unchanged
into a file with the reference volume-N's affine and header, after checking that shape and affine agree (atol
1e-3 mm, the scorer's tolerance): any resampling or reorientation would be an error here, not papered over.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def main() -> None:
    pred_dir, out_dir, data_root = (Path(a) for a in sys.argv[1:4])
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("segmentation-*.nii.gz"):
        old.unlink()
    preds = sorted(p for p in pred_dir.glob("case_*.nii.gz") if re.fullmatch(r"case_\d+\.nii\.gz", p.name))
    if not preds:
        sys.exit(f"from_nnunet: no case_NNN.nii.gz predictions in {pred_dir}")
    for pred_path in preds:
        n = int(re.search(r"\d+", pred_path.name).group())
        refs = [data_root / f"volume-{n}.nii.gz", data_root / f"volume-{n}.nii"]
        ref_path = next((r for r in refs if r.exists()), None)
        if ref_path is None:
            sys.exit(f"from_nnunet: {pred_path.name}: no volume-{n}.nii[.gz] in {data_root}")
        pred, ref = nib.load(str(pred_path)), nib.load(str(ref_path))
        if pred.shape[:3] != ref.shape[:3] or not np.allclose(pred.affine, ref.affine, atol=1e-3, rtol=0):
            sys.exit(
                f"from_nnunet: {pred_path.name} is not on {ref_path.name}'s grid "
                f"(shape {pred.shape} vs {ref.shape}, max affine diff {np.abs(pred.affine - ref.affine).max():.2g})"
            )
        labels = np.asarray(pred.dataobj).astype(np.uint8)
        header = ref.header.copy()
        header.set_data_dtype(np.uint8)
        header["scl_slope"], header["scl_inter"] = 1, 0
        nib.save(nib.Nifti1Image(labels, ref.affine, header), str(out_dir / f"segmentation-{n}.nii.gz"))
    print(f"from_nnunet: {len(preds)} predictions -> {out_dir}/segmentation-N.nii.gz")


if __name__ == "__main__":
    main()
