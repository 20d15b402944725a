"""Fused CPU kernels (numba) for backward semi-Lagrangian extrapolation: forward and exact adjoint.

Written by hand because no library offers this: ``torch.nn.functional.grid_sample`` needs one call per velocity
sample and per lead time, each allocating full-size intermediates; here the whole trajectory of a pixel (all
lead times, all midpoint iterations, all velocity samples) stays in registers, which makes the CPU path several
times faster than a chain of ``grid_sample`` calls. The torch path in :mod:`skydiff.advection` is the reference
implementation (and the CUDA path); tests check both agree and that this adjoint is exact (gradcheck).

Recurrence per pixel x (pysteps.extrapolation.semilagrangian.extrapolate, midpoint rule):

    w <- V(x) * td[0]                         (initial increment: the velocity at the pixel, not divided)
    for each lead time t, for k in range(n_iter):
        w <- S(V, x + D - w/2) * c[t]         (velocity at the midpoint, c = td / n_iter if n_iter > 1 else td)
        D <- D - w
        w <- S(V, x + D) * c[t]               (first guess for the next sub-step)
    out[t] = F(x + D)                         (bilinear, outval outside [0, W-1] x [0, H-1])

S samples V bilinearly with clamped (edge-replicated) coordinates; F is sampled bilinearly without
extrapolation (pysteps' map_coordinates(order=1, mode="constant")). n_iter = 0 is forward Euler:
for t > 0: w <- S(V, x + D) * td[t]; then D <- D - w.
"""

from __future__ import annotations

import numba
import numpy as np

# no 'nnan'/'ninf' fast-math flags: NaN in the field must propagate like in pysteps. No 'contract' either: with it,
# the kernels freshly compiled in a process (the first one after an install, or after this file changed) and those
# loaded from numba's cache by every later process fused multiply-adds differently, so results differed in the last
# bits between the first and later runs (and 4D-Var's L-BFGS then took another path). No 'reassoc' either: on an
# AMD EPYC (AVX2 + FMA; the earlier sessions' CPU had AVX-512) the velocity adjoint of a freshly compiled
# sl_backward and of the cached one differed by 7e-14 with 'reassoc' + 'nsz' (numba 0.68.1), and agreed without
# 'reassoc'. Neither removal cost measurable time (545 x 547, 3 leads: forward ~0.018 s, backward ~0.05 s).
_FAST = {"arcp", "nsz"}
_JIT = dict(nogil=True, cache=True, fastmath=_FAST)
_ONE = np.uint64(1)


@numba.njit(inline="always", **{k: v for k, v in _JIT.items() if k != "cache"})
def _vel_sample(V, b, x, y, H, W):
    """Bilinear sample of both velocity components at (x, y), coordinates clamped to the grid."""
    x = min(max(x, 0.0), W - 1.0)
    y = min(max(y, 0.0), H - 1.0)
    # unsigned indices: numba then skips its negative-index wraparound on every load
    x0 = np.uint64(min(int(x), W - 2))
    y0 = np.uint64(min(int(y), H - 2))
    x1 = x0 + _ONE
    y1 = y0 + _ONE
    fx = x - x0
    fy = y - y0
    w00 = (1.0 - fx) * (1.0 - fy)
    w01 = fx * (1.0 - fy)
    w10 = (1.0 - fx) * fy
    w11 = fx * fy
    su = w00 * V[b, 0, y0, x0] + w01 * V[b, 0, y0, x1] + w10 * V[b, 0, y1, x0] + w11 * V[b, 0, y1, x1]
    sv = w00 * V[b, 1, y0, x0] + w01 * V[b, 1, y0, x1] + w10 * V[b, 1, y1, x0] + w11 * V[b, 1, y1, x1]
    return su, sv


