"""Pseudo-precipitation (PP): a smooth, standard-normal stand-in for rain (Radhakrishnan et al., arXiv 2412.14620).

A per-grid-point, fully connected encoder maps total precipitation TP (mm/h; with VIMD for ERA5) to PP, a field
whose values follow N(0, 1); a fully connected decoder maps PP back to TP. Encoder and decoder are trained
together with a quantile (1-D Wasserstein) loss that makes the pooled PP values standard normal and a
reconstruction loss (:func:`train_pseudo`). The design choices below are skydiff's own (the paper publishes no
architecture or code).

Structure
---------
Pixels are **dry** when ``TP < dry_threshold`` (0.01 mm/h for the shipped ``pp-radar`` and ``pp-era5``; the
class default is 0.1 mm/h; a sub-threshold amount only shapes PP below the edge and decodes to 0) and **wet**
otherwise. With ``p_dry`` the dry fraction of the training data, the edge ``z_edge = Φ⁻¹(p_dry)`` is a fixed buffer and::

    wet:  PP = z_edge + g(x, v) − g(0, v),   x = ln(1 + TP/s) − ln(1 + thr/s) ≥ 0
    dry:  PP = z_edge − softplus(−h(d, v))

``g`` is increasing in ``x`` (monotone MLPs: positive weights, tanh, plus a positive linear skip), so **wet
PP ≥ z_edge > dry PP** always and the encoder is monotone in TP. ``v`` is VIMD (mm/h, positive = divergence,
scaled by its training standard deviation) for ``"pp-era5"``. For ``"pp-radar"`` ``d`` holds three dry features
of each dry pixel: ``ln(1 + D)`` with ``D`` the distance in pixels to the nearest wet pixel of the same field
(capped at ``dry_cap``; ``h`` decreases with it), the log10 Gaussian-weighted wet fraction around the pixel
(σ = 1.5 px; ``h`` increases with it) and the sub-threshold amount ``ln(1 + TP/s) / ln(1 + thr/s)`` (``h``
increases with it): dry pixels near much rain sit just below the edge, remote ones deep in the left tail.

**Dry pixels.** Many identical ``TP = 0`` values cannot map to a continuum deterministically from TP alone.
For ERA5 VIMD spreads them (convergence → PP closer to the edge), as in the paper. For radar (no VIMD) the
distance to rain spreads them: PP falls smoothly away from the rain edges, so the PP field is continuous where
rain starts and has no plateau. The dry features are the only ingredient that is not per grid point: they are
computed from the last two dimensions ``(H, W)`` of the input (a field or a stack of fields); ``dry_spread=False`` gives
a strictly per-grid-point encoder whose dry pixels all map to one point (then PP has an atom of mass ``p_dry``
and its KS distance to N(0, 1) is at least about ``p_dry / 2``).

Decoder::

    TP = 0                                       for PP < z_edge   (exact zeros: dry stays dry)
    TP = thr + s·expm1(G(PP) − G(z_edge))        for PP ≥ z_edge   (G increasing, so TP ≥ thr)

so ``decode(encode(tp))`` keeps the wet/dry pattern at ``dry_threshold`` exactly, by construction. ``G`` is
trained by the reconstruction loss and is only an approximate inverse of the encoder where training rain is rare: at
~100-150 mm/h (MRMS) ``pp-radar``'s learned decoder returns the peak tens of mm/h too low. For TP-only models
``decoder="inverse"`` (or ``decode(pp, method="inverse")``) decodes instead by inverting the wet encoder itself,
``x = g⁻¹(PP − z_edge + g(0))``, from a dense table of ``g`` (8 193 nodes over TP ≤ 1 000 mm/h, linear between
nodes, linearly extrapolated beyond), so that ``decode(encode(tp)) = tp`` for every wet pixel (to ~3e-5 relative with float32 weights).
Models that encode with VIMD keep the learned decoder (VIMD is not known where PP is decoded).

Both directions are differentiable torch code (float32/float64, device of the model), for any leading shape.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from .._compat import check_real, nan_filled
from ..errors import InputError, ShapeError, check_int, check_seed, positive_finite
from ..registry import register_model
from . import WEIGHTS_DIR

__all__ = ["PseudoPrecip", "train_pseudo", "dry_distance", "MonotoneMLP", "pp_report", "DECODERS"]

DECODERS = ("learned", "inverse")


class MonotoneMLP(nn.Module):
    """Scalar MLP that is monotone in chosen inputs.

    ``signs[i]`` = +1 (non-decreasing in input ``i``), −1 (non-increasing) or 0 (unconstrained). First-layer
    weights of constrained inputs are ``sign·softplus(w)``, deeper weights are ``softplus(w)`` (positive), the
    activation is tanh (increasing), and a linear skip ``Σ_i sign_i·softplus(a_i)·x_i`` over the constrained
    inputs keeps the output growing outside the training range.

    Input ``(N, n_in)`` → output ``(N,)``.
    """

    def __init__(self, signs: tuple[int, ...] | list[int], hidden: int = 32, depth: int = 2):
        super().__init__()
        self.register_buffer("signs", torch.tensor([float(s) for s in signs]))
        n_in = len(signs)
        # small positive weights at the start (softplus(-2) ≈ 0.13) so that the map starts gentle and unsaturated
        self.w_in = nn.Parameter(torch.randn(hidden, n_in) * 0.5)
        self.b_in = nn.Parameter(torch.linspace(-2.0, 2.0, hidden))
        self.w_hidden = nn.ParameterList([nn.Parameter(torch.randn(hidden, hidden) * 0.3 - 4.0)
                                          for _ in range(depth - 1)])
        self.b_hidden = nn.ParameterList([nn.Parameter(torch.zeros(hidden)) for _ in range(depth - 1)])
        self.w_out = nn.Parameter(torch.randn(hidden) * 0.3 - 3.0)
        self.skip = nn.Parameter(torch.zeros(n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.signs.to(x.dtype)
        constrained = s != 0
        w = torch.where(constrained, s * nn.functional.softplus(self.w_in), self.w_in)
        h = torch.tanh(x @ w.T + self.b_in)
        for wh, bh in zip(self.w_hidden, self.b_hidden):
            h = torch.tanh(h @ nn.functional.softplus(wh).T + bh)
        out = h @ nn.functional.softplus(self.w_out)
        return out + x @ (s * nn.functional.softplus(self.skip))


def dry_distance(wet: torch.Tensor, cap: float) -> torch.Tensor:
    """Distance in pixels from every pixel to the nearest wet pixel of its ``(H, W)`` field (0 on wet pixels).

    ``wet`` is a boolean ``(..., H, W)`` tensor; fields without a wet pixel get ``cap``; distances are capped at
    ``cap``. Euclidean distance transform of :func:`scipy.ndimage.distance_transform_edt` on the CPU (not
    differentiable: it depends only on the wet/dry pattern).
    """
    from scipy.ndimage import distance_transform_edt

    if wet.ndim < 2 or wet.numel() == 0:
        raise ShapeError(f"the dry-distance spread needs non-empty fields (..., H, W), got shape {tuple(wet.shape)}")
    h, w = wet.shape[-2:]
    m = wet.detach().cpu().numpy().reshape(-1, h, w)
    out = np.full(m.shape, float(cap), dtype=np.float64)
    has = m.reshape(m.shape[0], -1).any(1)
    if has.any():
        # one call for the whole stack: a huge spacing along the stack axis keeps the fields apart
        d = distance_transform_edt(~m[has], sampling=(1e6, 1.0, 1.0))
        out[has] = np.minimum(d, cap)
    return torch.from_numpy(out.reshape(wet.shape)).to(device=wet.device)


def wet_neighbourhood(wet: torch.Tensor, sigma: float = 1.5, radius: int = 12) -> torch.Tensor:
    """``log10`` of the Gaussian-weighted fraction of wet pixels around every pixel of its ``(H, W)`` field.

    A continuous companion of :func:`dry_distance` that separates dry pixels at the same distance to rain (more
    rain nearby → larger value). Gaussian of ``sigma`` pixels, truncated at ``radius`` pixels, reflecting
    borders; values are floored at ``1e-12`` (→ −12). Not differentiable (depends on the wet/dry pattern only).
    """
    from scipy.ndimage import gaussian_filter

    if wet.ndim < 2:
        raise ShapeError(f"the dry spread needs fields (..., H, W), got shape {tuple(wet.shape)}")
    h, w = wet.shape[-2:]
    m = wet.detach().cpu().numpy().reshape(-1, h, w).astype(np.float64)
    f = gaussian_filter(m, sigma=(0.0, float(sigma), float(sigma)), mode="reflect", truncate=radius / float(sigma))
    out = np.log10(np.maximum(f, 1e-12))
    return torch.from_numpy(out.reshape(wet.shape)).to(device=wet.device)


class PseudoPrecip(nn.Module):
    """Pseudo-precipitation encoder/decoder (see the module docstring).

    Parameters
    ----------
    use_vimd
        Encode TP together with VIMD (``"pp-era5"``); otherwise TP only (``"pp-radar"``).
    dry_spread
        Spread dry pixels by their distance to rain (TP-only model); ``False``: all dry pixels map to one point.
    dry_threshold
        TP (mm/h) below which a pixel is dry.
    p_dry
        Dry fraction of the training data (sets ``z_edge = Φ⁻¹(p_dry)``; :func:`train_pseudo` measures it).
    vimd_scale
        VIMD scale (mm/h), the training standard deviation.
    scale
        ``s`` of the TP transform ``ln(1 + TP/s)`` (mm/h).
    dry_cap
        Cap of the dry distance, pixels.
    hidden, depth
        Width and number of hidden layers of the three MLPs (g, h, G).
    name
        Registry name (``"pp-radar"`` or ``"pp-era5"``).
    decoder
        How :meth:`decode` maps PP back to TP by default: ``"learned"`` (the trained decoder ``G``) or
        ``"inverse"`` (exact inversion of the wet encoder; TP-only models).
    """

    model_name = "pp-radar"

    def __init__(
        self,
        use_vimd: bool = False,
        dry_spread: bool = True,
        dry_threshold: float = 0.1,
        p_dry: float = 0.5,
        vimd_scale: float = 1.0,
        scale: float = 1.0,
        dry_cap: float = 32.0,
        hidden: int = 32,
        depth: int = 2,
        name: str = "pp-radar",
        decoder: str = "learned",
    ):
        super().__init__()
        self.decoder = self._check_decoder(decoder, bool(use_vimd))
        if not 0.0 < float(p_dry) < 1.0:
            raise InputError(f"p_dry must lie in (0, 1), got {p_dry!r}")
        if not float(dry_threshold) > 0 or not float(scale) > 0 or not float(vimd_scale) > 0 or not float(dry_cap) >= 1:
            raise InputError("dry_threshold, scale and vimd_scale must be > 0 and dry_cap >= 1")
        if isinstance(hidden, bool) or int(hidden) < 1 or isinstance(depth, bool) or int(depth) < 1:
            raise InputError(f"hidden and depth must be positive integers, got {hidden!r}, {depth!r}")
        self.use_vimd, self.dry_spread = bool(use_vimd), bool(dry_spread)
        self.dry_threshold, self.scale, self.dry_cap = float(dry_threshold), float(scale), float(dry_cap)
        self.model_name = str(name)
        self.config = {
            "use_vimd": self.use_vimd, "dry_spread": self.dry_spread, "dry_threshold": self.dry_threshold,
            "p_dry": float(p_dry), "vimd_scale": float(vimd_scale), "scale": self.scale, "dry_cap": self.dry_cap,
            "hidden": int(hidden), "depth": int(depth), "name": self.model_name, "decoder": self.decoder,
        }
        self.register_buffer("z_edge", torch.tensor(float(torch.special.ndtri(torch.tensor(float(p_dry))))))
        self.register_buffer("vimd_scale", torch.tensor(float(vimd_scale)))
        v = [0] if self.use_vimd else []
        self.g = MonotoneMLP([1] + v, int(hidden), int(depth))  # wet: increasing in x
        # dry offset h: decreasing in the distance to rain, increasing in nearby rain and in the sub-threshold
        # amount (so dry pixels closer to rain get PP closer to the edge)
        self.h = MonotoneMLP(([-1, 1, 1] if self.dry_spread else []) + v or [1], int(hidden), int(depth))
        self.dec = MonotoneMLP([1], int(hidden), int(depth))  # decoder G, increasing in PP

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_decoder(method: Any, use_vimd: bool) -> str:
        if method not in DECODERS:
            raise InputError(f"decoder must be one of {', '.join(DECODERS)}, got {method!r}")
        if method == "inverse" and use_vimd:
            raise InputError("decoder='inverse' needs a TP-only model: this one encodes with VIMD, which is not known "
                             "where PP is decoded; use the learned decoder")
        return str(method)

    def _tensor(self, x: Any, name: str) -> torch.Tensor:
        p = next(self.parameters())
        if isinstance(x, torch.Tensor):
            t = x
            check_real(t, name)
        else:
            arr = np.asarray(nan_filled(x))
            check_real(arr, name)
            t = torch.as_tensor(arr.astype(np.float64))
        n_inf = int(torch.isinf(t).sum()) if t.is_floating_point() else 0
        if n_inf:
            raise InputError(f"{name} has {n_inf} infinite value(s); use NaN for no data")
        if not t.is_floating_point():
            t = t.to(torch.float64)
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(p.dtype)
        return t.to(p.device)

    def _run(self, net: MonotoneMLP, feats: list[torch.Tensor]) -> torch.Tensor:
        """Apply a scalar MLP to stacked per-pixel features; computed in the parameters' dtype (use
        ``model.double()`` for float64), returned in the features' dtype."""
        dtype = feats[0].dtype
        pdtype = net.w_in.dtype
        x = torch.stack([f.reshape(-1).to(pdtype) for f in feats], dim=-1)
        return net(x).reshape(feats[0].shape).to(dtype)

    def _sub(self, tz: torch.Tensor) -> torch.Tensor:
        """Sub-threshold amount of dry pixels, ``ln(1 + TP/s) / ln(1 + thr/s)`` in [0, 1) (0 on wet pixels)."""
        thr = self.dry_threshold
        return torch.where(tz < thr, torch.log1p(tz / self.scale) / math.log1p(thr / self.scale), torch.zeros_like(tz))

    # ------------------------------------------------------------------ API
    def encode(self, tp: Any, vimd: Any = None) -> torch.Tensor:
        """TP (mm/h, ≥ 0) [and VIMD in mm/h, positive = divergence] → PP, same shape (NaN where TP is NaN).

        Any leading shape; with ``dry_spread`` (``"pp-radar"``) the last two dimensions are the grid ``(H, W)``
        (the dry distance is measured there). Differentiable in TP (and VIMD).

        Raises :class:`~skydiff.errors.InputError` for negative TP, missing/unexpected VIMD or a VIMD of
        another shape.
        """
        if not isinstance(tp, torch.Tensor):  # a plain array: a result without a graph (nothing to differentiate in)
            with torch.no_grad():
                return self.encode(self._tensor(tp, "tp"), vimd)
        t = self._tensor(tp, "tp")
        nan = torch.isnan(t)
        if bool((t[~nan] < 0).any()):
            raise InputError(f"tp has {int((t[~nan] < 0).sum())} negative value(s): rain rates must be >= 0 mm/h")
        if self.use_vimd:
            if vimd is None:
                raise InputError(f"{self.model_name} encodes TP with VIMD: pass vimd (mm/h, positive = divergence)")
            v = self._tensor(vimd, "vimd").to(t.dtype)
            if v.shape != t.shape:
                raise ShapeError(f"vimd must have the shape of tp {tuple(t.shape)}, got {tuple(v.shape)}")
            vf = torch.nan_to_num(v / self.vimd_scale.to(t.dtype), nan=0.0)
            nan = nan | torch.isnan(v)
        elif vimd is not None:
            raise InputError(f"{self.model_name} is TP-only (radar): it takes no vimd")
        tz = torch.where(nan, torch.zeros((), dtype=t.dtype, device=t.device), t)
        thr = self.dry_threshold
        wet = tz >= thr
        x = torch.clamp(torch.log1p(tz / self.scale) - math.log1p(thr / self.scale), min=0.0)
        feats_g = [x] + ([vf] if self.use_vimd else [])
        feats_g0 = [torch.zeros_like(x)] + ([vf] if self.use_vimd else [])
        z_edge = self.z_edge.to(t.dtype)
        wet_pp = z_edge + self._run(self.g, feats_g) - self._run(self.g, feats_g0)
        feats_h = []
        if self.dry_spread:
            feats_h += [torch.log1p(dry_distance(wet, self.dry_cap)).to(t.dtype),
                        wet_neighbourhood(wet).to(t.dtype) / 6.0 + 1.0,
                        self._sub(tz)]
        if self.use_vimd:
            feats_h.append(vf)
        if not feats_h:
            feats_h = [torch.zeros_like(x)]
        dry_pp = z_edge - nn.functional.softplus(-self._run(self.h, feats_h))
        pp = torch.where(wet, wet_pp, dry_pp)
        return torch.where(nan, torch.full((), float("nan"), dtype=t.dtype, device=t.device), pp)

    def decode(self, pp: Any, method: str | None = None) -> torch.Tensor:
        """PP → TP in mm/h, same shape: exactly 0 below ``z_edge``, ``≥ dry_threshold`` above (NaN stays NaN).

        ``method``: ``"learned"`` (the trained decoder), ``"inverse"`` (exact inverse of the wet encoder, TP-only
        models) or None (the model's ``decoder`` setting). Differentiable in PP either way.
        """
        if not isinstance(pp, torch.Tensor):  # as encode: no graph for a plain array
            with torch.no_grad():
                return self.decode(self._tensor(pp, "pp"), method)
        method = self.decoder if method is None else self._check_decoder(method, self.use_vimd)
        z = self._tensor(pp, "pp")
        nan = torch.isnan(z)
        zz = torch.nan_to_num(z, nan=float(self.z_edge) - 1.0)
        z_edge = self.z_edge.to(z.dtype)
        if method == "inverse":
            tp = self._inverse_wet(zz - z_edge)
        else:
            u = self._run(self.dec, [zz]) - self._run(self.dec, [z_edge.expand_as(zz)])
            u = torch.clamp(u, min=0.0, max=30.0)  # monotone G: u ≥ 0 above the edge; the cap guards expm1
            tp = self.dry_threshold + self.scale * torch.expm1(u)
        out = torch.where(zz >= z_edge, tp, torch.zeros((), dtype=z.dtype, device=z.device))
        return torch.where(nan, torch.full((), float("nan"), dtype=z.dtype, device=z.device), out)

    def _inverse_wet(self, y: torch.Tensor) -> torch.Tensor:
        """TP (mm/h, ``≥ dry_threshold``) whose wet encoding is ``z_edge + y``, ``y = PP − z_edge`` (clamped at 0).

        ``g(x) − g(0)`` is tabulated on 8 193 nodes of ``x`` for TP in [thr, 1 000] mm/h and inverted by linear
        interpolation (``g`` is strictly increasing: positive weights, tanh and a positive linear skip); beyond
        the table the last segment is extended. Written here because the inverse of this particular monotone MLP
        is what no library provides; ``torch.searchsorted`` does the lookup.
        """
        s, thr = self.scale, self.dry_threshold
        x_top = math.log1p(1000.0 / s) - math.log1p(thr / s)
        xt = torch.linspace(0.0, x_top, 8193, dtype=torch.float64, device=y.device)
        gt = self._run(self.g, [xt]).to(torch.float64)
        yt = gt - gt[0]
        yy = torch.clamp(y.to(torch.float64), min=0.0)
        i = torch.clamp(torch.searchsorted(yt, yy.reshape(-1).contiguous()), 1, xt.numel() - 1).reshape(yy.shape)
        y0, y1, x0, x1 = yt[i - 1], yt[i], xt[i - 1], xt[i]
        x = x0 + (yy - y0) * (x1 - x0) / torch.clamp(y1 - y0, min=1e-300)
        x = torch.clamp(x, min=0.0, max=30.0)  # the cap guards exp, as in the learned decoder
        return ((s + thr) * torch.exp(x) - s).to(y.dtype)

    @torch.no_grad()
    def learned_decoder_limit(self, tol: float = 0.02, vimd_range: float = 3.0) -> float:
        """Rain rate (mm/h) from which the learned decoder saturates: on a grid of 0.5 … 1 000 mm/h (1 % steps), the
        rate just below the lowest one from which every round trip ``decode(encode(r))`` comes back more than
        ``tol`` (relative) too low; ``inf`` when the highest rate is decoded within ``tol``. For a VIMD model
        (whose wet encoding depends on VIMD, which the decoder does not see) the lowest such rate over VIMD within
        ``± vimd_range`` training standard deviations. Shipped models: ``pp-radar`` 48 mm/h (100 → 81 mm/h),
        ``pp-era5`` ~4.7 mm/h (10 → 6.9 mm/h); ``decoder="inverse"`` decodes a TP-only model exactly."""
        p = next(self.parameters())
        r = torch.exp(torch.linspace(math.log(0.5), math.log(1000.0), 700, dtype=torch.float64)).to(p.device)
        x = torch.log1p(r / self.scale) - math.log1p(self.dry_threshold / self.scale)
        limit = math.inf
        for v in torch.linspace(-vimd_range, vimd_range, 13).tolist() if self.use_vimd else [None]:
            feats = [] if v is None else [torch.full_like(x, v)]
            pp = (self.z_edge.to(r.dtype) + self._run(self.g, [x, *feats])
                  - self._run(self.g, [torch.zeros_like(x), *feats]))
            within = (self.decode(pp, method="learned") >= (1.0 - tol) * r).nonzero()
            if within.numel() == 0:
                return 0.0
            last = int(within[-1])
            if last < r.numel() - 1:
                limit = min(limit, float(r[last]))
        return limit

    def forward(self, tp: Any, vimd: Any = None) -> torch.Tensor:
        """``encode(tp, vimd)``."""
        return self.encode(tp, vimd)

    def extra_repr(self) -> str:
        return (f"name={self.model_name!r}, use_vimd={self.use_vimd}, dry_spread={self.dry_spread}, "
                f"dry_threshold={self.dry_threshold}, z_edge={float(self.z_edge):.3f}")


