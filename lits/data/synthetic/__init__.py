"""Synthetic abdominal CT in the LiTS2017 file format: the embedded default data set.

Each case is an upper-abdomen contrast-enhanced CT phantom (portal-venous, arterial or delayed phase) built from
smooth implicit shapes: body outline with subcutaneous fat and muscle wall, spine with discs and
posterior elements, paraspinal muscles, obliquely cut ribs, aorta and IVC, kidneys, spleen,
stomach with an air-fluid level, gallbladder, bowel loops, lung bases and heart above a
two-domed diaphragm, and the liver (a deformed union of ellipsoids hugging the right abdominal
wall) with branching portal and hepatic veins and up to max_tumors lesions drawn with the LiTS
data set's statistics (lesions.py: count, size, density, texture, placement, with their sources).
Labels are fixed first; only then is the image blurred (partial volume, anisotropic) and given
correlated scanner noise.

Geometry. Arrays are in NIfTI voxel order (X, Y, Z) with the affine ``diag(-s, -s, sz)`` plus an
origin offset, i.e. the raw LiTS/DICOM convention (voxel axes point to patient Left, Posterior,
Superior; ``nib.aff2axcodes`` gives ``('L', 'P', 'S')``). Voxel i = 0 is the patient's right, so
the liver sits at low X; j = 0 is anterior. Readers must reorient to RAS with the affine.

Anatomy is laid out relative to the field of view (FOV = size * spacing, like a scanner that
fits the FOV to the patient); lengths quoted in mm in the code are for a 360 mm FOV. A case's z
extent is ``num_slices`` x ``spacing_z`` for a body framed at 360/256 mm per pixel, scaled with the
in-plane spacing drawn; thin-slice scans (``thin_slice_fraction``) cover it with more, thinner
slices. The z geometry is calibrated for size 256 and a mean of 60 slices: a smaller ``size`` or
``num_slices`` samples the same phantom more coarsely (about the same label fractions per volume
and per slice), while the affine always reports the spacing actually drawn from ``spacing_xy``
and ``spacing_z``. So at non-default sizes the physical size of the "patient" in the affine is
scaled (a 96-voxel FOV at 1.4 mm is 13 cm wide); mm-based metrics are then self-consistent but
not anatomical.

Determinism: case ``index`` depends only on ``(seed, index)`` through
``np.random.default_rng([seed, index])``; the same inputs give byte-identical arrays.

Modules: params (generator version, HU range), fields (smooth random fields, geometry helpers),
canvas (grid and shape primitives), phases (contrast phases), trunk / thorax / abdomen / liver (the
organs), lesions (the liver lesions), anatomy (the builder), acquisition (blur, noise, affine),
dataset (cases and NIfTI folders; the manifest records GENERATOR_VERSION), writer (background
NIfTI writing), montage (pictures).
"""

from lits.core.config.synthetic import SyntheticParams
from lits.data.synthetic.dataset import MANIFEST, case_filenames, generate_case, generate_dataset, manifest
from lits.data.synthetic.montage import save_montage
from lits.data.synthetic.params import GENERATOR_VERSION, HU_MAX, HU_MIN

__all__ = [
    "SyntheticParams",
    "generate_case",
    "generate_dataset",
    "save_montage",
    "case_filenames",
    "HU_MIN",
    "HU_MAX",
    "MANIFEST",
    "manifest",
    "GENERATOR_VERSION",
]
