"""Post-processing of nowcasts: matching their rain-rate distribution to an observed field.

Written by hand rather than calling pysteps because it runs on torch tensors on any device, batched, with a
no-data mask; it follows pysteps' ``postprocessing.probmatching.nonparam_match_empirical_cdf`` (cross-checked in
``tests/test_nowcast_postprocess.py``).
"""

from __future__ import annotations

import torch

from ..errors import InputError, ShapeError

PROB_MATCH_METHODS = ("none", "cdf")


def check_prob_match(value: object) -> str:
    """``value`` if it names a probability-matching method (``"none"``: no matching), else :class:`InputError`."""
    if isinstance(value, str) and value in PROB_MATCH_METHODS:
        return value
    raise InputError(f"prob_match must be one of {list(PROB_MATCH_METHODS)}, got {value!r}")


def match_cdf(fields: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Give every field of ``fields`` the empirical distribution of ``target`` (non-parametric CDF matching).

    Parameters
    ----------
    fields
        ``(B, T, H, W)`` rain rates (e.g. a nowcast's lead times), >= 0.
    target
        ``(B, H, W)`` the field whose distribution each of the ``T`` fields of the same batch member gets (e.g.
        the last observation).
    valid
        ``(B, H, W)`` bool, the pixels that take part (e.g. where there are data); None: all. Others are returned
        unchanged.

    The k-th smallest valid value of a field is replaced by the k-th smallest valid value of ``target``, so the
    field keeps its ranks (where the rain is) and takes the target's intensities. As in pysteps'
    ``nonparam_match_empirical_cdf``: pixels at the field's minimum (dry) stay at the target's minimum — when
    the target is wet on more pixels than the field, its smallest wet values are set dry first, so matching
    never turns a dry pixel wet. The ranking is not differentiable: a gradient flows only to the target's values
    (each matched pixel takes one of them) and to the pixels outside ``valid`` (returned as they are). Integer
    ``fields`` come back in torch's default float dtype (the target's intensities are not rounded).
    """
    if not isinstance(fields, torch.Tensor) or not isinstance(target, torch.Tensor) or (
            valid is not None and (not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool)):
        raise InputError("match_cdf takes torch tensors: fields, target and a bool valid mask (or None)")
    if fields.ndim != 4 or target.ndim != 3 or fields.shape[0] != target.shape[0] or \
            fields.shape[-2:] != target.shape[-2:]:
        raise ShapeError(f"match_cdf expects fields (B, T, H, W) and target (B, H, W) on the same grid, got "
                         f"{tuple(fields.shape)} and {tuple(target.shape)}")
    if valid is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    elif valid.shape != target.shape:
        raise ShapeError(f"match_cdf: valid must be {tuple(target.shape)}, got {tuple(valid.shape)}")
    if bool((torch.isnan(target) & valid).any()) or bool((torch.isnan(fields) & valid[:, None]).any()):
        # (sorted last, NaN took the target's heaviest rain, and the target's NaN went onto the field's peaks)
        raise InputError("match_cdf: NaN (no data) among the valid pixels; leave them out with valid=")
    if not fields.is_floating_point():
        fields = fields.to(torch.get_default_dtype())
    out = fields.clone()
    for b in range(fields.shape[0]):
        m = valid[b]
        n = int(m.sum())
        if n == 0:
            continue
        trg = torch.sort(target[b][m].to(fields.dtype)).values
        trg_dry = trg == trg[0]
        for t in range(fields.shape[1]):
            v = fields[b, t][m]
            wet = int((v != v.min()).sum())
            tb = trg
            if int((~trg_dry).sum()) > wet:  # fewer wet pixels than the target: drop the target's lightest rain
                tb = trg.clone()
                tb[: n - wet] = trg[0]
            order = torch.argsort(v, stable=True)
            matched = torch.empty_like(v)
            matched[order] = tb
            out[b, t][m] = matched
    return out


__all__ = ["match_cdf", "check_prob_match", "PROB_MATCH_METHODS"]
