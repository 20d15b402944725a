"""EDM diffusion downscaling (Karras et al. 2022, "Elucidating the design space of diffusion-based generative models").

:class:`EDMDownscaler` is a conditional denoiser for the *residual* ``r = x_hi - up(x_lo)`` between the
high-resolution field and the bicubically upsampled low-resolution field, both in a *data space*:

==========  =====================================================================================================
``"pp"``    pseudo-precipitation from a :class:`skydiff.downscale.pseudo.PseudoPrecip` (``pp_model`` =
            ``"pp-radar"``: TP only; ``"pp-era5"``: TP and VIMD). The PP encoder/decoder is a frozen sub-module,
            shipped inside the downscaler's weights, so a downscaler always decodes with the PP it was trained on.
``"log1p"`` ``ln(1 + R)``, decoded with ``max(exp(x) - 1, 0)`` (the TP-only baseline)
``"sqrt"``  ``sqrt(R)``, decoded with ``x**2`` for ``x > 0``
==========  =====================================================================================================

Preconditioning (EDM Table 1): ``D(x; σ) = c_skip x + c_out F(c_in x, c_noise; cond)`` with
``c_skip = σd² / (σ² + σd²)``, ``c_out = σ σd / sqrt(σ² + σd²)``, ``c_in = 1 / sqrt(σ² + σd²)``,
``c_noise = ln(σ) / 4``; ``σd`` (``sigma_data``) is the standard deviation of the training residuals. Training
loss: ``λ(σ) |D(r + σ n; σ) - r|²`` with ``ln σ ~ N(P_mean, P_std²)`` (−1.2, 1.2) and ``λ = (σ² + σd²) / (σ σd)²``.
Sampling: EDM's Heun sampler (Algorithm 1, optional churn of Algorithm 2) on the Karras schedule
``σ_i = (σmax^(1/ρ) + i/(N-1) (σmin^(1/ρ) - σmax^(1/ρ)))^ρ`` (σmin 0.002, σmax 80, ρ 7), ``2N - 1`` network
evaluations for ``N`` steps (default 18); ensemble members differ by their initial noise (and churn).

The network :class:`DenoiserUNet` is a small U-Net (residual blocks with GroupNorm/SiLU, noise-level FiLM,
average-pool down, nearest up) on the channels ``[c_in x, up(x_lo), static...]``; it is fully convolutional, so any
grid and any integer ``factor`` (fixed per trained model) work. Registered models (``kind="downscale"``, weights in
``skydiff/downscale/weights``): ``"edm-radar"`` (PP, radar), ``"edm-radar-tp"`` (log1p TP, the TP-only baseline
with the same architecture) and ``"edm-era5"`` (ERA5).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._compat import autocast_dtype
from ..errors import InputError, ShapeError
from ..errors import check_int as _check_int
from ..errors import check_seed
from ..registry import create_model, register_model
from . import WEIGHTS_DIR

__all__ = ["DenoiserUNet", "EDMDownscaler", "karras_sigmas", "edm_precond", "SPACES"]

SPACES = ("pp", "log1p", "sqrt")
# sample(): fields larger than TILE high-res pixels are denoised in overlapping TILE x TILE windows (the size of the
# held-back test tiles; training used 32 x 32 crops of them), TILE_OVERLAP pixels shared
TILE = 64
TILE_OVERLAP = 16


def edm_precond(sigma: torch.Tensor,
                sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` for noise levels ``sigma`` (any shape)."""
    s2 = sigma * sigma
    d2 = sigma_data * sigma_data
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / torch.sqrt(s2 + d2)
    c_in = 1.0 / torch.sqrt(s2 + d2)
    c_noise = torch.log(sigma) / 4.0
    return c_skip, c_out, c_in, c_noise


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  *, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
    """The EDM noise schedule: ``steps`` decreasing levels from ``sigma_max`` to ``sigma_min``, then 0 (``steps + 1``)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    i = torch.arange(steps, dtype=torch.float64)
    if steps == 1:
        s = torch.tensor([float(sigma_max)], dtype=torch.float64)
    else:
        a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
        s = (a + i / (steps - 1) * (b - a)) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).to(dtype=dtype, device=device)


# ------------------------------------------------------------------------------------------ network
def _groups(ch: int) -> int:
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float = 0.0):
        super().__init__()
        self.n1 = nn.GroupNorm(_groups(cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.n2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.n2(h) * (1 + scale) + shift)
        return self.skip(x) + self.c2(self.drop(h))


class DenoiserUNet(nn.Module):
    """Small U-Net ``F(x, c_noise)``: ``(B, in_channels, H, W)``, ``(B,)`` → ``(B, 1, H, W)``, any ``H × W``.

    Parameters
    ----------
    in_channels
        Input channels (scaled noisy residual + conditions).
    base_channels
        Channels of the first level; level ``i`` has ``base_channels * mults[i]``.
    mults
        Channel multipliers per level (``len(mults) - 1`` average-pool steps; inputs are padded to a multiple of
        ``2**(len(mults) - 1)`` by reflection and cropped back).
    emb_channels
        Width of the noise-level embedding (default ``4 * base_channels``).
    dropout
        Dropout inside the residual blocks.
    n_labels
        Number of class labels (e.g. which radar product to imitate); > 0 adds a learned label embedding to the
        noise-level embedding, with one extra index ``n_labels`` meaning "unknown" (used where ``label`` is None).
    """

    def __init__(self, in_channels: int, base_channels: int = 32, mults: tuple[int, ...] = (1, 2, 2),
                 emb_channels: int | None = None, dropout: float = 0.0, n_labels: int = 0):
        super().__init__()
        mults = tuple(int(m) for m in mults)
        if not mults or any(m < 1 for m in mults):
            raise InputError(f"mults must be positive integers, got {mults!r}")
        if base_channels < 1 or in_channels < 1:
            raise InputError("in_channels and base_channels must be >= 1")
        emb = emb_channels or 4 * base_channels
        self.n_freq = base_channels // 2 if base_channels >= 2 else 1
        self.emb = nn.Sequential(nn.Linear(2 * self.n_freq, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.n_labels = int(n_labels)
        self.label_emb = nn.Embedding(self.n_labels + 1, emb) if self.n_labels > 0 else None
        if self.label_emb is not None:
            nn.init.zeros_(self.label_emb.weight)  # starts as the unconditional network
        widths = [base_channels * m for m in mults]
        self.inp = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.enc = nn.ModuleList()
        cin = widths[0]
        for w in widths:
            self.enc.append(_ResBlock(cin, w, emb, dropout))
            cin = w
        self.mid = _ResBlock(cin, cin, emb, dropout)
        self.dec = nn.ModuleList()
        for w in reversed(widths):
            self.dec.append(_ResBlock(cin + w, w, emb, dropout))
            cin = w
        self.out_norm = nn.GroupNorm(_groups(cin), cin)
        self.out = nn.Conv2d(cin, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.levels = len(widths)

    def _embed(self, c_noise: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(1000.0) * torch.arange(self.n_freq, device=c_noise.device,
                                                           dtype=c_noise.dtype) / self.n_freq)
        a = c_noise[:, None] * freqs[None, :] * 4.0 * 10.0
        return self.emb(torch.cat([torch.cos(a), torch.sin(a)], dim=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        H, W = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            mode = "reflect" if H > ph and W > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        e = self._embed(c_noise.reshape(-1).to(x.dtype).expand(x.shape[0]))
        if self.label_emb is not None:
            if label is None:
                label = torch.full((x.shape[0],), self.n_labels, dtype=torch.long, device=x.device)
            e = e + self.label_emb(label.to(x.device).reshape(-1).expand(x.shape[0])).to(e.dtype)
        h = self.inp(x)
        skips = []
        for i, blk in enumerate(self.enc):
            h = blk(h, e)
            skips.append(h)
            if i < self.levels - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, e)
        for i, blk in enumerate(self.dec):
            skip = skips[-1 - i]
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = blk(torch.cat([h, skip], dim=1), e)
        out = self.out(F.silu(self.out_norm(h)))
        return out[..., :H, :W]


# ------------------------------------------------------------------------------------------ downscaler
class EDMDownscaler(nn.Module):
    """EDM-preconditioned conditional diffusion downscaler (see the module docstring).

    Parameters
    ----------
    factor
        Integer refinement factor of the model (low-res ``h × w`` → ``h·factor × w·factor``).
    space
        Data space of the diffusion: ``"pp"``, ``"log1p"`` or ``"sqrt"``.
    pp_model, pp_config
        For ``space="pp"``: the registered PP model name (``"pp-radar"``, ``"pp-era5"``) and its constructor
        config; the PP module is built (random weights) and frozen — load trained PP weights into ``self.pp``
        before training (:func:`skydiff.downscale.training.train_downscaler` does).
    use_vimd
        Whether the PP encoder takes VIMD (``pp-era5``); then :meth:`sample` needs low-res VIMD.
    n_static
        Number of static high-resolution fields (e.g. orography) given to :meth:`sample` as ``static``.
    labels
        Optional names of the high-resolution products the model can imitate (e.g. radar products whose 1-km
        fields differ in small-scale roughness: ``("knmi-rap", "knmi-dbz", "fmi", "mrms")``); :meth:`sample`'s
        ``label`` picks one per field, None = unknown (trained by dropping labels, so it is the mixture).
    base_channels, mults, dropout
        U-Net size (:class:`DenoiserUNet`).
    sigma_data
        Standard deviation of the residuals in the data space (set from the training data).
    sigma_min, sigma_max, rho
        Sampling schedule (EDM defaults 0.002, 80, 7).
    p_mean, p_std
        Training noise distribution ``ln σ ~ N(p_mean, p_std²)`` (−1.2, 1.2).
    upsample
        Interpolation of the low-res data-space field to the fine grid: ``"bicubic"`` or ``"bilinear"``.
    name
        Registry name (``"edm-radar"``, ``"edm-radar-tp"``, ``"edm-era5"``); saved weights are loaded with it.
    """

    model_name = "edm-radar"

    def __init__(self, factor: int = 4, space: str = "pp", pp_model: str | None = "pp-radar",
                 pp_config: dict[str, Any] | None = None, use_vimd: bool = False, n_static: int = 0,
                 labels: Sequence[str] | None = None, base_channels: int = 32,
                 mults: tuple[int, ...] | list[int] = (1, 2, 2), dropout: float = 0.0,
                 sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 p_mean: float = -1.2, p_std: float = 1.2, upsample: str = "bicubic", name: str = "edm-radar"):
        super().__init__()
        self.factor = _check_int("factor", factor, 1)
        if space not in SPACES:
            raise InputError(f"space must be one of {SPACES}, got {space!r}")
        if upsample not in ("bicubic", "bilinear"):
            raise InputError(f"upsample must be 'bicubic' or 'bilinear', got {upsample!r}")
        if not sigma_data > 0 or not 0 < sigma_min < sigma_max:
            raise InputError("need sigma_data > 0 and 0 < sigma_min < sigma_max")
        self.n_static = _check_int("n_static", n_static, 0)
        self.labels = tuple(str(v) for v in (labels or ()))
        if len(set(self.labels)) != len(self.labels):
            raise InputError(f"labels must be distinct, got {list(self.labels)}")
        self.space, self.use_vimd, self.upsample_mode = space, bool(use_vimd), upsample
        self.sigma_data, self.sigma_min, self.sigma_max, self.rho = float(sigma_data), float(sigma_min), \
            float(sigma_max), float(rho)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.model_name = str(name)
        mults = tuple(int(m) for m in mults)
        self.config = {
            "factor": self.factor, "space": space, "pp_model": pp_model, "pp_config": dict(pp_config or {}),
            "use_vimd": self.use_vimd, "n_static": self.n_static, "base_channels": int(base_channels),
            **({"labels": list(self.labels)} if self.labels else {}),
            "mults": list(mults), "dropout": float(dropout), "sigma_data": self.sigma_data,
            "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho, "p_mean": self.p_mean,
            "p_std": self.p_std, "upsample": upsample,
        }
        self.pp: nn.Module | None = None
        if space == "pp":
            if not pp_model:
                raise InputError("space='pp' needs pp_model (e.g. 'pp-radar')")
            from . import pseudo  # noqa: F401  (registers the PP models)

            pp_kw = {k: v for k, v in dict(pp_config or {}).items() if k != "name"}  # the registry name decides
            self.pp = create_model(pp_model, pretrained=False, **pp_kw)
            self.pp.requires_grad_(False)
            self.pp.eval()
        self.net = DenoiserUNet(2 + self.n_static, int(base_channels), mults, dropout=float(dropout),
                                n_labels=len(self.labels))

    # -------------------------------------------------------------- data space
    def train(self, mode: bool = True) -> EDMDownscaler:
        super().train(mode)
        if self.pp is not None:
            self.pp.eval()  # frozen
        return self

    def encode(self, tp: torch.Tensor, vimd: torch.Tensor | None = None) -> torch.Tensor:
        """Rain rate (mm/h, any shape) → data space (same shape)."""
        tp = torch.clamp(tp, min=0.0)
        if self.space == "log1p":
            return torch.log1p(tp)
        if self.space == "sqrt":
            return torch.sqrt(tp)
        assert self.pp is not None
        if self.use_vimd:
            if vimd is None:
                raise InputError(f"model {self.model_name!r} encodes TP with VIMD: pass vimd (mm/h) as well")
            return self.pp.encode(tp, vimd)
        return self.pp.encode(tp)

    def decode(self, x: torch.Tensor, decoder: str | None = None) -> torch.Tensor:
        """Data space → rain rate (mm/h, >= 0). ``decoder``: for PP models, the PP decoder (``"learned"`` or
        ``"inverse"``, see :class:`~skydiff.downscale.pseudo.PseudoPrecip`; None: the model's)."""
        if self.space == "log1p":
            return torch.clamp(torch.expm1(x), min=0.0)
        if self.space == "sqrt":
            return torch.clamp(x, min=0.0) ** 2
        assert self.pp is not None
        return torch.clamp(self.pp.decode(x) if decoder is None else self.pp.decode(x, method=decoder), min=0.0)

    def upsample(self, x_lo: torch.Tensor) -> torch.Tensor:
        """(B, h, w) data-space low-res field → (B, h·factor, w·factor) by bicubic/bilinear interpolation."""
        extra = {"align_corners": False}
        return F.interpolate(x_lo[:, None], scale_factor=self.factor, mode=self.upsample_mode, **extra)[:, 0]

    def condition(self, lo_tp: torch.Tensor, lo_vimd: torch.Tensor | None = None,
                  static: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res rain (B, h, w) mm/h → (base (B, H, W) = upsampled data-space field, cond (B, 1 + n_static, H, W)),
        on the model's device."""
        dev = next(self.parameters()).device
        lo_vimd = None if lo_vimd is None else lo_vimd.to(dev)
        base = self.upsample(self.encode(lo_tp.to(dev), lo_vimd))
        cond = [base[:, None]]
        if self.n_static:
            if static is None:
                raise InputError(f"model {self.model_name!r} needs {self.n_static} static field(s)")
            s = static if static.ndim == 4 else static[None]
            if s.shape[1] != self.n_static or s.shape[-2:] != base.shape[-2:]:
                raise ShapeError(f"static must be (n_static={self.n_static}, {base.shape[-2]}, {base.shape[-1]}), "
                                 f"got {tuple(static.shape)}")
            cond.append(s.to(base).expand(base.shape[0], -1, -1, -1))
        elif static is not None:
            raise InputError(f"model {self.model_name!r} was trained without static fields; it cannot use static=")
        return base, torch.cat(cond, dim=1)

    def check_sampling(self, members: Any, steps: Any, batch_size: Any, seed: Any, s_churn: Any, s_noise: Any,
                       tile: Any, tile_overlap: Any) -> tuple[int, int, int, int | None, int | None, int]:
        """The sampling options of :meth:`sample`, checked (:class:`InputError` naming the bad one) and as ints."""
        members = _check_int("members", members, 1)
        steps = _check_int("steps", steps, 1)
        batch_size = _check_int("batch_size", batch_size, 1)
        if seed is not None:
            seed = check_seed(seed)
        for nm, v in (("s_churn", s_churn), ("s_noise", s_noise)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{nm} must be a finite number >= 0, got {v!r}")
        if tile is not None:
            tile = _check_int("tile", tile, 2 ** (self.net.levels - 1))
            tile_overlap = _check_int("tile_overlap", tile_overlap, 0)
            if tile_overlap >= tile:
                raise InputError(f"tile_overlap must be smaller than tile ({tile}), got {tile_overlap}")
        return members, steps, batch_size, seed, tile, tile_overlap

    def saturation_limit(self, decoder: str | None = None) -> float | None:
        """The rate (mm/h) from which this model's learned PP decoder saturates
        (:meth:`~skydiff.downscale.pseudo.PseudoPrecip.learned_decoder_limit`), or None where no learned PP decoder
        is used (``decoder``: as in :meth:`sample`)."""
        if self.pp is None or (decoder or self.pp.decoder) != "learned":
            return None
        return self.pp.learned_decoder_limit()

    def check_decoder(self, decoder: Any) -> None:
        """Refuse a ``decoder`` this model cannot use (:class:`InputError`): PP models only, ``"learned"`` or
        ``"inverse"`` (TP-only PP)."""
        if decoder is None:
            return
        if self.pp is None:
            raise InputError(f"decoder= chooses the pseudo-precipitation decoder; model {self.model_name!r} "
                             f"samples in {self.space!r} space and has none")
        self.pp._check_decoder(decoder, self.pp.use_vimd)

    def label_index(self, label: Any, n: int, device: Any = None) -> torch.Tensor | None:
        """``label`` (None, a name, or ``n`` names / None) → (n,) label indices (``len(labels)`` = unknown)."""
        if label is None:
            return None
        if not self.labels:
            raise InputError(f"model {self.model_name!r} has no labels; it cannot imitate {label!r}")
        if isinstance(label, torch.Tensor):
            idx = label.to(device=device, dtype=torch.long).reshape(-1)
            if idx.numel() == 1:
                idx = idx.expand(n)
            if idx.numel() != n or bool(((idx < 0) | (idx > len(self.labels))).any()):
                raise InputError(f"label indices must be {n} values in [0, {len(self.labels)}]")
            return idx
        if not isinstance(label, (str, list, tuple)):
            raise InputError(f"label must be a product name ({', '.join(self.labels)}), a list of names (or None) "
                             f"per field, or None; got {type(label).__name__} {label!r}")
        names = [label] * n if isinstance(label, str) else list(label)
        if len(names) != n:
            raise InputError(f"give one label per field: {n} fields, {len(names)} labels")
        bad = sorted({str(v) for v in names if v is not None and v not in self.labels})
        if bad:
            raise InputError(f"unknown label(s) {bad} for model {self.model_name!r}; known: {list(self.labels)} "
                             "(or None for unknown)")
        return torch.tensor([len(self.labels) if v is None else self.labels.index(v) for v in names],
                            dtype=torch.long, device=device)

    # -------------------------------------------------------------- EDM
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        """Preconditioned denoiser ``D(x; σ)``: noisy residual (B, H, W), σ (scalar or (B,)), cond → (B, H, W);
        ``label`` (B,) label indices for a labelled model (None = unknown)."""
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sig.numel() == 1:
            sig = sig.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = edm_precond(sig, self.sigma_data)
        inp = torch.cat([(c_in[:, None, None] * x)[:, None], cond.to(x.dtype)], dim=1)
        f = self.net(inp, c_noise, label)[:, 0].to(x.dtype)  # under autocast the network returns bfloat16/float16
        return c_skip[:, None, None] * x + c_out[:, None, None] * f

    def denoise_tiled(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor,
                      label: torch.Tensor | None = None, *, tile: int = 64, overlap: int = 16) -> torch.Tensor:
        """:meth:`denoise` in overlapping ``tile × tile`` windows, blended with weights that ramp linearly over the
        ``overlap`` (every pixel's weights sum to 1); a dimension no longer than ``tile`` is one window. Written here
        because the blend must happen inside every denoiser call of the sampler (as in MultiDiffusion), which no
        library offers for this model."""
        B, H, W = x.shape
        rows, cols = _tile_starts(H, tile, overlap), _tile_starts(W, tile, overlap)
        th, tw = min(tile, H), min(tile, W)
        wy, wx = _ramp(th, overlap, x), _ramp(tw, overlap, x)
        wt = wy[:, None] * wx[None, :]
        lab = None if label is None else label.reshape(-1).expand(B)
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sig = sig.expand(B) if sig.numel() == 1 else sig
        out = torch.zeros_like(x)
        norm = x.new_zeros(H, W)
        pos = [(r, c) for r in rows for c in cols]
        per_call = max(1, 256 // max(1, B))  # a few windows of every field per network call
        for k in range(0, len(pos), per_call):
            grp = pos[k:k + per_call]
            xs = torch.cat([x[:, r:r + th, c:c + tw] for r, c in grp])
            cs = torch.cat([cond[..., r:r + th, c:c + tw] for r, c in grp])
            d = self.denoise(xs, sig.repeat(len(grp)), cs, None if lab is None else lab.repeat(len(grp)))
            for i, (r, c) in enumerate(grp):
                out[:, r:r + th, c:c + tw] += wt * d[i * B:(i + 1) * B]
                norm[r:r + th, c:c + tw] += wt
        return out / norm

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoise(x, sigma, cond, label)

    def loss(self, hi_tp: torch.Tensor, lo_tp: torch.Tensor, hi_vimd: torch.Tensor | None = None,
             lo_vimd: torch.Tensor | None = None, static: torch.Tensor | None = None,
             generator: torch.Generator | None = None, label: torch.Tensor | None = None) -> torch.Tensor:
        """EDM training loss on a batch: hi (B, H, W) and lo (B, h, w) rain in mm/h (no NaN); ``label`` (B,)
        label indices of a labelled model."""
        with torch.no_grad():
            base, cond = self.condition(lo_tp, lo_vimd, static)
            hi_vimd = None if hi_vimd is None else hi_vimd.to(base.device)
            r = self.encode(hi_tp.to(base.device), hi_vimd) - base
        B = r.shape[0]
        n = _randn(B, generator, r)
        sigma = torch.exp(self.p_mean + self.p_std * n)
        noise = _randn(r.shape, generator, r)
        D = self.denoise(r + sigma[:, None, None] * noise, sigma, cond, self.label_index(label, B, r.device))
        w = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return (w[:, None, None] * (D - r) ** 2).mean()

    @torch.no_grad()
    def sample(self, lo_tp: torch.Tensor, members: int = 8, steps: int = 18, *, lo_vimd: torch.Tensor | None = None,
               static: torch.Tensor | None = None, seed: int | None = None, generator: torch.Generator | None = None,
               s_churn: float = 0.0, s_noise: float = 1.0, batch_size: int = 64, progress: bool = True,
               return_space: bool = False, label: Any = None, tile: int | None = TILE,
               tile_overlap: int = TILE_OVERLAP, precision: str | None = None,
               decoder: str | None = None) -> torch.Tensor:
        """Ensemble of high-resolution fields for low-res rain ``lo_tp`` (B, h, w) in mm/h.

        Returns ``(members, B, h·factor, w·factor)`` rain rate (mm/h, >= 0) on the model's device, or the data-space
        fields with ``return_space=True``. ``seed`` makes the draw reproducible, whatever ``batch_size`` (a
        generator on the model's device); ``generator``: your own instead, on any device. ``s_churn`` > 0 adds EDM
        Algorithm-2 churn. ``batch_size`` fields (members × inputs) go through the U-Net at once; a tqdm bar counts
        the sampling steps of every batch.
        ``label``: for a model with ``labels``, the product to imitate — one name for every field, one name (or None)
        per field, or None (unknown: the training mixture).

        ``tile``: fields larger than ``tile`` high-res pixels are denoised in overlapping ``tile × tile`` windows
        (``tile_overlap`` pixels shared, blended with linear ramps at every sampling step, so the result has no
        seams), as the network was trained and scored (32 × 32 crops, 64 × 64 test tiles). Its GroupNorm
        normalises over the whole input, so one pass over a large, mostly dry grid sees other statistics: on a
        whole KNMI composite that raised the rain mass by 27 % (``benchmarks/RESULTS.md`` §8). None: one pass.

        ``decoder``: for PP models, ``"learned"`` or ``"inverse"`` (TP-only PP: exact inverse of the encoder) instead
        of the model's own PP decoder (None); see :class:`~skydiff.downscale.pseudo.PseudoPrecip`.

        ``precision``: None or ``"full"`` (the model's dtype), ``"bfloat16"`` or ``"float16"``: the U-Net's layers
        run under ``torch.autocast`` in that type while the sampler's state, the preconditioning and the decoding
        stay in full precision (as ``predict(precision=...)`` of the nowcasting networks). On a CPU with AVX512-BF16
        ``"bfloat16"`` samples ~2x faster; its effect on the scores is in ``benchmarks/RESULTS.md`` §8.
        """
        from tqdm.auto import tqdm

        members, steps, batch_size, seed, tile, tile_overlap = self.check_sampling(
            members, steps, batch_size, seed, s_churn, s_noise, tile, tile_overlap)
        self.check_decoder(decoder)
        if lo_tp.ndim != 3:
            raise ShapeError(f"lo_tp must be (B, h, w), got shape {tuple(lo_tp.shape)}")
        amp = autocast_dtype(precision, next(self.parameters()).device)
        base, cond = self.condition(lo_tp, lo_vimd, static)
        if generator is None and seed is not None:  # on the device the noise is drawn on (a PP model moves lo_tp)
            generator = torch.Generator(device=base.device).manual_seed(int(seed))
        B, H, W = base.shape
        lab = self.label_index(label, B, base.device)
        sig = karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho, dtype=base.dtype, device=base.device)
        # every (member, field) pair is one sample; order member-major
        idx = torch.arange(members * B, device=base.device) % B
        chunks = list(range(0, members * B, max(1, int(batch_size))))
        bar = tqdm(total=len(chunks) * steps, desc="diffusion sampling", disable=not progress, leave=False)
        gamma_max = min(float(s_churn) / steps, math.sqrt(2.0) - 1.0) if s_churn > 0 else 0.0
        den = self.denoise
        if tile is not None:
            if H > tile or W > tile:
                den = functools.partial(self.denoise_tiled, tile=tile, overlap=tile_overlap)
        if amp is not None:
            den = functools.partial(_autocast_call, den, amp)
        # all samples' noise is drawn for the whole ensemble, step by step, so that a seed gives the same ensemble
        # whatever batch_size groups the samples (churn noise drawn chunk by chunk depended on it)
        x_all = _randn((members * B, H, W), generator, base) * sig[0]
        for i in range(steps):
            t, t_next = sig[i], sig[i + 1]
            if gamma_max > 0:
                t_hat = t * (1 + gamma_max)
                x_all = x_all + torch.sqrt(t_hat**2 - t**2) * float(s_noise) * _randn(x_all.shape, generator, x_all)
                t = t_hat
            for c0 in chunks:
                sel = idx[c0:c0 + int(batch_size)]
                cnd = cond[sel]
                lb = None if lab is None else lab[sel]
                x = x_all[c0:c0 + sel.numel()]
                d = (x - den(x, t, cnd, lb)) / t
                x_next = x + (t_next - t) * d
                if t_next > 0:
                    d2 = (x_next - den(x_next, t_next, cnd, lb)) / t_next
                    x_next = x + (t_next - t) * 0.5 * (d + d2)
                x_all[c0:c0 + sel.numel()] = x_next
                bar.update(1)
        bar.close()
        out = (x_all + base[idx]).reshape(members, B, H, W)
        res = out if return_space else self.decode(out, decoder)
        bad = int((~torch.isfinite(res)).sum())
        if bad:  # e.g. steps=2 with the log1p model: expm1 of an unconverged sample overflows
            raise InputError(f"diffusion sampling with steps={steps} produced {bad} non-finite value(s) of "
                             f"{res.numel()}; use more sampling steps (default 18)")
        return res


def _randn(shape: Any, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise like ``like`` (device, dtype), drawn from ``generator`` on whichever device it lives
    (a CPU generator with a CUDA model draws on the CPU and moves the noise)."""
    dev = like.device if generator is None else generator.device
    return torch.randn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def _autocast_call(fn: Any, dtype: torch.dtype, x: torch.Tensor, *args: Any) -> torch.Tensor:
    """``fn(x, *args)`` with the network layers under ``torch.autocast(dtype)``; the result in ``x``'s dtype."""
    with torch.autocast(device_type=x.device.type, dtype=dtype):
        return fn(x, *args).to(x.dtype)


def _tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Window starts along an axis of ``n`` pixels: every ``tile - overlap``, the last one flush with the end."""
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile, tile - overlap))
    return starts + [n - tile]


def _ramp(n: int, overlap: int, like: torch.Tensor) -> torch.Tensor:
    """Blend weights along a window of ``n`` pixels: rising linearly over ``overlap`` pixels at both ends (never 0)."""
    if overlap <= 0:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    i = torch.arange(n, dtype=like.dtype, device=like.device)
    # a tent clipped at 1: windows no longer than 2 * overlap ramp up and down too (they had flat weights: seams)
    return ((torch.minimum(i, n - 1 - i) + 0.5) / overlap).clamp(max=1.0)


def _factory(name: str, defaults: dict[str, Any]) -> Any:
    def make(**config: Any) -> EDMDownscaler:
        kw = {**defaults, **config, "name": name}
        return EDMDownscaler(**kw)

    make.__name__ = name.replace("-", "_")
    make.__doc__ = f"The ``{name}`` downscaler: :class:`EDMDownscaler` with defaults {defaults}."
    return register_model(name, kind="downscale", weights_dir=WEIGHTS_DIR)(make)


edm_radar = _factory("edm-radar", {"space": "pp", "pp_model": "pp-radar"})
edm_radar_tp = _factory("edm-radar-tp", {"space": "log1p", "pp_model": None})
edm_era5 = _factory("edm-era5", {"space": "pp", "pp_model": "pp-era5", "use_vimd": True})
