"""The liver: a deformed union of ellipsoids with branching portal and hepatic veins (lesions: lesions.py)."""

from __future__ import annotations

import math

import numpy as np

from lits.data.synthetic.fields import largest_component, smooth_field, unit


class LiverMixin:
    """Phantom steps for the liver; they fill the ``liver`` label mask.

    ``liver_shape`` sets ``liver_box`` (the slices bounding the liver), which the vessels and
    lesions are drawn in; ``liver_vessels`` sets ``vessel_segs``, which lesions may lie against."""

    def liver_shape(self):
        rng, g = self.rng, self.g
        A, Ba, Bp, Lz, wt = self.A, self.Ba, self.Bp, self.Lz, self.w_top
        B = 0.5 * (Ba + Bp)

        def jit(x, r=0.1):
            return x * (1 + rng.uniform(-r, r))

        comps = [  # (u, v, w), (a, b, c): right lobe, its inferior tip, medial segment, left lobe, caudate
            (
                (self.cu - jit(0.48 * A), self.cv + jit(0.02 * B, 1), wt - jit(0.40 * Lz)),
                (jit(0.56 * A), jit(0.92 * B), jit(0.52 * Lz)),
            ),
            (
                (self.cu - jit(0.62 * A), self.cv + jit(0.12 * B), wt - jit(0.74 * Lz)),
                (jit(0.33 * A), jit(0.50 * B), jit(0.27 * Lz)),
            ),
            (
                (self.cu - jit(0.08 * A), self.cv - jit(0.38 * B), wt - jit(0.42 * Lz)),
                (jit(0.30 * A), jit(0.42 * B), jit(0.32 * Lz)),
            ),
            (
                (self.cu + jit(0.18 * A, 0.4), self.cv - jit(0.50 * B), wt - jit(0.30 * Lz)),
                (jit(0.46 * A, 0.25), jit(0.32 * B), jit(0.22 * Lz)),
            ),
            (
                (self.cu - jit(0.06 * A), self.cv + jit(0.22 * B), wt - jit(0.35 * Lz)),
                (jit(0.16 * A), jit(0.22 * B), jit(0.22 * Lz)),
            ),
        ]
        lo = np.min([np.array(c) - np.array(a) for c, a in comps], axis=0) - 10 * g
        hi = np.max([np.array(c) + np.array(a) for c, a in comps], axis=0) + 10 * g
        box = self.crop(lo, hi)
        sl, U, V, W = box
        q = None
        for c, a in comps:
            qi = (
                ((U - np.float32(c[0])) / np.float32(a[0])) ** 2
                + ((V - np.float32(c[1])) / np.float32(a[1])) ** 2
                + ((W - np.float32(c[2])) / np.float32(a[2])) ** 2
            )
            q = qi if q is None else np.minimum(q, qi)
        coords = (U.ravel(), V.ravel(), W.ravel())
        f = 0.7 * smooth_field(rng, coords, 45 * g) + 0.3 * smooth_field(rng, coords, 20 * g)
        q = q * (1 + np.float32(rng.uniform(0.15, 0.28)) * f)
        k0, k1 = sl[2].start, sl[2].stop
        zok = np.zeros(k1 - k0, dtype=bool)  # hard guarantee of liver-free end slices
        ks = np.arange(k0, k1)
        zok[(ks >= self.m_lo) & (ks <= self.nz - 1 - self.m_hi)] = True
        below_dome = (self.dome[sl[0], sl[1]][:, :, None] - np.float32(5 * g)) > W
        m = (q < 1) & self.cav3[sl] & ~self.occ[sl] & below_dome & zok[None, None, :]
        m = largest_component(m)
        # parenchyma with a faint low-frequency mottle
        val = np.float32(self.liver_hu) + np.float32(4.0) * smooth_field(rng, coords, 12 * g)
        np.copyto(self.img[sl], val, where=m)
        self.liver[sl] = m
        self.occ[sl] |= m
        self.liver_box = sl

    def liver_vessels(self):
        rng, g = self.rng, self.g
        vhu = self.liver_hu + rng.uniform(*self.phase.vessel_contrast_hu)
        segs = []
        sl = self.liver_box
        lm = self.liver

        def grow(start, direction, length, radius, depth):
            stack = [(np.asarray(start, float), unit(np.asarray(direction, float)), length, radius, depth)]
            while stack:
                s0, d, ln, r, dep = stack.pop()
                end = s0 + d * ln
                tries = 0
                while not self.inside(lm, end) and tries < 2:
                    ln *= 0.55
                    end = s0 + d * ln
                    tries += 1
                if not self.inside(lm, end):
                    continue
                segs.append((s0, end, r, r * 0.85))
                if dep == 0 or r * 0.72 < 1.1 * g:
                    continue
                perp = unit(np.cross(d, rng.normal(size=3)))
                for sgn in (-1.0, 1.0):
                    ang = rng.uniform(0.35, 0.75)
                    nd = unit(math.cos(ang) * d + sgn * math.sin(ang) * perp + rng.normal(0, 0.1, 3))
                    stack.append((end, nd, ln * rng.uniform(0.65, 0.85), r * rng.uniform(0.65, 0.78), dep - 1))

        # portal vein: enters at the hilum (inferior-medial), branches right-lateral and left-anterior
        hilum = np.array([self.cu - 0.18 * self.A, self.cv + 0.05 * self.Bp, self.w_top - 0.58 * self.Lz])
        if not self.inside(lm, hilum):
            idx = np.argwhere(lm[sl])
            if len(idx):
                pick = idx[rng.integers(len(idx))]
                hilum = np.array(
                    [self.u[pick[0] + sl[0].start], self.v[pick[1] + sl[1].start], self.w[pick[2] + sl[2].start]],
                    dtype=float,
                )
        rp = rng.uniform(6, 8) * g
        grow(hilum, (-1.0, rng.normal(0, 0.3), rng.uniform(0.0, 0.5)), 32 * g, rp, 4)
        grow(hilum, (0.8, -0.8, rng.uniform(0.1, 0.5)), 30 * g, rp * 0.85, 3)
        # hepatic veins: converge on the IVC below the dome, fan out anteriorly / laterally / inferiorly
        top = np.array([self.ivc[0], self.ivc[1] - 6 * g, self.w_top - 0.15 * self.Lz])
        for d in ((-1.0, -0.2, -0.45), (-0.2, -1.0, -0.4), (0.7, -0.9, -0.3)):
            grow(top + np.array(d) * 8 * g, d, 35 * g, rng.uniform(4.5, 6.0) * g, 3)
        for p0, p1, r0, r1 in segs:
            cap = self.capsule(p0, p1, r0, r1)
            if cap is None:
                continue
            csl, m = cap
            m &= lm[csl]
            np.copyto(self.img[csl], np.float32(vhu + rng.uniform(-8, 8)), where=m)
        # extrahepatic portal trunk running up into the hilum
        trunk0 = hilum + np.array([14 * g, 18 * g, -45 * g])
        cap = self.capsule(trunk0, hilum, rp, rp)
        if cap:
            csl, m = cap
            self.paint(csl, m, np.float32(vhu), where=self.cav3)
        self.vessel_segments = len(segs)
        self.vessel_segs = segs  # (p0, p1, r0, r1) in mm: lesions are placed against them
