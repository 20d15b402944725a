"""Shared building blocks of the nowcasting networks, and the :class:`NowcastModel` base class.

Contents
--------
- **Scalers** (:data:`SCALERS`, :func:`get_scaler`): the data transforms the networks work in. Every model
  exposes ``model.transform(rain_mm_h)`` and ``model.inverse_transform(y)``; the inverse clamps at 0 mm/h.
- **Padding** (:func:`pad_to_multiple`, :func:`crop_padding`): every U-Net accepts any ``H x W``. Before the
  first convolution the input is padded to the next multiple of the total stride ``2**depth`` and the output is
  cropped back to ``H x W`` exactly. The padding is split evenly (the odd pixel goes to the bottom / right),
  ``"reflect"`` by default (RainNet pads its 900x900 DWD grid to 928x928 by reflection, reference §3), falling
  back to ``"replicate"`` for an axis whose pad is not smaller than the axis (reflection needs
  ``pad < size``). Padding only affects pixels within the network's receptive field of the edge.
- **Convolution blocks**: :class:`DoubleConv` (conv-ReLU x 2, the RainNet level), :class:`DepthwiseSeparableConv`,
  :class:`DoubleConvDS` (DS-conv-BN-ReLU x 2, the SmaAt-UNet level), :class:`CBAM` (channel + spatial
  attention of Woo et al. 2018, used by SmaAt-UNet).
- **Lagrangian helpers** (:func:`lagrangian_stack`, :func:`gaussian_blur`) shared by LUPIN and L-CNN.
- :class:`NowcastModel`: validation, NaN handling, ``predict`` and ``rollout`` for every model.

Conventions: rain ``(..., H, W)`` in mm/h, NaN = no data; motion ``(B, 2, H, W)`` in pixels per 5-min step,
``[0] = x`` (columns), ``[1] = y`` (rows).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from ..._compat import autocast_dtype, native_array
from ...advection import advect
from ...errors import InputError, ShapeError, check_rain_rate, warn
from ..postprocess import check_prob_match, match_cdf

__all__ = [
    "Scaler",
    "SCALERS",
    "get_scaler",
    "pad_to_multiple",
    "centred_pads",
    "apply_pads",
    "crop_padding",
    "PaddedNet",
    "DoubleConv",
    "DepthwiseSeparableConv",
    "DoubleConvDS",
    "ChannelAttention",
    "SpatialAttention",
    "CBAM",
    "gaussian_blur",
    "lagrangian_stack",
    "NowcastModel",
]


# ---------------------------------------------------------------------------------------------------------------
# scalers (data transforms)
# ---------------------------------------------------------------------------------------------------------------

LOG_OFFSET = 0.01  # mm/h (or mm) added before the logarithm (RainNet, LUPIN, L-CNN; reference §1-§3)
SMAAT_MAX = 47.83  # NL-50 training maximum in mm/5min (reference §4, §7.1)


@dataclass(frozen=True)
class Scaler:
    """A pointwise transform of rain rates (mm/h) and its inverse (which clamps at 0 mm/h)."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse_raw: Callable[[torch.Tensor], torch.Tensor]
    description: str

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.inverse_raw(y).clamp_min(0.0)

    @property
    def zero(self) -> float:
        """The transformed value of 0 mm/h (the "dry" value used for inflow boundaries and clamping)."""
        return float(self.forward(torch.zeros((), dtype=torch.float64)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # registered scalers are pickled by name (their lambdas are not picklable), so models, modules and
        # checkpoints can cross process boundaries (ddp_spawn, DataLoader workers); custom ones by their fields
        if SCALERS.get(self.name) is self:
            return (get_scaler, (self.name,))
        return (Scaler, (self.name, self.forward, self.inverse_raw, self.description))


SCALERS: dict[str, Scaler] = {
    s.name: s
    for s in (
        Scaler("none", lambda r: r, lambda y: y, "y = R (mm/h); LUPIN stages 2-3 and L-CNN (reference §1, §2)"),
        Scaler(
            "log",
            lambda r: torch.log(r + LOG_OFFSET),
            lambda y: torch.exp(y) - LOG_OFFSET,
            "y = ln(R + 0.01), R in mm/h; LUPIN's MF-U-Net input and `log` scaler (reference §1)",
        ),
        Scaler(
            "log_unit",
            lambda r: (torch.log(r + LOG_OFFSET) + 5.0) / 10.0,
            lambda y: torch.exp(10.0 * y - 5.0) - LOG_OFFSET,
            "y = (ln(R + 0.01) + 5) / 10, R in mm/h; LUPIN's `log_unit` scaler (reference §1)",
        ),
        Scaler(
            "rainnet",
            lambda r: torch.log(r / 12.0 + LOG_OFFSET),
            lambda y: 12.0 * (torch.exp(y) - LOG_OFFSET),
            "y = ln(x + 0.01), x = R / 12 the 5-min depth in mm; RainNet (reference §3)",
        ),
        Scaler(
            "smaat",
            lambda r: r / (12.0 * SMAAT_MAX),
            lambda y: y * (12.0 * SMAAT_MAX),
            "y = (R / 12) / 47.83, min-max normalised 5-min depth; SmaAt-UNet on NL-50 (reference §4)",
        ),
    )
}


def get_scaler(name: str) -> Scaler:
    if not isinstance(name, str) or name.lower() not in SCALERS:
        raise InputError(f"unknown scaler {name!r}; available: {', '.join(SCALERS)}")
    return SCALERS[name.lower()]


# ---------------------------------------------------------------------------------------------------------------
# padding
# ---------------------------------------------------------------------------------------------------------------

PAD_MODES = ("reflect", "replicate")


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad the last two axes of ``x`` (N, C, H, W) up to multiples of ``multiple``.

    Returns the padded tensor and ``pads = (left, right, top, bottom)`` for :func:`crop_padding`. The pad is
    split evenly, the odd pixel going to the right / bottom. ``mode`` is ``"reflect"`` or ``"replicate"``;
    reflection falls back to replication on an axis whose pad is not smaller than the axis length.
    """
    if mode not in PAD_MODES:
        raise InputError(f"pad_mode must be one of {PAD_MODES}, got {mode!r}")
    pads = centred_pads(*x.shape[-2:], multiple)
    return apply_pads(x, pads, mode), pads


def centred_pads(H: int, W: int, multiple: int) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` that bring an ``H x W`` grid to multiples of ``multiple``, split evenly (the
    odd pixel right / bottom): the padding of :func:`pad_to_multiple`."""
    ph, pw = (-H) % multiple, (-W) % multiple
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def apply_pads(x: torch.Tensor, pads: tuple[int, int, int, int], mode: str = "reflect") -> torch.Tensor:
    """Pad the last two axes of ``x`` (N, C, H, W) by ``pads = (left, right, top, bottom)`` as
    :func:`pad_to_multiple` does (reflection, falling back to replication on an axis too short to reflect)."""
    H, W = x.shape[-2:]
    if not any(pads):
        return x
    if mode == "reflect" and max(pads[0], pads[1]) < W and max(pads[2], pads[3]) < H:
        return nnf.pad(x, pads, mode="reflect")
    if mode == "reflect":  # reflect what can be reflected, replicate the rest (tiny grids only)
        x = nnf.pad(x, (pads[0], pads[1], 0, 0), mode="reflect" if max(pads[0], pads[1]) < W else "replicate")
        return nnf.pad(x, (0, 0, pads[2], pads[3]), mode="reflect" if max(pads[2], pads[3]) < H else "replicate")
    return nnf.pad(x, pads, mode="replicate")


def crop_padding(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: crop ``pads = (left, right, top, bottom)`` off the last two axes."""
    left, right, top, bottom = pads
    H, W = x.shape[-2:]
    return x[..., top : H - bottom, left : W - right]


class PaddedNet(nn.Module):
    """Base of the U-Nets: ``forward`` pads to a multiple of ``2**depth``, runs ``forward_padded``, crops back.

    ``forward_padded`` is the bare network and needs ``H, W`` divisible by ``self.multiple``.
    """

    depth: int
    pad_mode: str
    # set by NowcastModel.predict() while it runs the model on a window of the grid: the pads the whole grid would
    # get on the window's sides that touch the grid's edge (0 on the others), instead of centring the padding
    forced_pads: tuple[int, int, int, int] | None = None

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forced_pads is not None:
            pads = self.forced_pads
            xp = apply_pads(x, pads, self.pad_mode)
            if xp.shape[-2] % self.multiple or xp.shape[-1] % self.multiple:
                raise ShapeError(f"forced pads {pads} leave {tuple(xp.shape[-2:])}, not a multiple of {self.multiple}")
        else:
            xp, pads = pad_to_multiple(x, self.multiple, self.pad_mode)
        y = crop_padding(self.forward_padded(xp), pads)
        # under mixed precision (torch.autocast, ``predict(precision="bfloat16")``) the convolutions return
        # bfloat16/float16; the network's output goes back to the input's dtype so the physics after it
        # (advection, blur, the autoregressive window) keeps full precision
        return y if y.dtype == x.dtype else y.to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# convolution blocks
# ---------------------------------------------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    """Two 3x3 'same' convolutions, each followed by ReLU (optionally batch norm before the ReLU).

    The RainNet level (reference §3): ``Conv2D(k, 3, relu, same) x 2``.
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None, batchnorm: bool = False):
        mid = out_channels if mid_channels is None else mid_channels
        layers: list[nn.Module] = []
        for cin, cout in ((in_channels, mid), (mid, out_channels)):
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise convolution (``kernels_per_layer`` filters per input channel) followed by a 1x1 pointwise one.

    Parameters: ``in*kpl*k*k + in*kpl`` (depthwise) + ``in*kpl*out + out`` (pointwise) instead of
    ``in*out*k*k + out`` for a full convolution (SmaAt-UNet, reference §4).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, kernels_per_layer: int = 2):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels * kernels_per_layer,
            kernel_size,
            padding=kernel_size // 2,
            groups=in_channels,
        )
        self.pointwise = nn.Conv2d(in_channels * kernels_per_layer, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DoubleConvDS(nn.Sequential):
    """(DS-conv 3x3 -> BatchNorm -> ReLU) x 2, the SmaAt-UNet level (reference §4)."""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int | None = None, kernels_per_layer: int = 2
    ):
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(
            DepthwiseSeparableConv(in_channels, mid, 3, kernels_per_layer),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            DepthwiseSeparableConv(mid, out_channels, 3, kernels_per_layer),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, a shared 1x1-conv MLP.

    A deviation from SmaAt-UNet's code, whose MLP has biases and whose spatial gate has a batch norm after its
    convolution: neither is here, so that code's weights do not load into these modules."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.mlp(x.mean(dim=(-2, -1), keepdim=True)) + self.mlp(x.amax(dim=(-2, -1), keepdim=True))
        return x * torch.sigmoid(a)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``sigmoid(conv7x7([mean_c(x), max_c(x)]))``."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(s))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


# ---------------------------------------------------------------------------------------------------------------
# Lagrangian helpers
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)  # a nowcast blurs every lead time with the same matrices (a few MB each)
def _blur_operator(n: int, r: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) matrix of the normalised 1-D Gaussian blur: row i = weights exp(-d^2 / 2 sigma^2), |d| <= r, of the
    in-grid points j, divided by their sum (so rows sum to 1 and outside the grid counts as missing).
    Cached: callers must not modify it in place. Built outside inference mode, so a matrix first made under
    ``torch.inference_mode()`` can still be used by a later training step."""
    with torch.inference_mode(False), torch.no_grad():
        t = torch.arange(n, dtype=dtype, device=device)
        d = t[:, None] - t[None, :]
        m = torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() <= r).to(dtype)
        return m / m.sum(1, keepdim=True)


# a 1-D blur as an (n x n) matrix product costs n MACs per output against 2r + 1 for the convolution, but runs
# as one GEMM: much faster for wide kernels (LUPIN's sigma = 127 px: 0.75 s -> ~0.03 s on 768 x 704, 2 cores)
_MATMUL_MIN_TAPS = 33
_MATMUL_MAX_N = 4096


MASK_FLOOR = 1e-4  # weight of a no-data pixel in gaussian_blur(..., weight=mask): keeps far-from-data pixels finite


def gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int | None = None,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` (B, C, H, W) by normalised convolution (differentiable).

    Outside the grid counts as missing, not as zero: each output is the Gaussian-weighted mean of the pixels
    inside the grid, so a constant field stays constant up to the edges and a kernel larger than the grid
    is allowed (it is truncated to the grid, which changes nothing). ``kernel_size`` defaults to
    ``2 * ceil(3 sigma) + 1``; ``sigma <= 0`` returns ``x`` unchanged. Wide kernels (>= 33 taps) on axes of at
    most 4096 points are applied as a matrix product with the same weights (same result up to float rounding).
    Runs in ``x``'s dtype even inside ``torch.autocast`` (it is physics, not a network layer).

    ``weight`` (B, 1, H, W) in [0, 1], optional: a data mask (1 = data). Pixels without data then count (almost)
    as missing too — ``blur(x w) / blur(w)`` with ``w`` floored at ``MASK_FLOOR`` = 1e-4 so that pixels far from
    any data keep a finite (unmasked) average. An all-ones ``weight`` is the plain blur.
    """
    if sigma <= 0:
        return x
    with torch.autocast(device_type=x.device.type, enabled=False):  # physics: keep x's precision under autocast
        if weight is None or bool((weight >= 1).all()):
            return _gaussian_blur(x, float(sigma), kernel_size)
        C = x.shape[1]
        w = weight.to(x.dtype).clamp(MASK_FLOOR, 1.0).expand(x.shape[0], 1, *x.shape[-2:])
        both = _gaussian_blur(torch.cat([x * w, w], dim=1), float(sigma), kernel_size)
        return both[:, :C] / both[:, C:]


