"""Abdominal organs other than the liver: kidneys, spleen, stomach, gallbladder, pancreas, bowel."""

from __future__ import annotations

import numpy as np

from lits.data.synthetic.fields import smooth_field, unit


class AbdomenMixin:
    """Phantom steps for the abdominal organs around the liver; they paint only unclaimed voxels
    (see `Canvas.paint`), so their order in `Phantom.build` decides who wins an overlap."""

    def kidneys(self):
        rng, g = self.rng, self.g
        w_r = self.w_bot + rng.uniform(-5, 25) * g
        for side, wc in ((-1, w_r), (1, w_r + rng.uniform(10, 30) * g)):
            cu = self.spine_cu + side * rng.uniform(58, 70) * g
            cv = self.v_vb - rng.uniform(-2, 10) * g
            axes = (rng.uniform(20, 25) * g, rng.uniform(28, 34) * g, rng.uniform(48, 58) * g)
            angle = side * rng.uniform(0.35, 0.7)
            box = self.ellipsoid((cu, cv, wc), axes, angle=angle, deform=0.05)
            if not box:
                continue
            sl, q, U, V, W = box
            cortex = np.float32(rng.uniform(150, 200))
            medulla = cortex - np.float32(rng.uniform(10, 45))
            val = np.where(q < 0.72, medulla, cortex)
            # renal sinus fat at the medial hilum
            hu = cu - side * 0.55 * axes[0]
            sinus = ((U - np.float32(hu)) / np.float32(9 * g)) ** 2 + (
                (V - np.float32(cv - 4 * g)) / np.float32(13 * g)
            ) ** 2 + ((W - np.float32(wc)) / np.float32(0.55 * axes[2])) ** 2 < 1
            val = np.where(sinus, np.float32(rng.uniform(-90, -40)), val)
            self.paint(sl, q < 1, val, where=self.cav3)

    def spleen(self):
        rng, g = self.rng, self.g
        c = (self.cu + 0.62 * self.A, self.cv + 0.35 * self.Bp, self.w_top - rng.uniform(0.2, 0.35) * self.Lz)
        box = self.ellipsoid(
            c,
            (rng.uniform(22, 30) * g, rng.uniform(45, 60) * g, rng.uniform(45, 60) * g),
            angle=-rng.uniform(0.5, 0.9),
            deform=0.15,
            deform_scale=30,
        )
        if box:
            sl, q, *_ = box
            hu = np.float32(self.liver_hu + rng.uniform(-10, 15))
            self.paint(sl, q < 1, hu, where=self.cav3)

    def stomach(self):
        rng, g = self.rng, self.g
        c = (self.cu + 0.32 * self.A, self.cv - 0.22 * self.Ba, self.w_top - rng.uniform(0.25, 0.4) * self.Lz)
        axes = (rng.uniform(38, 50) * g, rng.uniform(30, 40) * g, rng.uniform(45, 60) * g)
        box = self.ellipsoid(c, axes, angle=rng.uniform(-0.3, 0.5), deform=0.12, deform_scale=35)
        if not box:
            return
        sl, q, U, V, W = box
        wall = 1 - 4.5 * g / min(axes[:2])
        gas_level = c[1] - axes[1] + rng.uniform(0.0, 0.6) * 2 * axes[1]  # air-fluid level (anterior = gas)
        if rng.random() < 0.5:
            content = np.float32(rng.uniform(0, 30))
        else:  # food: mottled
            content = np.float32(rng.uniform(20, 50)) + np.float32(25) * smooth_field(
                rng, (U.ravel(), V.ravel(), W.ravel()), 5 * g
            )
        val = np.where(np.float32(gas_level) > V, np.float32(-990), content)
        val = np.where(q > wall, np.float32(rng.uniform(60, 90)), val)
        self.paint(sl, q < 1, val, where=self.cav3)

    def gallbladder(self):
        rng, g = self.rng, self.g
        if rng.random() >= self.p.gallbladder_probability:
            return
        c = (
            self.cu - rng.uniform(0.08, 0.2) * self.A,
            self.cv - rng.uniform(0.3, 0.45) * self.Ba,
            self.w_bot + rng.uniform(0.2, 0.4) * self.Lz,
        )
        box = self.ellipsoid(
            c,
            (rng.uniform(11, 16) * g, rng.uniform(14, 20) * g, rng.uniform(25, 40) * g),
            angle=rng.uniform(-0.6, 0.2),
            deform=0.08,
        )
        if box:
            sl, q, *_ = box
            val = np.where(q > 0.85, np.float32(rng.uniform(40, 70)), np.float32(rng.uniform(0, 25)))
            self.paint(sl, q < 1, val, where=self.cav3)

    def pancreas(self):
        """Soft-tissue band in front of the aorta (a liver-like HU confounder outside the liver)."""
        rng, g = self.rng, self.g
        c = (
            self.spine_cu + rng.uniform(0.05, 0.25) * self.A,
            self.ao[1] - self.r_ao - rng.uniform(12, 20) * g,
            self.w_bot + rng.uniform(0.25, 0.45) * self.Lz,
        )
        box = self.ellipsoid(
            c,
            (rng.uniform(50, 65) * g, rng.uniform(10, 14) * g, rng.uniform(15, 22) * g),
            angle=-rng.uniform(0.1, 0.45),
            deform=0.15,
            deform_scale=15,
        )
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, np.float32(self.liver_hu - rng.uniform(0, 25)), where=self.cav3)

    def bowel(self):
        rng, g = self.rng, self.g
        free = self.cav3 & ~self.occ
        n_loops = int(rng.integers(22, 36))
        w_hi = self.w_bot + 0.55 * self.Lz
        for t in range(n_loops + 2):
            colon = t < 2
            if colon:  # hepatic flexure near the liver tip, then the transverse colon
                c = np.array(
                    [
                        self.cu - 0.55 * self.A if t == 0 else self.cu + rng.uniform(-0.2, 0.3) * self.A,
                        self.cv - (0.1 if t == 0 else 0.6) * self.Ba,
                        self.w_bot + rng.uniform(-0.05, 0.15) * self.Lz,
                    ]
                )
                r = rng.uniform(16, 24) * g
                ln = rng.uniform(40, 80) * g
                d = unit(
                    np.array([0.3, -1, 0.4]) if t == 0 else np.array([1.0, rng.normal(0, 0.2), rng.normal(0, 0.2)])
                )
            else:
                c = np.array(
                    [
                        self.cu + rng.uniform(-0.7, 0.75) * self.A,
                        self.cv + rng.uniform(-0.85 * self.Ba, 0.35 * self.Bp),
                        rng.uniform(0, w_hi),
                    ]
                )
                r = rng.uniform(8, 17) * g
                ln = rng.uniform(20, 60) * g
                d = unit(np.array([rng.normal(), rng.normal(), 0.5 * rng.normal()]))
            cap_o = self.capsule(c - d * ln / 2, c + d * ln / 2, r, r, shell=3 * g)
            if cap_o is None:
                continue
            csl, outer, inner = cap_o
            outer &= free[csl]
            if not outer.any():
                continue
            kind = rng.random()
            if colon or kind < 0.3:  # stool: mottled soft tissue with gas bubbles
                box = csl
                fld = smooth_field(rng, [self.u[box[0]], self.v[box[1]], self.w[box[2]]], 4 * g)
                lumen = np.where(fld > 0.9, np.float32(-950), np.float32(rng.uniform(-20, 40)) + 20 * fld)
            elif kind < 0.55:
                lumen = np.float32(rng.uniform(-1000, -900))
            else:
                lumen = np.float32(rng.uniform(0, 35))
            val = np.where(inner, lumen, np.float32(rng.uniform(55, 85)))
            self.paint(csl, outer, val)
            free[csl] &= ~outer