@numba.njit(parallel=True, **_JIT)
def sl_forward(F, V, td, cstep, n_iter, outval, edge, out):
    """F (B,C,H,W), V (B,2,H,W), td (T,), cstep (T,) -> out (B,T,C,H,W).

    ``edge``: departure points outside the grid take the nearest edge value instead of ``outval``.

    Loops run lead time outside, pixels of a row inside: each pixel's trajectory is a serial chain of dependent
    samples (latency-bound), so advancing a whole row one sub-step at a time lets the CPU overlap the chains.
    """
    B, C, H, W = F.shape
    T = td.shape[0]
    for r in numba.prange(B * H):
        b = r // H
        i = r % H
        Dx = np.zeros(W)
        Dy = np.zeros(W)
        wx = np.empty(W)
        wy = np.empty(W)
        for j in range(W):
            wx[j] = V[b, 0, i, j] * td[0]
            wy[j] = V[b, 1, i, j] * td[0]
        for t in range(T):
            c = cstep[t]
            if n_iter > 0:
                for _k in range(n_iter):
                    if t < T - 1 or _k < n_iter - 1:
                        for j in range(W):
                            su, sv = _vel_sample(V, b, j + Dx[j] - 0.5 * wx[j], i + Dy[j] - 0.5 * wy[j], H, W)
                            dx = Dx[j] - su * c
                            dy = Dy[j] - sv * c
                            Dx[j] = dx
                            Dy[j] = dy
                            su, sv = _vel_sample(V, b, j + dx, i + dy, H, W)
                            wx[j] = su * c
                            wy[j] = sv * c
                    else:  # the end-point sample only seeds the next sub-step: the very last one is never used
                        for j in range(W):
                            su, sv = _vel_sample(V, b, j + Dx[j] - 0.5 * wx[j], i + Dy[j] - 0.5 * wy[j], H, W)
                            Dx[j] -= su * c
                            Dy[j] -= sv * c
            else:
                if t > 0:
                    for j in range(W):
                        su, sv = _vel_sample(V, b, j + Dx[j], i + Dy[j], H, W)
                        wx[j] = su * c
                        wy[j] = sv * c
                for j in range(W):
                    Dx[j] -= wx[j]
                    Dy[j] -= wy[j]
            for j in range(W):
                # branch-free: sample at the clamped point, then select outval outside the grid
                x = j + Dx[j]
                y = i + Dy[j]
                inside = edge | ((x >= 0.0) & (x <= W - 1.0) & (y >= 0.0) & (y <= H - 1.0))
                x = min(max(x, 0.0), W - 1.0)
                y = min(max(y, 0.0), H - 1.0)
                x0 = np.uint64(min(int(x), W - 2))  # unsigned: numba skips negative-index wraparound
                y0 = np.uint64(min(int(y), H - 2))
                x1 = x0 + _ONE
                y1 = y0 + _ONE
                fx = x - x0
                fy = y - y0
                w00 = (1.0 - fx) * (1.0 - fy)
                w01 = fx * (1.0 - fy)
                w10 = (1.0 - fx) * fy
                w11 = fx * fy
                for ch in range(C):
                    v = (
                        w00 * F[b, ch, y0, x0]
                        + w01 * F[b, ch, y0, x1]
                        + w10 * F[b, ch, y1, x0]
                        + w11 * F[b, ch, y1, x1]
                    )
                    out[b, t, ch, i, j] = v if inside else outval