def _factory(name: str, defaults: dict[str, Any]) -> Any:
    def make(**config: Any) -> PseudoPrecip:
        return PseudoPrecip(**{**defaults, **config, "name": name})

    make.__name__ = name.replace("-", "_")
    make.__doc__ = f"The ``{name}`` pseudo-precipitation model: :class:`PseudoPrecip` with defaults {defaults}."
    return register_model(name, kind="downscale", weights_dir=WEIGHTS_DIR)(make)


pp_radar = _factory("pp-radar", {"use_vimd": False, "dry_spread": True, "dry_threshold": 0.1})
pp_era5 = _factory("pp-era5", {"use_vimd": True, "dry_spread": False, "dry_threshold": 0.01})


# ---------------------------------------------------------------------------------------------------- training
def _as_fields(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ShapeError(f"{name} is empty")
    return a


def _pixels(model: PseudoPrecip, tp: list[np.ndarray], vimd: list[np.ndarray] | None) -> dict[str, torch.Tensor]:
    """Per-pixel features of the training fields (dry distance computed per field), NaN pixels dropped."""
    feats: dict[str, list[np.ndarray]] = {"tp": [], "d": [], "v": []}
    for i, a in enumerate(tp):
        t = torch.from_numpy(a)
        ok = ~np.isnan(a)
        if vimd is not None:
            ok &= ~np.isnan(vimd[i])
        feats["tp"].append(a[ok])
        if model.dry_spread:
            wet = torch.nan_to_num(t, nan=0.0) >= model.dry_threshold
            d = torch.log1p(dry_distance(wet, model.dry_cap)).numpy()
            nb = wet_neighbourhood(wet).numpy() / 6.0 + 1.0
            sub = model._sub(torch.nan_to_num(t, nan=0.0)).numpy()
            feats["d"].append(np.stack([d[ok], nb[ok], sub[ok]], axis=-1))
        if vimd is not None:
            feats["v"].append(vimd[i][ok])
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in feats.items() if v}


