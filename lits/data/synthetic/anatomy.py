"""The phantom builder: one case's anatomy, painted organ by organ, then acquired."""

from __future__ import annotations

import numpy as np

from lits.data.synthetic.abdomen import AbdomenMixin
from lits.data.synthetic.acquisition import acquire, scanner_affine
from lits.data.synthetic.canvas import Canvas
from lits.data.synthetic.lesions import LesionMixin
from lits.data.synthetic.liver import LiverMixin
from lits.data.synthetic.phases import draw_phase
from lits.data.synthetic.thorax import ThoraxMixin
from lits.data.synthetic.trunk import TrunkMixin


class Phantom(Canvas, TrunkMixin, ThoraxMixin, AbdomenMixin, LiverMixin, LesionMixin):
    """Builds one case from ``rng`` (consumed in a fixed order: same generator state, same case).

    The steps share the layout through attributes: `plan` draws the body outline and the liver's
    z extent, then each organ step (trunk, thorax, abdomen, liver mixins) reads what earlier
    steps set. Organs claim voxels as they are painted, so the order in `build` matters."""

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paints every organ, then returns (volume int16 HU, segmentation uint8, affine)."""
        self.plan()
        self.body()
        self.spine()
        self.great_vessels()
        self.thorax()
        self.kidneys()
        self.spleen()
        self.stomach()
        self.gallbladder()
        self.pancreas()
        self.retroperitoneum()
        self.liver_shape()
        self.liver_vessels()
        self.tumors()
        self.bowel()
        self.ribs()
        seg = np.zeros(self.shape, dtype=np.uint8)
        seg[self.liver] = 1
        seg[self.tumor & self.liver] = 2
        vol = acquire(self.rng, self.img, self.p, self.g, self.s)
        return vol, seg, scanner_affine(self.rng, self.n, self.s, self.sz_true)

    def plan(self):
        """Body outline and cavity half-axes, the liver's z extent (``w_bot`` .. ``w_top``, leaving
        liver-free slices at both ends), the contrast phase and the liver's HU."""
        rng, g = self.rng, self.g
        # body outline (cross-section constant up to a smooth scale s(w))
        self.a_body = self.fov / 2 * rng.uniform(0.80, 0.90)
        self.b_ant = self.a_body * rng.uniform(0.66, 0.78)
        self.b_post = self.b_ant * rng.uniform(0.88, 1.0)
        self.cu = self.fov * rng.uniform(-0.015, 0.015)
        self.cv = self.fov * rng.uniform(-0.01, 0.05)
        self.t_fat = rng.uniform(0.045, 0.11)
        self.t_fat_ant = rng.uniform(0.0, 0.07)
        self.t_musc = rng.uniform(0.055, 0.08)
        # cavity half-axes at mid-z (approximate; used to place organs)
        self.A = self.a_body * (1 - self.t_fat - self.t_musc - 0.02)
        self.Ba = self.b_ant * (1 - self.t_fat - self.t_fat_ant - self.t_musc)
        self.Bp = self.b_post * (1 - self.t_fat - self.t_musc)
        # liver extent along z, leaving liver-free slices at both ends
        nz, sz = self.nz, self.sz
        self.m_lo = max(2, int(round(0.07 * nz)))  # at least this many liver-free slices at the bottom
        self.m_hi = max(2, int(round(0.07 * nz)))  # and at the top
        avail = (nz - self.m_lo - self.m_hi - 2) * sz
        self.Lz = float(min(rng.uniform(140.0, 185.0) * g, 0.9 * avail))
        lo_top = (self.m_lo + 1) * sz + self.Lz
        hi_top = (nz - 1 - self.m_hi) * sz - 6.0 * g
        self.w_top = float(rng.uniform(lo_top, max(lo_top, hi_top)))  # liver dome apex
        self.w_bot = self.w_top - self.Lz
        self.phase = draw_phase(rng, self.p)
        self.liver_hu = float(rng.uniform(*self.phase.liver_hu))
