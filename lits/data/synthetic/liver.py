"""The liver: a deformed union of ellipsoids with branching portal and hepatic veins and hypodense tumours."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from lits.data.synthetic.fields import largest_component, smooth_field, unit


class LiverMixin:
    """Phantom steps for the liver; they fill the ``liver`` and ``tumor`` label masks.

    ``liver_shape`` sets ``liver_box`` (the slices bounding the liver), which the vessels and
    tumours are drawn in; tumours are clipped to the liver, so label 2 lies inside label 1."""

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
        vhu = self.liver_hu + rng.uniform(*self.p.vessel_contrast_hu)
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

    def tumors(self):
        rng, g, p = self.rng, self.g, self.p
        if p.max_tumors == 0 or rng.random() < p.tumor_free_fraction:
            self.n_tumors = 0
            return
        n = int(min(p.max_tumors, rng.geometric(0.33)))
        self.n_tumors = n
        sl = self.liver_box
        lm = self.liver[sl]
        # liver depth map (mm) on a 2x in-plane subsampled grid, to place tumour centres inside
        f = 2 if self.n >= 128 else 1
        sub = lm[::f, ::f, :]
        depth = ndimage.distance_transform_edt(sub, sampling=(f * self.s, f * self.s, self.sz))
        ks = np.nonzero(lm.any(axis=(0, 1)))[0]
        if len(ks) == 0:
            self.n_tumors = 0
            return
        k_lo, k_hi = ks[0], ks[-1]
        span = k_hi - k_lo + 1
        band = max(1, int(round(p.tumor_band * span)))
        b0 = k_lo + int(rng.integers(0, max(1, span - band + 1)))
        lo_mm, hi_mm = p.tumor_diameter_range_mm
        for t in range(n):
            if t == 0:
                med = p.tumor_diameter_mm
            elif rng.random() < p.small_tumor_fraction:
                med = p.small_tumor_diameter_mm
            else:
                med = p.satellite_diameter_mm
            diam = float(np.clip(med * math.exp(rng.normal(0, p.tumor_diameter_sigma)), lo_mm, hi_mm)) * g
            R = diam / 2
            dband = depth[:, :, b0 : b0 + band]
            dmax = float(dband.max())
            if dmax <= 0:
                break
            need = min(0.7 * R, 0.85 * dmax)
            cand = np.argwhere(dband >= need)
            pick = cand[rng.integers(len(cand))]
            i, j, k = pick[0] * f + sl[0].start, pick[1] * f + sl[1].start, pick[2] + b0 + sl[2].start
            R = min(R, 1.2 * float(depth[pick[0], pick[1], pick[2] + b0]) + 2 * g)
            self._one_tumor(np.array([self.u[i], self.v[j], self.w[k]], dtype=float), R)

    def _one_tumor(self, c, R):
        rng, g, p = self.rng, self.g, self.p
        spheres = [(c, R)]
        for _ in range(int(rng.integers(0, 4))):
            d = unit(rng.normal(size=3))
            spheres.append((c + d * R * rng.uniform(0.45, 0.85), R * rng.uniform(0.35, 0.7)))
        amp = rng.uniform(0.04, 0.18)
        ext = 1.7 * R * (1 + 2 * amp) + 2 * g
        box = self.crop(c - ext, c + ext)
        if box is None:
            return
        sl, U, V, W = box
        q = None
        for cc, r in spheres:
            qi = np.sqrt(
                (U - np.float32(cc[0])) ** 2 + (V - np.float32(cc[1])) ** 2 + (W - np.float32(cc[2])) ** 2
            ) / np.float32(r)
            q = qi if q is None else np.minimum(q, qi)
        coords = (U.ravel(), V.ravel(), W.ravel())
        q = q * (1 + np.float32(amp) * smooth_field(rng, coords, max(0.6 * R, 3 * g)))
        lm = self.liver[sl]
        inside = (q < 1) & lm
        if not inside.any():
            return
        if rng.random() < p.low_contrast_fraction:
            delta = rng.uniform(*p.low_contrast_hu)
        else:
            delta = rng.uniform(*p.tumor_contrast_hu)
        T = np.float32(self.liver_hu - delta) + np.float32(0.2 * delta) * smooth_field(rng, coords, max(0.4 * R, 3 * g))
        if 12 * g < R and rng.random() < 0.4:  # necrotic core
            T = T - np.float32(rng.uniform(15, 40)) * np.clip((0.6 - q) / 0.2, 0, 1)
        if rng.random() < 0.2:  # enhancing rim
            T = T + np.float32(rng.uniform(15, 35) + delta * 0.5) * np.clip(1 - np.abs(q - 0.88) / 0.1, 0, 1)
        # soft edge: half contrast at the label boundary, fading out 15 % beyond it (inside the liver)
        wgt = np.clip((1.15 - q) / 0.3, 0, 1) * lm
        cur = self.img[sl]
        cur += wgt * (T - cur)
        self.tumor[sl] |= inside
