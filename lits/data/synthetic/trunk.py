"""The trunk: body outline with fat and muscle wall, spine, aorta and IVC, retroperitoneal fat and crura, ribs."""

from __future__ import annotations

import math

import numpy as np

from lits.data.synthetic.fields import rotating_field, segment_mask2d, smooth_field


class TrunkMixin:
    """Phantom steps for the trunk; they read the layout `Phantom.plan` drew.

    ``body`` sets the body, muscle-wall and cavity masks (``body3``, ``cav3``) and the fat and muscle
    HU; ``spine`` the vertebral position (``spine_cu``, ``v_vb``, ``vb_b``); ``great_vessels`` the
    aorta and IVC (``ao``, ``r_ao``, ``ao_hu``, ``ivc``): later organs are placed against these."""

    def body(self):
        rng, g = self.rng, self.g
        du = (self.u[:, None] - np.float32(self.cu)) / np.float32(self.a_body)
        dv = self.v[None, :] - np.float32(self.cv)
        post = dv > 0
        dvn = np.where(post, dv / np.float32(self.b_post), dv / np.float32(self.b_ant))
        p_post = np.float32(rng.uniform(2.3, 3.0))
        rho_a = np.sqrt(du * du + dvn * dvn)
        adu, adv = np.abs(du), np.abs(dvn)
        rho_p = (adu**p_post + adv**p_post) ** (1 / p_post)
        rho = np.where(post, rho_p, rho_a)
        theta = np.arctan2(dvn, du)
        pert = np.ones_like(rho)
        for k in (2, 3, 4, 5):
            pert += np.float32(rng.normal(0, 0.012)) * np.cos(k * theta + np.float32(rng.uniform(0, 2 * np.pi)))
        rho = rho / pert
        sin_t = dvn / np.maximum(np.sqrt(du * du + dvn * dvn), 1e-6)
        anterior = np.clip(-sin_t, 0, 1)
        lateral = np.clip(np.abs(du) / np.maximum(np.sqrt(du * du + dvn * dvn), 1e-6), 0, 1)
        t_fat = self.t_fat + self.t_fat_ant * anterior + 0.02 * lateral * anterior
        rho_m = rho / (1 - t_fat)
        rho_c = rho / (1 - t_fat - self.t_musc)
        # smooth scale along z: a slightly larger chest at the top
        zf = smooth_field(rng, (self.w,), 80.0 * g)
        s = (1.0 + 0.025 * zf + 0.03 * (self.w - self.zext / 2) / max(self.zext, 1.0)).astype(np.float32)
        self.body3 = rho[:, :, None] <= s
        musc3 = rho_m[:, :, None] <= s
        self.cav3 = rho_c[:, :, None] <= s
        fat_hu = np.float32(rng.uniform(-115, -90))
        musc_hu = np.float32(rng.uniform(40, 60))
        img = self.img
        img[self.body3] = fat_hu
        img[musc3] = musc_hu
        # visceral fat with mesenteric density variation
        visc = rotating_field(rng, self.u, self.v, self.w, 10.0 * g)
        visc *= np.float32(18)
        visc += np.float32(rng.uniform(-105, -80))
        np.copyto(img, visc, where=self.cav3)
        self.fat_hu, self.musc_hu = float(fat_hu), float(musc_hu)
        self.rho, self.s_z = rho, s

    def spine(self):
        rng, g = self.rng, self.g
        cu = self.cu + rng.normal(0, 3) * g
        self.vb_a, self.vb_b = rng.uniform(19, 24) * g, rng.uniform(15, 18) * g
        self.v_vb = self.cv + self.Bp - self.vb_b - rng.uniform(8, 14) * g
        v_canal = self.v_vb + self.vb_b + 9 * g
        # paraspinal muscles (in the posterior wall)
        for side in (-1, 1):
            box = self.ellipsoid(
                (cu + side * 33 * g, v_canal + 16 * g, self.zext / 2),
                (27 * g, 24 * g, 10 * self.zext),
                angle=side * 0.15,
            )
            if box:
                sl, q, *_ = box
                self.paint(sl, q < 1, self.musc_hu + rng.uniform(-5, 5), where=self.body3)
        # discs: vertebral height ~ 27 mm + disc ~ 8 mm
        period = rng.uniform(32, 37) * g
        disc = ((self.w - rng.uniform(0, period)) % period) < 8 * g
        box = self.ellipsoid((cu, self.v_vb, self.zext / 2), (self.vb_a, self.vb_b, 10 * self.zext))
        if box:
            sl, q, *_ = box
            cort = np.float32(rng.uniform(450, 700))
            canc = np.float32(rng.uniform(160, 260))
            val = np.where(q < 0.78, canc, cort)
            val = np.where(disc[sl[2]][None, None, :], np.float32(rng.uniform(70, 100)), val)
            self.paint(sl, q < 1, val)
        # spinal canal (CSF) and the bony ring / spinous process behind it
        box = self.ellipsoid((cu, v_canal, self.zext / 2), (13 * g, 12 * g, 10 * self.zext))
        if box:
            sl, q, *_ = box
            ring = np.where(q < 0.68, np.float32(rng.uniform(5, 20)), np.float32(rng.uniform(350, 550)))
            self.paint(sl, q < 1, ring)
        spin_end = self.cv + self.b_post * (1 - self.t_fat) - 14 * g
        for p0, p1, r in (
            ((cu, v_canal + 8 * g, 0), (cu, spin_end, 0), 4.5 * g),
            ((cu - 9 * g, v_canal + 3 * g, 0), (cu - 36 * g, v_canal + 2 * g, 0), 4.0 * g),
            ((cu + 9 * g, v_canal + 3 * g, 0), (cu + 36 * g, v_canal + 2 * g, 0), 4.0 * g),
        ):
            # posterior elements are present only over part of each vertebral period
            box = self.crop(
                (min(p0[0], p1[0]) - r, min(p0[1], p1[1]) - r, 0),
                (max(p0[0], p1[0]) + r, max(p0[1], p1[1]) + r, self.zext),
            )
            if box is None:
                continue
            sl, U, V, W = box
            cap2 = segment_mask2d(U[:, :, 0], V[:, :, 0], p0, p1, r)
            present = ((self.w[sl[2]] - period * 0.3) % period) < 0.55 * period
            m = cap2[:, :, None] & present[None, None, :]
            self.paint(sl, m, np.float32(rng.uniform(350, 550)), where=self.body3)
        self.spine_cu, self.v_canal = cu, v_canal

    def great_vessels(self):
        rng, g = self.rng, self.g
        self.ao_hu = float(rng.uniform(*self.phase.aorta_hu))
        self.r_ao = r_ao = rng.uniform(9, 12.5) * g
        self.ao = (self.spine_cu + rng.uniform(8, 16) * g, self.v_vb - self.vb_b - r_ao - 2 * g)
        box = self.ellipsoid((self.ao[0], self.ao[1], self.zext / 2), (r_ao, r_ao, 10 * self.zext))
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, self.ao_hu)
        self.ivc = (self.spine_cu - rng.uniform(20, 28) * g, self.ao[1] - rng.uniform(2, 8) * g)
        self.ivc_hu = self.ao_hu - rng.uniform(*self.phase.ivc_below_aorta_hu)
        box = self.ellipsoid(
            (self.ivc[0], self.ivc[1], self.zext / 2),
            (rng.uniform(11, 15) * g, rng.uniform(8, 11) * g, 10 * self.zext),
            angle=0.3,
        )
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, self.ivc_hu)

    def retroperitoneum(self):
        """Fat and diaphragmatic crura around the aorta, in front of the spine: keeps the liver
        from wrapping round the aorta and vertebra (it may still hug the IVC)."""
        rng, g = self.rng, self.g
        # crura: a muscular collar round the aorta in the upper abdomen (below the dome)
        box = self.crop(
            (self.ao[0] - 22 * g, self.ao[1] - 22 * g, self.w_bot + 0.35 * self.Lz),
            (self.ao[0] + 22 * g, self.ao[1] + 22 * g, self.zext),
        )
        if box:
            sl, U, V, W = box
            r = np.sqrt((U - np.float32(self.ao[0])) ** 2 + (V - np.float32(self.ao[1])) ** 2)
            ring = (r > self.r_ao) & (r < self.r_ao + rng.uniform(4, 7) * g) & (-np.inf < W)
            self.paint(sl, ring & ~self.dome_above[sl], np.float32(self.musc_hu))
        c = (self.spine_cu + rng.uniform(6, 12) * g, self.v_vb - 0.3 * self.vb_b, self.zext / 2)
        box = self.ellipsoid(c, (rng.uniform(34, 40) * g, self.vb_b + 28 * g, 10 * self.zext))
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, np.float32(self.fat_hu + rng.uniform(0, 20)), where=self.cav3)

    def ribs(self):
        rng, g = self.rng, self.g
        spacing = rng.uniform(26, 32) * g
        drop = rng.uniform(55, 85) * g
        first = self.w_bot - rng.uniform(10, 30) * g
        tf = self.t_fat + 0.5 * self.t_musc
        ribs = []
        w0 = first
        idx = 0
        while w0 - 0 < self.zext + drop and w0 - drop < self.zext + 2 * spacing:
            psi1 = np.deg2rad(75 if idx == 0 else 95 if idx == 1 else rng.uniform(125, 140))
            ribs.append((w0, psi1))
            w0 += spacing
            idx += 1
        allowed = self.body3 & ~self.liver
        for side in (-1, 1):
            for w0, psi1 in ribs:
                psi0 = np.deg2rad(rng.uniform(22, 30))
                psis = np.linspace(psi0, psi1, 7)
                r = rng.uniform(4.0, 5.5) * g
                pts = []
                for ps in psis:
                    cps = math.cos(ps)
                    bb = self.b_post if cps > 0 else self.b_ant
                    frac = (ps - psi0) / (psi1 - psi0)
                    ww = w0 - drop * frac
                    sc = 1.0
                    pts.append(
                        (
                            self.cu + side * self.a_body * (1 - tf) * sc * math.sin(ps),
                            self.cv + bb * (1 - tf - (self.t_fat_ant if cps < 0 else 0) * -cps) * cps,
                            ww,
                        )
                    )
                for a, b in zip(pts[:-1], pts[1:]):
                    if max(a[2], b[2]) < -r or min(a[2], b[2]) > self.zext + r:
                        continue
                    cap = self.capsule(a, b, r, r, shell=1.6 * g)
                    if cap is None:
                        continue
                    csl, m, marrow = cap
                    val = np.where(marrow, np.float32(rng.uniform(180, 280)), np.float32(rng.uniform(450, 700)))
                    self.paint(csl, m, val, claim=False, where=allowed)