@numba.njit(inline="always", **{k: v for k, v in _JIT.items() if k != "cache"})
def _vel_adjoint(V, gV, b, x, y, H, W, gsu, gsv):
    """Adjoint of _vel_sample: scatter (gsu, gsv) into gV and return d/d(x, y) of <g, S(x, y)>.

    Branch-free: a coordinate clamped at the edge has zero derivative (factor kx / ky).
    """
    kx = 1.0 if (x >= 0.0) & (x <= W - 1.0) else 0.0
    ky = 1.0 if (y >= 0.0) & (y <= H - 1.0) else 0.0
    x = min(max(x, 0.0), W - 1.0)
    y = min(max(y, 0.0), H - 1.0)
    x0 = np.uint64(min(int(x), W - 2))  # unsigned: numba skips negative-index wraparound
    y0 = np.uint64(min(int(y), H - 2))
    x1 = x0 + _ONE
    y1 = y0 + _ONE
    fx = x - x0
    fy = y - y0
    u00 = V[b, 0, y0, x0]
    u01 = V[b, 0, y0, x1]
    u10 = V[b, 0, y1, x0]
    u11 = V[b, 0, y1, x1]
    v00 = V[b, 1, y0, x0]
    v01 = V[b, 1, y0, x1]
    v10 = V[b, 1, y1, x0]
    v11 = V[b, 1, y1, x1]
    gx = kx * (gsu * ((1.0 - fy) * (u01 - u00) + fy * (u11 - u10)) + gsv * ((1.0 - fy) * (v01 - v00) + fy * (v11 - v10)))
    gy = ky * (gsu * ((1.0 - fx) * (u10 - u00) + fx * (u11 - u01)) + gsv * ((1.0 - fx) * (v10 - v00) + fx * (v11 - v01)))
    w00 = (1.0 - fx) * (1.0 - fy)
    w01 = fx * (1.0 - fy)
    w10 = (1.0 - fx) * fy
    w11 = fx * fy
    gV[b, 0, y0, x0] += w00 * gsu
    gV[b, 0, y0, x1] += w01 * gsu
    gV[b, 0, y1, x0] += w10 * gsu
    gV[b, 0, y1, x1] += w11 * gsu
    gV[b, 1, y0, x0] += w00 * gsv
    gV[b, 1, y0, x1] += w01 * gsv
    gV[b, 1, y1, x0] += w10 * gsv
    gV[b, 1, y1, x1] += w11 * gsv
    return gx, gy