def _encode_pixels(
    model: PseudoPrecip, tp: torch.Tensor, d: torch.Tensor | None, v: torch.Tensor | None
) -> torch.Tensor:
    """encode() on flat pixels with precomputed distances (the training path)."""
    thr = model.dry_threshold
    wet = tp >= thr
    x = torch.clamp(torch.log1p(tp / model.scale) - math.log1p(thr / model.scale), min=0.0)
    vf = None if v is None else v / model.vimd_scale
    z_edge = model.z_edge.to(tp.dtype)
    fg = [x] + ([vf] if vf is not None else [])
    fg0 = [torch.zeros_like(x)] + ([vf] if vf is not None else [])
    wet_pp = z_edge + model._run(model.g, fg) - model._run(model.g, fg0)
    fh = ([d[:, 0], d[:, 1], d[:, 2]] if d is not None else []) + ([vf] if vf is not None else [])
    if not fh:
        fh = [torch.zeros_like(x)]
    dry_pp = z_edge - nn.functional.softplus(-model._run(model.h, fh))
    return torch.where(wet, wet_pp, dry_pp)


def train_pseudo(
    tp: Any,
    vimd: Any = None,
    *,
    steps: int = 1500,
    batch: int = 32768,
    lr: float = 3e-3,
    rec_weight: float = 1.0,
    weights: Any = None,
    name: str | None = None,
    seed: int = 0,
    progress: bool = True,
    **config: Any,
) -> PseudoPrecip:
    """Train a :class:`PseudoPrecip` on TP (and VIMD) fields.

    Parameters
    ----------
    tp:
        TP in mm/h: an array/tensor of fields ``(..., H, W)`` or a list of such arrays (e.g. high- and
        low-resolution tiles, pooled); NaN pixels are ignored.
    vimd:
        VIMD in mm/h (positive = divergence), same shapes as ``tp``; gives a ``"pp-era5"``-type model. ``None``
        gives a TP-only (``"pp-radar"``-type) model.
    steps, batch, lr:
        Adam steps, pixels per step (drawn at random from all pixels), learning rate.
    rec_weight:
        Weight of the reconstruction loss (mean squared error of ``ln(1 + TP/s)`` over wet pixels) against the
        quantile loss (mean squared difference between the sorted batch PP and ``Φ⁻¹((i − ½)/N)``).
    weights:
        Sampling weight of each entry when ``tp`` is a list (e.g. ``[0.5, 0.5]`` for equal shares of high- and
        low-resolution pixels; default proportional to their pixel counts).
    name:
        ``"pp-radar"`` or ``"pp-era5"`` (default from whether ``vimd`` is given).
    seed, progress:
        Random seed; show a tqdm bar.
    **config:
        Other :class:`PseudoPrecip` options (``dry_threshold``, ``hidden``, ``dry_spread``, ...).

    Returns
    -------
    PseudoPrecip
        In eval mode, with ``model.history`` (loss per step) and ``model.train_stats``.
    """
    from tqdm.auto import tqdm

    tps = list(tp) if isinstance(tp, (list, tuple)) else [tp]
    tps = [_as_fields(a, "tp") for a in tps]
    vims = None
    if vimd is not None:
        vims = list(vimd) if isinstance(vimd, (list, tuple)) else [vimd]
        vims = [_as_fields(a, "vimd") for a in vims]
        if len(vims) != len(tps) or any(a.shape != b.shape for a, b in zip(tps, vims)):
            raise ShapeError("vimd must have the shapes of tp")
    for i, a in enumerate(tps):
        which = f"tp[{i}]" if len(tps) > 1 else "tp"
        if np.isinf(a).any():
            raise InputError(f"{which} has {int(np.isinf(a).sum())} infinite value(s); use NaN for no data")
        if np.isnan(a).all():
            raise InputError(f"{which} holds no data (all NaN): nothing to train on")
        if np.nanmin(a) < 0:
            raise InputError(f"{which} contains negative values: rain rates must be >= 0 mm/h")
    steps, batch = check_int("steps", steps, 1), check_int("batch", batch, 2)  # (2.7 steps trained 2)
    if not (positive_finite(lr) and (rec_weight == 0 or positive_finite(rec_weight))):
        raise InputError(f"lr must be a finite number > 0 and rec_weight one >= 0, got {lr!r}, {rec_weight!r}")
    name = name or ("pp-era5" if vims is not None else "pp-radar")
    if name not in ("pp-radar", "pp-era5"):  # (another registered name saved weights load_model could not read)
        raise InputError(f"name must be 'pp-radar' or 'pp-era5' (the pseudo-precipitation models), got {name!r}")
    if name == "pp-era5" and vims is None:  # (a TP-only model under the name edm-era5 reads with VIMD)
        raise InputError("name='pp-era5' needs vimd= (the ERA5 PP encodes TP with VIMD); train 'pp-radar' without")
    derived = sorted({"use_vimd", "p_dry", "vimd_scale"} & set(config))  # (they were overwritten without a word)
    if derived:
        raise InputError(f"{', '.join(derived)} are set from the data (vimd given or not, the dry share, the VIMD "
                         "spread), not options of train_pseudo")
    from inspect import signature

    unknown = sorted(set(config) - set(signature(PseudoPrecip).parameters))
    if unknown:  # (a bare TypeError)
        raise InputError(f"unknown PseudoPrecip option(s) {', '.join(unknown)}")
    defaults = {"pp-radar": {"use_vimd": False, "dry_spread": True, "dry_threshold": 0.1},
                "pp-era5": {"use_vimd": True, "dry_spread": False, "dry_threshold": 0.01}}.get(name, {})
    cfg = {**defaults, **config}
    cfg["use_vimd"] = vims is not None
    thr = float(cfg.get("dry_threshold", 0.1))
    pools = [np.concatenate([a[~np.isnan(a)].ravel()]) for a in tps]
    w = np.array([p.size for p in pools], np.float64) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(tps),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise InputError(f"weights must be {len(tps)} non-negative numbers, got {weights!r}")
    w = w / w.sum()
    p_dry = float(sum(wi * np.mean(p < thr) for wi, p in zip(w, pools)))
    cfg["p_dry"] = min(max(p_dry, 1e-4), 1 - 1e-4)
    if vims is not None:
        cfg["vimd_scale"] = float(np.nanstd(np.concatenate([v.ravel() for v in vims]))) or 1.0
    seed = check_seed(seed)
    torch.manual_seed(seed)
    model = PseudoPrecip(**cfg, name=name)
    px = [_pixels(model, [a], None if vims is None else [vims[i]]) for i, a in enumerate(tps)]
    gen = torch.Generator().manual_seed(int(seed))
    counts = np.random.default_rng(int(seed)).multinomial(int(batch), w, size=int(steps))
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, int(steps))
    history = []
    t0 = time.time()
    model.train()
    bar = tqdm(range(int(steps)), desc=f"train {name}", disable=not progress, leave=False)
    for step in bar:
        parts_tp, parts_d, parts_v = [], [], []
        for i, n in enumerate(counts[step]):
            if n == 0:
                continue
            idx = torch.randint(0, px[i]["tp"].numel(), (int(n),), generator=gen)
            parts_tp.append(px[i]["tp"][idx])
            if "d" in px[i]:
                parts_d.append(px[i]["d"][idx])
            if "v" in px[i]:
                parts_v.append(px[i]["v"][idx])
        btp = torch.cat(parts_tp).float()
        bd = torch.cat(parts_d).float() if parts_d else None
        bv = torch.cat(parts_v).float() if parts_v else None
        z = _encode_pixels(model, btp, bd, bv)
        n = z.numel()
        target = torch.special.ndtri((torch.arange(n, dtype=torch.float32) + 0.5) / n)
        q_loss = ((torch.sort(z).values - target) ** 2).mean()
        wet = btp >= model.dry_threshold
        rec = model.decode(z[wet])
        r_loss = ((torch.log1p(rec / model.scale) - torch.log1p(btp[wet] / model.scale)) ** 2).mean() \
            if bool(wet.any()) else z.new_zeros(())
        loss = q_loss + float(rec_weight) * r_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append([float(q_loss.detach()), float(r_loss.detach())])
        if step % 50 == 0:
            bar.set_postfix(quantile=f"{history[-1][0]:.4f}", rec=f"{history[-1][1]:.4f}")
    bar.close()
    model.eval()
    model.history = history  # type: ignore[attr-defined]
    model.train_stats = {  # type: ignore[attr-defined]
        "steps": int(steps), "batch": int(batch), "lr": float(lr), "rec_weight": float(rec_weight),
        "p_dry": cfg["p_dry"], "seconds": round(time.time() - t0, 1),
        "final_quantile_loss": history[-1][0], "final_rec_loss": history[-1][1],
    }
    return model


