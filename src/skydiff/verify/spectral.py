"""Radially averaged power spectral density (RAPSD) in torch, binned exactly like pysteps.

``rapsd(field)`` equals ``pysteps.utils.spectral.rapsd(field, fft_method=numpy.fft)``:

1. ``P = |fftshift(fft2(field))|² / (H·W)`` (zero frequency at index ``(H//2, W//2)``);
2. every frequency cell gets the integer radius ``r = round(sqrt(kx² + ky²))`` where ``ky = i − H//2`` and
   ``kx = j − W//2`` (pysteps' ``compute_centred_coord_array``; rounding half to even, although no ties occur);
3. the RAPSD is the mean of ``P`` over the ring ``r`` for ``r = 0 … n − 1`` with ``l = max(H, W)`` and
   ``n = l // 2`` for even ``l``, ``l // 2 + 1`` for odd ``l``. For a non-square field the rings are circles in
   index space (the shorter axis is not rescaled), as in pysteps. A ring without cells would be NaN.
4. ``normalize=True`` divides by the sum over the rings; the frequencies are ``k / (l·d)``, ``k = 0 … n − 1``
   (``numpy.fft.fftfreq(l, d)[:n]``).

The computation is differentiable (FFT, squared modulus, ``index_add``), so it can be used in spectral losses.
Unlike pysteps, a stack ``(..., H, W)`` is accepted and gives one spectrum per field.

:func:`rapsd_ratio_db` compares the mean spectrum of a prediction (e.g. a downscaled ensemble) with that of the
truth, in dB per wavelength (0 dB = same power at that scale; +3 dB = twice the power).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError, ShapeError
from .continuous import _float_tensor, _is_torch

__all__ = ["rapsd", "rapsd_ratio_db"]

#: Smallest grid side (pixels) with a ring besides the mean (zero frequency), i.e. a wavelength of at least 2 px.
MIN_SIDE = 3


def _ring_index(h: int, w: int) -> tuple[np.ndarray, int]:
    yc = np.arange(h) - h // 2
    xc = np.arange(w) - w // 2
    r = np.round(np.sqrt(yc[:, None] ** 2 + xc[None, :] ** 2)).astype(np.int64)
    l = max(h, w)
    nbins = l // 2 + (l % 2)
    return r.ravel(), nbins


def rapsd(
    field: Any,
    return_freq: bool = False,
    d: float = 1.0,
    normalize: bool = False,
    fill: float | None = None,
) -> Any:
    """Radially averaged power spectral density of a field (or of every field of a stack).

    Parameters
    ----------
    field:
        Array/tensor of shape ``(H, W)`` or ``(..., H, W)``, real-valued.
    return_freq:
        Also return the frequencies of the rings, ``k / (max(H, W)·d)``.
    d:
        Sample spacing (e.g. km per pixel) for the frequencies.
    normalize:
        Divide each spectrum by its sum (so it sums to one).
    fill:
        Non-finite values (NaN, ±inf) raise :class:`~skydiff.errors.InputError` unless ``fill`` is given, in
        which case they are replaced by ``fill`` (e.g. 0 for "no rain") before the FFT.

    The grid must be at least 3 × 3 pixels (:class:`~skydiff.errors.ShapeError` otherwise), and with
    ``normalize=True`` no field may be all zero (:class:`~skydiff.errors.InputError`).

    Returns
    -------
    out, or (out, freq)
        ``out`` of shape ``(..., n)`` with ``n = l//2`` (even ``l``) or ``l//2 + 1`` (odd ``l``),
        ``l = max(H, W)``; ``freq`` of shape ``(n,)``. numpy arrays for numpy input, tensors (input's device
        and real dtype) for torch input. See :mod:`skydiff.verify.spectral` for the exact binning.
    """
    numpy_out = not _is_torch(field)
    x = _float_tensor(field, "field")
    if x.ndim < 2:
        raise ShapeError(f"rapsd needs a field of shape (..., H, W), got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < MIN_SIDE:
        raise ShapeError(f"rapsd needs a grid of at least {MIN_SIDE} x {MIN_SIDE} pixels (a smaller one has no "
                         f"wavelength of 2 px or more besides the mean), got {tuple(x.shape[-2:])}")
    if x.numel() == 0:
        raise ShapeError(f"rapsd got an empty stack of fields, shape {tuple(x.shape)}")
    try:
        d = float(d)
    except (TypeError, ValueError) as exc:
        raise InputError(f"d (sample spacing) must be a positive number, got {d!r}") from exc
    if not d > 0 or not np.isfinite(d):
        raise InputError(f"d (sample spacing) must be a positive number, got {d!r}")
    x = _filled(x, fill, "field")

    h, w = x.shape[-2:]
    spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    psd = (spec.real**2 + spec.imag**2) / float(h * w)

    r, nbins = _ring_index(h, w)
    keep = r < nbins
    idx = torch.from_numpy(r[keep]).to(x.device)
    flat = psd.reshape(*psd.shape[:-2], h * w)[..., torch.from_numpy(np.flatnonzero(keep)).to(x.device)]
    sums = torch.zeros(*psd.shape[:-2], nbins, dtype=psd.dtype, device=x.device).index_add(-1, idx, flat)
    counts = torch.from_numpy(np.bincount(r[keep], minlength=nbins).astype(np.float64)).to(psd.dtype).to(x.device)
    out = sums / counts
    if normalize:
        total = out.sum(-1, keepdim=True)
        zero = (total == 0).flatten()
        if bool(zero.any()):
            which = "the field" if out.ndim == 1 else f"field {int(torch.nonzero(zero)[0])} (leading dims flattened)"
            raise InputError(f"normalize=True: {which} has no power to normalise by (all values zero, e.g. a dry "
                             "field); use normalize=False")
        out = out / total

    l = max(h, w)
    freq = torch.arange(nbins, dtype=torch.float64) / (l * d)
    if numpy_out:
        out_np = out.detach().cpu().numpy()
        return (out_np, freq.numpy()) if return_freq else out_np
    if return_freq:
        return out, freq.to(dtype=out.dtype, device=x.device)
    return out


def _filled(x: torch.Tensor, fill: Any, name: str) -> torch.Tensor:
    """``x`` with its non-finite values replaced by ``fill``; InputError naming ``name`` when there are some and
    ``fill`` is None."""
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return x
    if fill is None:
        raise InputError(f"{name} contains {int((~finite).sum())} non-finite value(s) (NaN or inf); pass "
                         "fill=<value> to replace them")
    return torch.where(finite, x, torch.as_tensor(_check_fill(fill), dtype=x.dtype, device=x.device))


def _check_fill(fill: Any) -> float:
    """``fill`` as a finite float, else InputError."""
    try:
        fill_v = float(fill)
    except (TypeError, ValueError):
        fill_v = float("nan")
    if not np.isfinite(fill_v):
        raise InputError(f"fill must be a finite number, got {fill!r}")
    return fill_v


def rapsd_ratio_db(pred: Any, obs: Any, *, d: float = 1.0, fill: float | None = None) -> tuple[Any, Any]:
    """Ratio of the mean RAPSD of ``pred`` to that of ``obs``, in dB, per wavelength.

    ``ratio_db[k] = 10·log10(mean RAPSD(pred)[k] / mean RAPSD(obs)[k])`` for the rings ``k = 1 … n − 1`` of
    :func:`rapsd` (the zero-frequency ring is left out), where the means are taken over all leading
    dimensions (members, times) of each input. Positive values: too much power (e.g. noise) at that
    wavelength; negative: too smooth (e.g. interpolation). A truth without power (every field constant, e.g.
    dry) raises :class:`~skydiff.errors.InputError`; a prediction without power gives ``-inf`` dB.

    Parameters
    ----------
    pred:
        ``(..., H, W)``: a field, or a stack with leading member/time dimensions (their spectra are averaged).
    obs:
        ``(..., H, W)`` on the same grid (leading dimensions may differ from ``pred``'s).
    d:
        Pixel size (e.g. km): the wavelengths are returned in the same unit (pixels by default).
    fill:
        Value that replaces non-finite values before the FFT (see :func:`rapsd`); by default they raise
        :class:`~skydiff.errors.InputError`.

    Returns
    -------
    (wavelengths, ratio_db)
        1-D, ``n − 1`` values each, wavelengths ``max(H, W)·d / k`` decreasing from ``max(H, W)·d`` to just
        above ``2·d``. numpy for numpy input, torch (inputs' device) when either input is a tensor.
    """
    numpy_out = not _is_torch(pred, obs)
    p = _float_tensor(pred, "pred")
    o = _float_tensor(obs, "obs", p.device if isinstance(pred, torch.Tensor) else None)
    if p.ndim < 2 or o.ndim < 2:
        raise ShapeError(f"pred and obs must be (..., H, W), got shapes {tuple(p.shape)} and {tuple(o.shape)}")
    if p.shape[-2:] != o.shape[-2:]:
        raise ShapeError(
            f"pred and obs must share the grid (H, W), got {tuple(p.shape[-2:])} and {tuple(o.shape[-2:])}"
        )
    if isinstance(obs, torch.Tensor) and not isinstance(pred, torch.Tensor):
        p = p.to(o.device)
    if fill is not None:
        _check_fill(fill)  # (checked whether or not there is something to fill)
    p, o = _filled(p, fill, "pred"), _filled(o, fill, "obs")  # (rapsd's own message would not say which)
    dtype = torch.promote_types(p.dtype, o.dtype)
    sp = rapsd(p.to(dtype), d=d)
    so = rapsd(o.to(dtype), d=d)
    n = sp.shape[-1]
    mp = sp.reshape(-1, n).mean(0)[1:]
    mo = so.reshape(-1, n).mean(0)[1:]
    of = o.reshape(-1, o.shape[-2] * o.shape[-1])  # (filled above)
    if not bool((mo > 0).any()) or bool((of == of[:, :1]).all()):  # constant fields: FFT round-off is no power
        raise InputError("obs (the truth) has no power at any wavelength: all values equal in every field (e.g. a "
                         "dry field), so the ratio is undefined")
    ratio = 10.0 * torch.log10(mp / mo)
    h, w = p.shape[-2:]
    l = max(h, w)
    wl = (l * float(d)) / torch.arange(1, n, dtype=torch.float64)
    if numpy_out:
        return wl.numpy(), ratio.detach().cpu().numpy()
    return wl.to(dtype=ratio.dtype, device=ratio.device), ratio