@numba.njit(parallel=True, **_JIT)
def sl_backward(F, V, td, cstep, n_iter, edge, gout, need_gF, need_gV, gF_parts, gV_parts):
    """Exact adjoint of sl_forward.

    gout (B,T,C,H,W) -> gF_parts (P,B,C,H,W), gV_parts (P,B,2,H,W): one accumulation buffer per chunk of rows
    (P chunks run in parallel without write conflicts); the caller sums over P. Each row's forward trajectory
    is recomputed (saving the state before every sub-step), then swept in reverse, a whole row at a time.
    Conditions are hoisted out of the pixel loops (a branch inside them costs ~30 %).
    """
    B, C, H, W = F.shape
    T = td.shape[0]
    P = gF_parts.shape[0]
    nrows = B * H
    K = n_iter if n_iter > 0 else 1
    for p in numba.prange(P):
        gF = gF_parts[p]
        gV = gV_parts[p]
        r0 = (nrows * p) // P
        r1 = (nrows * (p + 1)) // P
        Dst = np.empty((T * K + 1, 2, W))  # displacement before each sub-step (and after the last)
        Wst = np.empty((T * K, 2, W))  # increment w before each sub-step
        Dx = np.empty(W)
        Dy = np.empty(W)
        wx = np.empty(W)
        wy = np.empty(W)
        gDx = np.empty(W)
        gDy = np.empty(W)
        gwx = np.empty(W)
        gwy = np.empty(W)
        for r in range(r0, r1):
            b = r // H
            i = r % H
            # ---- recompute the forward trajectories of the row
            for j in range(W):
                Dx[j] = 0.0
                Dy[j] = 0.0
                wx[j] = V[b, 0, i, j] * td[0]
                wy[j] = V[b, 1, i, j] * td[0]
            for t in range(T):
                c = cstep[t]
                if n_iter > 0:
                    for k in range(n_iter):
                        n = t * K + k
                        for j in range(W):
                            Dst[n, 0, j] = Dx[j]
                            Dst[n, 1, j] = Dy[j]
                            Wst[n, 0, j] = wx[j]
                            Wst[n, 1, j] = wy[j]
                            su, sv = _vel_sample(V, b, j + Dx[j] - 0.5 * wx[j], i + Dy[j] - 0.5 * wy[j], H, W)
                            Dx[j] -= su * c
                            Dy[j] -= sv * c
                        if t < T - 1 or k < n_iter - 1:  # the very last end-point sample is never used
                            for j in range(W):
                                su, sv = _vel_sample(V, b, j + Dx[j], i + Dy[j], H, W)
                                wx[j] = su * c
                                wy[j] = sv * c
                else:
                    for j in range(W):
                        Dst[t, 0, j] = Dx[j]
                        Dst[t, 1, j] = Dy[j]
                    if t > 0:
                        for j in range(W):
                            su, sv = _vel_sample(V, b, j + Dx[j], i + Dy[j], H, W)
                            wx[j] = su * c
                            wy[j] = sv * c
                    for j in range(W):
                        Dx[j] -= wx[j]
                        Dy[j] -= wy[j]
            for j in range(W):
                Dst[T * K, 0, j] = Dx[j]
                Dst[T * K, 1, j] = Dy[j]
            # ---- reverse sweep
            for j in range(W):
                gDx[j] = 0.0
                gDy[j] = 0.0
                gwx[j] = 0.0
                gwy[j] = 0.0
            for t in range(T - 1, -1, -1):
                c = cstep[t]
                # output of lead t = F sampled at x + D_t (outval outside the grid: no gradient there)
                for j in range(W):
                    x = j + Dst[(t + 1) * K, 0, j]
                    y = i + Dst[(t + 1) * K, 1, j]
                    kx = 1.0 if (x >= 0.0) & (x <= W - 1.0) else 0.0
                    ky = 1.0 if (y >= 0.0) & (y <= H - 1.0) else 0.0
                    # outval outside: no gradient at all; edge mode: value flows, position derivative is zero
                    # along a clamped axis
                    kin = 1.0 if edge else kx * ky
                    x = min(max(x, 0.0), W - 1.0)
                    y = min(max(y, 0.0), H - 1.0)
                    x0 = np.uint64(min(int(x), W - 2))  # unsigned: numba skips negative-index wraparound
                    y0 = np.uint64(min(int(y), H - 2))
                    x1 = x0 + _ONE
                    y1 = y0 + _ONE
                    fx = x - x0
                    fy = y - y0
                    ax = 0.0
                    ay = 0.0
                    for ch in range(C):
                        g = kin * gout[b, t, ch, i, j]
                        if need_gF:
                            gF[b, ch, y0, x0] += (1.0 - fx) * (1.0 - fy) * g
                            gF[b, ch, y0, x1] += fx * (1.0 - fy) * g
                            gF[b, ch, y1, x0] += (1.0 - fx) * fy * g
                            gF[b, ch, y1, x1] += fx * fy * g
                        f00 = F[b, ch, y0, x0]
                        f01 = F[b, ch, y0, x1]
                        f10 = F[b, ch, y1, x0]
                        f11 = F[b, ch, y1, x1]
                        ax += g * kx * ((1.0 - fy) * (f01 - f00) + fy * (f11 - f10))
                        ay += g * ky * ((1.0 - fx) * (f10 - f00) + fx * (f11 - f01))
                    gDx[j] += ax
                    gDy[j] += ay
                if not need_gV:
                    continue
                if n_iter > 0:
                    for k in range(n_iter - 1, -1, -1):
                        n = t * K + k
                        if t < T - 1 or k < n_iter - 1:
                            for j in range(W):
                                # w2 = c S(x + D_new), D_new = D_old - w1
                                gqx, gqy = _vel_adjoint(
                                    V, gV, b, j + Dst[n + 1, 0, j], i + Dst[n + 1, 1, j], H, W, gwx[j] * c, gwy[j] * c
                                )
                                # D_new = D_old - w1 ; w1 = c S(p) ; p = x + D_old - w_old / 2
                                ax = gDx[j] + gqx
                                ay = gDy[j] + gqy
                                gpx, gpy = _vel_adjoint(
                                    V, gV, b, j + Dst[n, 0, j] - 0.5 * Wst[n, 0, j], i + Dst[n, 1, j] - 0.5 * Wst[n, 1, j], H, W,
                                    -ax * c, -ay * c,
                                )
                                gDx[j] = ax + gpx
                                gDy[j] = ay + gpy
                                gwx[j] = -0.5 * gpx
                                gwy[j] = -0.5 * gpy
                        else:  # the very last end-point sample has no adjoint
                            for j in range(W):
                                ax = gDx[j]
                                ay = gDy[j]
                                gpx, gpy = _vel_adjoint(
                                    V, gV, b, j + Dst[n, 0, j] - 0.5 * Wst[n, 0, j], i + Dst[n, 1, j] - 0.5 * Wst[n, 1, j],
                                    H, W, -ax * c, -ay * c,
                                )
                                gDx[j] = ax + gpx
                                gDy[j] = ay + gpy
                                gwx[j] = -0.5 * gpx
                                gwy[j] = -0.5 * gpy
                else:
                    # D_new = D_old - w ; w = c S(x + D_old) for t > 0
                    if t > 0:
                        for j in range(W):
                            ax = gwx[j] - gDx[j]
                            ay = gwy[j] - gDy[j]
                            gqx, gqy = _vel_adjoint(V, gV, b, j + Dst[t, 0, j], i + Dst[t, 1, j], H, W, ax * c, ay * c)
                            gDx[j] += gqx
                            gDy[j] += gqy
                            gwx[j] = 0.0
                            gwy[j] = 0.0
                    else:
                        for j in range(W):
                            gwx[j] -= gDx[j]
                            gwy[j] -= gDy[j]
            if need_gV:
                for j in range(W):
                    gV[b, 0, i, j] += gwx[j] * td[0]
                    gV[b, 1, i, j] += gwy[j] * td[0]