def pp_report(model: PseudoPrecip, tp: Any, vimd: Any = None) -> dict[str, float]:
    """Checks of a PP model on fields ``tp`` (mm/h) [and ``vimd``]: KS distance of PP to N(0, 1) (all valid
    pixels; and the censored KS, ``sup_{z ≥ z_edge} |F_n(z) − Φ(z)|``, which ignores how dry pixels are spread),
    mean/sd/skewness/excess kurtosis of PP, the KS distance of the wet part (PP ≥ z_edge) to N(0, 1) truncated to
    ``[z_edge, ∞)`` (``ks_wet_shape``: the shape of the wet mapping, whatever the wet fraction), the wet-pixel
    reconstruction error (MAE and relative p99/p99.9 bias of ``decode(encode(tp))``), and the dry/wet agreement
    at ``dry_threshold``."""
    from ..verify import ks_normal, percentile_bias

    with torch.no_grad():
        t = model._tensor(tp, "tp").float()
        v = None if vimd is None else model._tensor(vimd, "vimd").float()
        pp = model.encode(t, v)
        rec = model.decode(pp)
    ok = ~torch.isnan(pp)
    z = pp[ok].double()
    tt = t[ok].double()
    rr = rec[ok].double()
    zs, _ = torch.sort(z)
    n = zs.numel()
    cdf = torch.special.ndtr(zs)
    i = torch.arange(1, n + 1, dtype=torch.float64, device=zs.device)
    above = zs >= float(model.z_edge)
    ks_cens = float("nan")
    if bool(above.any()):
        ks_cens = float(torch.maximum((i / n - cdf)[above].max(), (cdf - (i - 1) / n)[above].max()))
    ks_wet = float("nan")
    if bool(above.any()):
        zw = zs[above]
        c0 = torch.special.ndtr(torch.tensor(float(model.z_edge), dtype=torch.float64, device=zw.device))
        fw = (torch.special.ndtr(zw) - c0) / (1 - c0)
        j = torch.arange(1, zw.numel() + 1, dtype=torch.float64, device=zw.device)
        ks_wet = float(torch.maximum((j / zw.numel() - fw).max(), (fw - (j - 1) / zw.numel()).max()))
    m, sd = float(z.mean()), float(z.std())
    zc = (z - m) / sd
    thr = model.dry_threshold
    wet_t, wet_r = tt >= thr, rr >= thr
    pb = percentile_bias(rr.cpu().numpy(), tt.cpu().numpy(), q=(99, 99.9))
    return {
        "n": int(n),
        "ks": float(ks_normal(z.cpu().numpy())),
        "ks_censored": ks_cens,
        "ks_wet_shape": ks_wet,
        "mean": m, "sd": sd, "skew": float((zc**3).mean()), "excess_kurtosis": float((zc**4).mean() - 3),
        "dry_fraction_true": float((~wet_t).double().mean()),
        "dry_fraction_decoded": float((~wet_r).double().mean()),
        "wet_dry_agreement": float((wet_t == wet_r).double().mean()),
        "decoded_exact_zero_on_dry": float((rr[~wet_t] == 0).double().mean()) if (~wet_t).any() else float("nan"),
        "mae_wet": float((rr[wet_t] - tt[wet_t]).abs().mean()) if wet_t.any() else float("nan"),
        "mae_all": float((rr - tt).abs().mean()),
        "p99_bias": float(pb["p99"]), "p99.9_bias": float(pb["p99.9"]),
    }