def _gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int | None) -> torch.Tensor:
    B, C, H, W = x.shape
    radius = (kernel_size // 2) if kernel_size else int(math.ceil(3.0 * sigma))
    y = x.reshape(B * C, 1, H, W)
    for axis, n in ((-1, W), (-2, H)):
        r = min(radius, n - 1)
        if r <= 0:
            continue
        if 2 * r + 1 >= _MATMUL_MIN_TAPS and n <= _MATMUL_MAX_N:
            m = _blur_operator(n, r, float(sigma), x.dtype, x.device)
            y = y @ m.T if axis == -1 else m @ y
            continue
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        if axis == -1:
            w, pad = k.view(1, 1, 1, -1), (0, r)
            ones = torch.ones(1, 1, 1, n, dtype=x.dtype, device=x.device)
        else:
            w, pad = k.view(1, 1, -1, 1), (r, 0)
            ones = torch.ones(1, 1, n, 1, dtype=x.dtype, device=x.device)
        y = nnf.conv2d(y, w, padding=pad) / nnf.conv2d(ones, w, padding=pad)
    return y.reshape(B, C, H, W)


def lagrangian_stack(
    frames: torch.Tensor,
    velocity: torch.Tensor,
    *,
    n_iter: int = 1,
    interp: str = "bilinear",
    outval: float | str = 0.0,
) -> torch.Tensor:
    """Move past frames into the Lagrangian frame of the last one.

    ``frames`` (B, T, H, W) at times ``t-T+1 .. t`` (oldest first); ``velocity`` (B, 2, H, W) in pixels per
    step. Frame ``t-k`` is advected ``k`` steps forward with :func:`skydiff.advect` (``k`` unit steps along the
    same trajectories, pysteps semantics), so every output frame is aligned with the observation at ``t``; the
    last frame is returned unchanged. One ``advect`` call moves all frames together ``T-1`` steps and the
    diagonal (frame ``t-k`` after ``k`` steps) is kept. Differentiable with respect to frames and velocity.
    Departure points outside the grid get ``outval`` (default 0, i.e. dry inflow for mm/h fields).

    Returns (B, T, H, W).
    """
    B, T, H, W = frames.shape
    if T == 1:
        return frames
    adv = advect(frames[:, :-1], velocity, T - 1, n_iter=n_iter, interp=interp, outval=outval)  # (B, T-1, T-1, ...)
    ch = torch.arange(T - 1, device=frames.device)
    step = (T - 2) - ch  # frame j (= t-k with k = T-1-j) after k steps sits at step index k-1
    lag = adv[:, step, ch]  # (B, T-1, H, W)
    return torch.cat([lag, frames[:, -1:]], dim=1)


NODATA_MARGIN = 64  # px of zero-filled no-data kept around the data when predict() trims the grid


def _sample_arg(value: Any, i: int, batch: int) -> Any:
    """Sample ``i`` of a per-sample predict() option (a ``(B, ...)`` array such as a batched velocity ``(B, 2, H,
    W)``); anything else (shared by every sample) as it is."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 4 and value.shape[0] == batch:
        return value[i:i + 1]
    return value


def data_window(nodata: torch.Tensor, margin: int | None = None, multiple: int = 1,
                max_fraction: float = 0.9) -> tuple[slice, slice] | None:
    """Rows and columns of the bounding box of the pixels with data, widened by ``margin`` px and snapped outwards
    to the grid of ``multiple`` px that ``pad_to_multiple`` gives the whole field.

    ``nodata`` is a boolean ``(..., H, W)`` mask (True = no data; leading dimensions are pooled). The slices index
    the field *padded* by :func:`pad_to_multiple` to a multiple of ``multiple``, and cover whole blocks of
    ``multiple`` px of it, so that a U-Net with ``log2(multiple)`` poolings sees the window with the same pooling
    phase as the whole field (a shift by a non-multiple would change its output everywhere: U-Nets with strided
    pooling are not shift-equivariant). Returns None when there is no data at all or the window covers more than
    ``max_fraction`` of the padded grid (trimming would save little).
    """
    margin = NODATA_MARGIN if margin is None else int(margin)
    m = max(1, int(multiple))
    has = ~nodata.reshape(-1, *nodata.shape[-2:]).all(dim=0)
    rows, cols = torch.nonzero(has.any(dim=1)).flatten(), torch.nonzero(has.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    H, W = has.shape
    left, right, top, bottom = centred_pads(H, W, m)
    Hp, Wp = H + top + bottom, W + left + right

    def span(lo: int, hi: int, off: int, n: int) -> slice:
        a, b = lo + off - margin, hi + 1 + off + margin
        return slice(max(0, (a // m) * m), min(n, -(-b // m) * m))

    rs, cs = span(int(rows[0]), int(rows[-1]), top, Hp), span(int(cols[0]), int(cols[-1]), left, Wp)
    if (rs.stop - rs.start) * (cs.stop - cs.start) > max_fraction * Hp * Wp:
        return None
    return rs, cs


# ---------------------------------------------------------------------------------------------------------------
# base class of the nowcasting models
# ---------------------------------------------------------------------------------------------------------------


def _config_from_locals(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k not in ("self", "__class__")}


class NowcastModel(nn.Module):
    """Base class: transforms, input validation, NaN handling, :meth:`predict` and :meth:`rollout`.

    Subclasses set ``self.config`` (the constructor keyword arguments, JSON-serialisable; used by
    :func:`skydiff.nowcast.models.save_model`), ``self.n_input_frames`` and ``self.scaler`` and implement
    ``forward`` on transformed tensors. Single-step models (``autoregressive = True``) map a window of
    ``n_inputs`` channels to the next one, and get :meth:`rollout` and an autoregressive :meth:`predict`.
    """

    model_name: ClassVar[str] = ""
    predict_channels_last: ClassVar[bool] = True  # predict() runs CPU convolutions channels-last (faster)
    # why predict(precision="bfloat16"/"float16") is refused for this model (None: allowed)
    mixed_precision_refused: ClassVar[str | None] = None
    autoregressive: ClassVar[bool] = True
    # predict() passes ``valid`` (B, 1, H, W), 1 where some input frame has data, to ``_predict``
    takes_valid_mask: ClassVar[bool] = False

    config: dict[str, Any]
    n_input_frames: int
    scaler: Scaler
    min_rain: float = 0.0  # predict()'s default output cut (mm/h), see its ``min_rain``
    prob_match: str = "none"  # predict()'s default probability matching, see its ``prob_match``
    # attributes a card may set under "predict" (skydiff.registry.create_model) and save_model writes back
    predict_defaults: ClassVar[tuple[str, ...]] = ("min_rain", "prob_match")

    # --- transforms ---------------------------------------------------------------------------------------

    def transform(self, rain: torch.Tensor) -> torch.Tensor:
        """mm/h -> the space ``forward`` works in (see ``self.scaler.description``)."""
        return self.scaler.forward(rain)

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """Transformed space -> mm/h, clamped at 0."""
        return self.scaler.inverse(y)

    @property
    def dry_value(self) -> float:
        """``transform(0 mm/h)``."""
        return self.scaler.zero

    def extra_repr(self) -> str:
        return f"scaler={self.scaler.name!r}, n_input_frames={self.n_input_frames}"

    # --- helpers ------------------------------------------------------------------------------------------

    @property
    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def _check_forward_input(self, x: torch.Tensor, channels: int, what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{type(self).__name__}.forward expects a torch tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != channels:
            raise ShapeError(
                f"{type(self).__name__}.forward expects {what} of shape (B, {channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-2] < 2 or x.shape[-1] < 2:
            raise ShapeError(f"{type(self).__name__}: fields must be at least 2 x 2 pixels, got {tuple(x.shape[-2:])}")

    def _as_frames(self, frames: Any) -> tuple[torch.Tensor, bool, bool]:
        """Validate mm/h frames; return (B, T, H, W) on the model's device/dtype, squeezed?, numpy input?"""
        numpy_in = not isinstance(frames, torch.Tensor)
        if numpy_in:
            arr = native_array(frames)  # masked pixels are no data (NaN), not their fill values
            if arr.dtype.kind not in "biuf":
                raise InputError(f"frames must be a real numeric array, got dtype {arr.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
        else:
            x = frames
            if x.is_complex():
                raise InputError("frames must be real-valued")
        if x.ndim == 3:
            x, squeeze = x[None], True
        elif x.ndim == 4:
            squeeze = False
        else:
            raise ShapeError(
                f"{type(self).__name__}.predict expects frames (B, T, H, W) or (T, H, W) in mm/h, got shape "
                f"{tuple(x.shape)}"
            )
        n = self.n_input_frames
        if x.shape[1] < n:
            raise InputError(f"{type(self).__name__} needs at least {n} input frames, got {x.shape[1]}")
        g = self.min_grid()
        if x.shape[-2] < g or x.shape[-1] < g:
            raise ShapeError(f"{type(self).__name__} needs frames of at least {g} x {g} pixels, got "
                             f"{tuple(x.shape[-2:])}: its network downsamples by {g}, so on a smaller grid its deepest "
                             "level would see padding only (a 1-km radar nowcast wants ~100 km or more around the rain)")
        p = self._param
        x = x[:, -n:].to(device=p.device, dtype=p.dtype)
        if bool(torch.isinf(x).any()):
            raise InputError("frames contain infinite values; use NaN for no data")
        lo = torch.nan_to_num(x, nan=0.0).min()
        if float(lo) < -1e-6:
            raise InputError(f"frames must be rain rates in mm/h (>= 0), found {float(lo):.3g}")
        return x, squeeze, numpy_in

    # --- public API ---------------------------------------------------------------------------------------

    def predict(self, frames: Any, leadtimes: int, *, precision: str | None = None, trim_nodata: bool = True,
                return_motion: bool = False, min_rain: float | None = None, prob_match: str | None = None,
                **kwargs: Any) -> Any:
        """Nowcast ``leadtimes`` steps of 5 min from past rain fields, without gradients and in eval mode.

        Parameters
        ----------
        frames
            ``(B, T, H, W)`` or ``(T, H, W)`` rain rates in mm/h, oldest first, 5 min apart (numpy or torch);
            NaN = no data. ``T >= n_input_frames``; only the last ``n_input_frames`` are used.
        leadtimes
            Number of 5-min lead times.
        precision
            ``None`` or ``"full"`` (default): everything in the model's dtype (float32 for the shipped weights).
            ``"bfloat16"`` or ``"float16"``: mixed precision — the networks' convolutions run in that type
            (``torch.autocast``) while the advection, the motion blur and the outputs stay in the model's dtype.
            Measured ~2x faster on a CPU with native bfloat16 (AVX512-BF16) on full radar grids (not on small
            crops), at a cost of ~1e-2 relative on average in the outputs, but single pixels can change by up
            to ~1.5 mm/h after 6 autoregressive leads; scores on the validation part moved by <= 0.009 CSI/ETS
            (LUPIN and RainNet, ``benchmarks/RESULTS.md`` §5 "Speed"); on GPUs autocast uses the tensor
            cores (not timed yet). Without native support bfloat16 is emulated and slower; ``"float16"`` is meant
            for GPUs. SmaAt-UNet refuses it (see its ``mixed_precision_refused``).
        trim_nodata
            Run the networks only on the bounding box of the pixels with data (plus a margin of
            ``NODATA_MARGIN`` = 64 px, see :func:`data_window`) when that box is less than 90 % of the grid: the
            KNMI composite, for example, has data on 26 % of its 765 x 700 pixels. Outside the box every output
            is NaN anyway (no input there); inside it the nowcast differs from the untrimmed one only through
            what the networks saw of the zero-filled no-data area: RainNet by 0.0013 mm/h at most, the shipped
            LUPIN by up to 3.3 mm/h at single pixels (mean ~0.01 mm/h; its 4D-Var motion is estimated on the
            window) and SmaAt-UNet by up to 1.1 mm/h (its ``align_corners`` upsampling scales with the grid), with
            the same pooled CSI (measured in ``benchmarks/RESULTS.md`` §5 "Trimming the no-data frame"). Each
            sequence of a batch gets its own window (sequences whose windows differ run one by one). ``False``:
            always the whole grid.
        return_motion
            Also return the steady motion the model moved the rain along, ``(B, 2, H, W)`` px per step (``(2, H, W)``
            for a ``(T, H, W)`` input; NaN outside the trimmed window, where none was estimated): L-CNN and a LUPIN
            with a ``motion_prior`` (the shipped one; a LUPIN that learns a correction to its prior returns prior +
            correction of the first lead); None for the other models.
        min_rain
            Output rain rates below this (mm/h) are set to 0 — after the network, not fed back to the next lead
            time, so scores at higher thresholds do not change. The networks rarely output exact zeros: without
            a cut a large part of a dry area holds 0.01-0.1 mm/h "drizzle", which raises the MAE. None: the
            model's ``min_rain`` attribute (0 unless its card sets one, see ``benchmarks/RESULTS.md`` §5).
        prob_match
            ``"cdf"``: give every lead time the rain-rate distribution of the last input frame over the pixels with
            data (:func:`skydiff.nowcast.postprocess.match_cdf`, pysteps' non-parametric CDF matching), after
            the network and before the ``min_rain`` cut, not fed back. Networks trained on a mean loss smooth
            their peaks and spread drizzle; matching restores the observed intensities while keeping where the
            network puts the rain. ``"none"``: no matching. None: the model's ``prob_match`` attribute
            (``"none"`` unless its card sets one).
        **kwargs
            Model-specific options (e.g. ``velocity`` for L-CNN; arrays on the input grid are trimmed with it).

        NaN handling: NaN inputs are read as 0 mm/h (dry). Output pixels where *every* used input frame is NaN
        are NaN at every lead time; all other output pixels are finite and >= 0 mm/h. A sequence without any
        rain (every used input pixel 0 or NaN) gets a dry nowcast (0 mm/h) and a :class:`SkydiffWarning`.

        Returns
        -------
        ``(B, leadtimes, H, W)`` in mm/h (``(leadtimes, H, W)`` for a ``(T, H, W)`` input) on the model's
        device and dtype; numpy for numpy input. With ``return_motion``: ``(nowcast, motion)``.
        """
        amp = self.check_request(leadtimes, precision, direct=False)
        cut = check_rain_rate("min_rain", self.min_rain if min_rain is None else min_rain)
        match = check_prob_match(self.prob_match if prob_match is None else prob_match)
        x, squeeze, numpy_in = self._as_frames(frames)
        nodata = torch.isnan(x).all(dim=1, keepdim=True)  # (B, 1, H, W)
        grid = self._pad_grid() if trim_nodata else None
        window = None
        if grid is not None:  # each sequence's own data window (the same for all, or they run one by one)
            wins = [data_window(nodata[i, 0], multiple=grid[0]) for i in range(x.shape[0])]
            window = wins[0]
            if any(w != window for w in wins[1:]):
                # samples with different data windows run one by one: a window shared by the batch (their union)
                # made each sample's nowcast depend on the others (SmaAt-UNet: up to 1.5 mm/h on KNMI frames)
                parts = [self.predict(x[i:i + 1], leadtimes, precision=precision, trim_nodata=True,
                                      return_motion=True, min_rain=min_rain, prob_match=prob_match,
                                      **{k: _sample_arg(v, i, x.shape[0]) for k, v in kwargs.items()})
                         for i in range(x.shape[0])]
                out = torch.cat([o for o, _ in parts])
                motion = None if parts[0][1] is None else torch.cat([mo for _, mo in parts])
                if numpy_in:
                    out = out.cpu().numpy()
                    motion = None if motion is None else motion.cpu().numpy()
                return (out, motion) if return_motion else out
        x = torch.nan_to_num(x, nan=0.0).clamp_min(0.0)
        dry = (x <= 0.0).flatten(1).all(dim=1)  # (B,): no rain anywhere in the used inputs
        if bool(dry.any()):
            warn(f"{type(self).__name__}.predict: {int(dry.sum())} of {len(dry)} input sequence(s) hold no rain "
                 "at all; their nowcast is dry (0 mm/h)")
        was_training = self.training
        self.eval()
        if self.takes_valid_mask:
            kwargs["valid"] = (~nodata).to(x.dtype)
        xin, forced = x, None
        H, W = x.shape[-2:]
        if window is not None:
            # The window is a block-aligned box of the grid padded as the whole grid would be; the model gets its
            # part on the grid (physics on the grid, as without trimming) and its U-Nets pad the sides that touch
            # the grid's edge by what the whole grid gets there (forced_pads), which keeps the pooling phase
            rs, cs = window
            pads = centred_pads(H, W, grid[0])
            r0, r1 = max(0, rs.start - pads[2]), min(H, rs.stop - pads[2])
            c0, c1 = max(0, cs.start - pads[0]), min(W, cs.stop - pads[0])
            forced = (c0 - (cs.start - pads[0]), (cs.stop - pads[0]) - c1, r0 - (rs.start - pads[2]),
                      (rs.stop - pads[2]) - r1)
            xin = x[..., r0:r1, c0:c1]
            spec = self._flow_spec(kwargs)
            if spec is not None:  # the flow the model would estimate on the window, as on the whole grid
                kwargs = self._window_flow(x, spec, kwargs, rows=(r0, r1), cols=(c0, c1))
            kwargs = {k: self._trim_grid_arg(v, x, r0, r1, c0, c1) for k, v in kwargs.items()}
        restore = self._to_channels_last() if self.predict_channels_last else None
        nets = self._padded_nets()
        try:
            for net in nets:
                net.forced_pads = forced
            with torch.no_grad(), torch.autocast(device_type=x.device.type, dtype=amp, enabled=amp is not None):
                res = self._predict(xin, int(leadtimes), **kwargs)
                out, motion = res if isinstance(res, tuple) else (res, None)
                out = out.to(x.dtype)
                motion = None if motion is None else motion.to(x.dtype)
        finally:
            for net in nets:
                net.forced_pads = None
            self.train(was_training)
            if restore is not None:
                self.to(memory_format=restore)
        if window is not None:  # back to the grid; outside the window there is no data (NaN below)

            def unwindow(a: torch.Tensor) -> torch.Tensor:
                full = a.new_full((*a.shape[:2], H, W), float("nan"))
                full[..., r0:r1, c0:c1] = a
                return full

            out = unwindow(out)
            motion = None if motion is None else unwindow(motion)
        out = out.clamp_min(0.0).masked_fill(dry[:, None, None, None], 0.0)
        if match == "cdf":
            out = match_cdf(out, x[:, -1], ~nodata[:, 0])
        if cut > 0:
            out = out.masked_fill(out < cut, 0.0)
        out = out.masked_fill(nodata, float("nan"))
        if squeeze:
            out = out[0]
            motion = None if motion is None else motion[0]
        if numpy_in:
            out = out.cpu().numpy()
            motion = None if motion is None else motion.cpu().numpy()
        return (out, motion) if return_motion else out

    @staticmethod
    def _velocity(velocity: Any, x: torch.Tensor) -> torch.Tensor:
        """A caller's motion field for frames ``x`` (B, T, H, W): (2, H, W) or (B, 2, H, W), numpy or torch, px per
        step -> (B, 2, H, W) on x's device and dtype; ShapeError / InputError (NaN) otherwise."""
        v = velocity if isinstance(velocity, torch.Tensor) else torch.from_numpy(np.asarray(velocity, dtype=np.float64))
        if v.ndim == 3:
            v = v[None]
        B, _, H, W = x.shape
        if v.ndim != 4 or v.shape[1:] != (2, H, W) or v.shape[0] not in (1, B):
            raise ShapeError(f"velocity must be (2, H, W) or (B, 2, H, W) with H, W = {H, W}, got {tuple(v.shape)}")
        v = v.to(device=x.device, dtype=x.dtype).expand(B, -1, -1, -1)
        if not bool(torch.isfinite(v).all()):
            raise InputError("velocity contains NaN or infinite values")
        return v

    def min_grid(self) -> int:
        """Smallest ``H`` and ``W`` that :meth:`predict` accepts: one block of the deepest network level (the U-Nets'
        padding multiple, SpaT-SparK's patch), at least 3."""
        sizes = [n.multiple for n in self._padded_nets()]
        patch = getattr(self, "patch", None)
        if isinstance(patch, int):
            sizes.append(patch)
        return max([3, *sizes])

    def check_request(self, leadtimes: Any, precision: str | None = None, direct: bool = True) -> torch.dtype | None:
        """:class:`InputError` unless this model can predict ``leadtimes`` steps in ``precision`` (checked by
        :meth:`predict`, and by the CLI before it reads the input); returns the autocast dtype (None: full).
        ``direct``: also the lead times of a model that predicts them in one pass (:meth:`predict` checks those
        after the frames)."""
        if isinstance(leadtimes, bool) or not isinstance(leadtimes, (int, np.integer)) or leadtimes < 1:
            raise InputError(f"leadtimes must be a positive number of steps, got {leadtimes!r}")
        if direct and not self.autoregressive:
            self._check_direct_leadtimes(int(leadtimes))
        amp = autocast_dtype(precision, next(self.parameters()).device)
        if amp is not None and self.mixed_precision_refused:
            raise InputError(f"{type(self).__name__} does not run in {precision}: {self.mixed_precision_refused}; "
                             "run it in full precision (precision=None, or --precision full)")
        return amp

    def _check_direct_leadtimes(self, leadtimes: int) -> None:
        """For a model that predicts its ``leadtime_steps`` in one pass: predict()'s lead times 1 .. ``leadtimes``
        must be its first outputs (a model of steps (6,) returned its +30 min field as lead 1)."""
        steps = [int(s) for s in self.leadtime_steps]
        name = type(self).__name__
        if leadtimes > len(steps):
            raise InputError(f"{name} predicts {len(steps)} lead time(s) (steps {steps}) directly; got "
                             f"leadtimes={leadtimes} (build it with n_out={leadtimes} for more)")
        if steps[:leadtimes] != list(range(1, leadtimes + 1)):
            raise InputError(f"{name} predicts the steps {steps}, not the consecutive lead times 1 .. {leadtimes} "
                             "that predict() returns; call the model itself for its own steps")

    def _padded_nets(self) -> list[PaddedNet]:
        """The model's :class:`PaddedNet` parts (its U-Nets)."""
        return [m for m in self.modules() if isinstance(m, PaddedNet)]

    def _pad_grid(self) -> tuple[int, str] | None:
        """``(multiple, pad_mode)`` the model's U-Nets pad their inputs to, or None when it has none or they pad
        differently or to different multiples (then predict() does not trim: one window's forced pads keep the
        pooling phase of one multiple only; a LUPIN with motion_depth 3 under depth 4 changed by 1e-3 inside)."""
        nets = self._padded_nets()
        if not nets or len({(n.pad_mode, n.multiple) for n in nets}) != 1:
            return None
        return nets[0].multiple, nets[0].pad_mode

    def _flow_spec(self, kwargs: dict[str, Any]) -> tuple[str, int, dict[str, Any], str | None] | None:
        """``(method, frames, method kwargs, name of the predict option they came from)`` of the optical flow that
        ``_predict`` would estimate itself with these ``predict`` options; None when it estimates none (no flow in
        the model, or the caller gave a ``velocity``). Models with an optical flow override it."""
        return None

    def _window_flow(self, x: torch.Tensor, spec: tuple[str, int, dict[str, Any], str | None],
                     kwargs: dict[str, Any], rows: tuple[int, int], cols: tuple[int, int]) -> dict[str, Any]:
        """``kwargs`` with ``velocity``: the model's Lucas-Kanade flow of the frames ``x`` (B, T, H, W) on the
        trimmed window (``rows``/``cols`` of the grid), computed on a window that starts on the grid of LK's
        declustering cells (``decl_scale``, 20 px) and of ``grid_stride``, so that it equals the whole-grid flow there (pysteps bins the vectors from the array origin; an
        unaligned window gave up to ~1 px/step different motion on KNMI frames, an aligned one 6e-4). Other
        flow methods (global, e.g. VET) are left to the model, on the window."""
        from ...motion import estimate_batch, get_method

        method, k, mkw, option = spec
        if get_method(method).name != "lk":
            return kwargs

        H, W = x.shape[-2:]
        step = math.lcm(int(mkw.get("decl_scale", 20)), int(mkw.get("grid_stride", 1)))
        r0, r1 = rows[0] // step * step, rows[1]
        c0, c1 = cols[0] // step * step, cols[1]
        with warnings.catch_warnings():  # pysteps' LK warns on sparse features; the flow is still returned
            warnings.simplefilter("ignore")
            flow = estimate_batch(x[:, :, r0:r1, c0:c1], method, k, **mkw).to(x.dtype)
        full = x.new_zeros(x.shape[0], 2, H, W)
        full[..., r0:r1, c0:c1] = flow
        out = {key: v for key, v in kwargs.items() if key != option}
        out["velocity"] = full
        return out

    @staticmethod
    def _trim_grid_arg(value: Any, x: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> Any:
        """A predict() keyword argument on the input grid (e.g. L-CNN's ``velocity``), trimmed like the frames
        (rows ``r0:r1``, columns ``c0:c1``); anything else unchanged."""
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) < 2 or tuple(shape[-2:]) != tuple(x.shape[-2:]):
            return value
        v = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float64))
        return v.to(device=x.device, dtype=x.dtype)[..., r0:r1, c0:c1]

    def _to_channels_last(self) -> torch.memory_format | None:
        """Switch the 4-D weights to channels-last for inference on the CPU (oneDNN convolutions then run ~1.5x
        faster on large grids, e.g. LUPIN on 765 x 700: 28.6 s -> 18.6 s on one thread; outputs agree to float
        rounding). Returns the format to restore afterwards, or None when nothing was changed."""
        w = next((p for p in self.parameters() if p.ndim == 4), None)
        if w is None or w.device.type != "cpu" or w.is_contiguous(memory_format=torch.channels_last):
            return None
        self.to(memory_format=torch.channels_last)
        return torch.contiguous_format

    def _predict(self, x: torch.Tensor, leadtimes: int, valid: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        """x (B, n_input_frames, H, W) in mm/h, NaN-free -> (B, leadtimes, H, W) mm/h. ``valid`` (only passed to
        models with ``takes_valid_mask``) goes to every ``forward`` call of the rollout."""
        if kwargs:
            raise InputError(f"{type(self).__name__}.predict got unexpected options {sorted(kwargs)}")
        fk = {"valid": valid} if self.takes_valid_mask else {}
        y = self.rollout(self.transform(x), leadtimes, clamp=True, **fk)
        return self.inverse_transform(y)

    def rollout(self, x: torch.Tensor, leadtimes: int, *, detach: bool = True, clamp: bool = False,
                **forward_kwargs: Any) -> torch.Tensor:
        """Autoregressive rollout in the transformed space (single-step models).

        ``x`` is the ``forward`` input ``(B, C, H, W)``; each step's output ``(B, 1, H, W)`` is appended to the
        window and the oldest channel dropped. ``detach=True`` cuts the gradient between steps (no
        back-propagation through time, as LUPIN's trainer, reference §1); ``clamp=True`` feeds back
        ``max(y, dry_value)`` (used by :meth:`predict`); ``forward_kwargs`` go to every ``forward`` call.
        Returns ``(B, leadtimes, H, W)`` of raw outputs.
        """
        if not self.autoregressive:
            raise InputError(f"{type(self).__name__} is not a single-step model; call it directly")
        outs = []
        z = x
        for _ in range(leadtimes):
            y = self(z, **forward_kwargs)
            outs.append(y)
            fb = self._feedback(y) if clamp else y
            if detach:
                fb = fb.detach()
            z = torch.cat([z[:, 1:], fb], dim=1)
        return torch.cat(outs, dim=1)

    def _feedback(self, y: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` feeds back into the window: the prediction clamped at ``dry_value``."""
        return y.clamp_min(self.dry_value)

    def n_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