@numba.njit(parallel=True, nogil=True, cache=True)  # no fast-math: the sums keep numpy's order, bit for bit
def combine_parts(gF_parts, gV_parts, extra, out):
    """Sum sl_backward's buffers for one batch entry and add ``extra``; zero the buffers for the next call.

    gF_parts (P,1,C,H,W), gV_parts (P,1,2,H,W), extra (C,H,W) -> out (C,H,W): ``sum_p gF`` (+ ``sum_p gV`` on the
    last two channels, the velocity) + ``extra``, summed in the order of ``gF.sum(0)[0]; g[C-2:] += gV.sum(0)[0];
    g += extra``. One pass instead of two reductions, three additions and two fills.
    """
    P, _, C, H, W = gF_parts.shape
    for r in numba.prange(C * H):
        c = r // H
        i = r % H
        vel = c >= C - 2
        for j in range(W):
            s = gF_parts[0, 0, c, i, j]
            gF_parts[0, 0, c, i, j] = 0.0
            for p in range(1, P):
                s += gF_parts[p, 0, c, i, j]
                gF_parts[p, 0, c, i, j] = 0.0
            if vel:
                v = gV_parts[0, 0, c - C + 2, i, j]
                gV_parts[0, 0, c - C + 2, i, j] = 0.0
                for p in range(1, P):
                    v += gV_parts[p, 0, c - C + 2, i, j]
                    gV_parts[p, 0, c - C + 2, i, j] = 0.0
                s += v
            out[c, i, j] = s + extra[c, i, j]


def n_parts() -> int:
    """Number of accumulation buffers for the backward pass (one per numba thread)."""
    return max(1, int(numba.get_num_threads()))


def as_c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)
