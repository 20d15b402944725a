"""Differentiable backward semi-Lagrangian advection (placeholder: full implementation landing)."""
from __future__ import annotations


def advect(field, velocity, steps, *, n_iter=1, interp="bilinear", outval=float("nan")):
    raise NotImplementedError
