"""The thorax above the diaphragm: diaphragm domes, heart, lung bases with their vessels."""

from __future__ import annotations

import numpy as np

from lits.data.synthetic.fields import unit


class ThoraxMixin:
    """Phantom step for the thorax; sets ``dome`` (diaphragm height per (u, v), mm) and
    ``dome_above`` (voxels above it), which keep the liver and the crura below the diaphragm."""

    def thorax(self):
        """Two-domed diaphragm; lung bases and heart above it."""
        rng, g = self.rng, self.g
        U = self.u[:, None] - np.float32(self.cu)
        V = self.v[None, :] - np.float32(self.cv)
        hr = self.w_top + 4 * g
        hl = hr - rng.uniform(5, 22) * g
        ur, vr = -0.45 * self.A + rng.normal(0, 6) * g, rng.normal(0, 8) * g
        ul, vl = 0.42 * self.A + rng.normal(0, 6) * g, rng.normal(0, 8) * g
        kr, kl = rng.uniform(95, 130) * g, rng.uniform(95, 130) * g
        post = np.clip(V, 0, None)
        dr = hr - ((U - ur) ** 2 + (V - vr) ** 2) / (2 * kr) - post**2 / (4 * kr)
        dl = hl - ((U - ul) ** 2 + (V - vl) ** 2) / (2 * kl) - post**2 / (4 * kl)
        self.dome = np.maximum(dr, dl).astype(np.float32)  # diaphragm height D(u, v), mm
        self.dome_above = above = self.w[None, None, :] > self.dome[:, :, None]
        # heart with a pericardial fat rim, resting on the central tendon
        hc = (self.cu + rng.uniform(15, 35) * g, self.cv - 0.35 * self.Ba, max(hr, hl) + rng.uniform(55, 70) * g)
        box = self.ellipsoid(
            hc, (rng.uniform(52, 62) * g, rng.uniform(40, 48) * g, rng.uniform(55, 65) * g), angle=-0.5, margin=1.1
        )
        if box:
            sl, q, *_ = box
            heart = np.where(q < 0.72, np.float32(self.ao_hu - rng.uniform(0, 30)), np.float32(rng.uniform(90, 120)))
            self.paint(sl, q < 1, heart, where=above & self.cav3)
            self.paint(sl, q < 1.09, np.float32(self.fat_hu), where=above & self.cav3)
        # lungs fill the rest of the thoracic cavity above the diaphragm
        lung = above & self.cav3 & ~self.occ
        lung_hu = np.float32(rng.uniform(-880, -820))
        self.img[lung] = lung_hu
        self.occ |= lung
        # pulmonary vessels: short thin bright tubes scattered through the lung bases
        ks = np.nonzero(lung.any(axis=(0, 1)))[0]
        if len(ks):
            w_lo = float(self.w[ks[0]])
            for _ in range(int(rng.integers(30, 60))):
                c = np.array(
                    [
                        self.cu + rng.uniform(-0.9, 0.9) * self.A,
                        self.cv + rng.uniform(-0.8, 0.9) * self.Bp,
                        rng.uniform(w_lo, self.zext),
                    ]
                )
                if not self.inside(lung, c):
                    continue
                d = unit(rng.normal(size=3)) * rng.uniform(8, 25) * g
                r = rng.uniform(1.0, 2.8) * g
                cap = self.capsule(c - d, c + d, r, 0.6 * r)
                if cap:
                    csl, m = cap
                    np.copyto(self.img[csl], np.float32(rng.uniform(-50, 60)), where=m & lung[csl])
        # diaphragm muscle sheet just below the dome surface
        dia = (~above) & (self.w[None, None, :] > (self.dome - np.float32(5 * g))[:, :, None]) & self.cav3 & ~self.occ
        self.img[dia] = np.float32(self.musc_hu)
        self.occ |= dia
