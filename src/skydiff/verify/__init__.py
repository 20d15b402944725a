"""Verification scores in torch: continuous, categorical, FSS, RAPSD, lead-time tables.

Every function accepts numpy arrays or torch tensors. numpy in → python floats / numpy arrays out; torch in →
torch tensors out on the inputs' device. A pixel where the forecast or the observation is NaN is masked out
(not counted) everywhere — unlike pysteps, which treats NaN as "no event" in its categorical scores and FSS.
Forecast and observation must have the same shape (:class:`~skydiff.errors.ShapeError` otherwise).

- :func:`continuous`    MSE, RMSE, MAE, ME (differentiable)
- :func:`contingency`   2×2 table (:class:`Contingency`, addable), event ``x >= thr`` by default, ``event="gt"``
                        reproduces pysteps' ``det_cat_fct`` (``x > thr``)
- :func:`categorical`   CSI, POD, FAR (ratio), ETS (= pysteps GSS), HSS, ACC, precision, F1, bias, POFD
- :func:`aggregate`     scores over a data set, ``how="pooled"`` (micro) or ``"mean"`` (macro)
- :func:`fss`, :func:`fss_curve`  fractions skill score with pysteps' definition (event ``x >= thr``,
                        zero-padded box filter); optional soft (differentiable) events
- :func:`rapsd`         radially averaged power spectrum with pysteps' binning; :func:`rapsd_ratio_db` the
                        ratio of two mean spectra in dB per wavelength (downscaling)
- :func:`crps_ensemble`, :func:`crps_pooled`  ensemble CRPS (``"fair"`` by default or ``"nrg"``), point-wise or
                        after 4×4 / 16×16 avg/max pooling (:mod:`.probabilistic`)
- :func:`percentile_bias`, :func:`wet_fraction`, :func:`negative_fraction`, :func:`qq`, :func:`ks_normal`
                        distribution checks (extremes, dry/wet, negative rain, Q-Q, KS to N(0, 1);
                        :mod:`.distribution`)
- :func:`score_table`   one row per lead time and threshold (pandas DataFrame)
- :func:`smaat_protocol`, :func:`spatspark_protocol`  the two published NL-50 metric protocols with their quirks
                        (47.83 vs 47.18, cumulative x12 thresholds, HSS without the factor 2, micro vs per-lead
                        averaging), :func:`to_nl50` / :func:`from_nl50` for the normalised units;
                        :func:`protocol_accumulator` (a :class:`ProtocolAccumulator`) scores a data set batch by
                        batch under either protocol

The conventions are documented in the sub-modules :mod:`.continuous`, :mod:`.categorical`, :mod:`.spatial`,
:mod:`.spectral`.
"""

from __future__ import annotations

from .categorical import CATEGORICAL_SCORES, Contingency, aggregate, categorical, contingency
from .continuous import CONTINUOUS_SCORES, continuous
from .spatial import fss, fss_curve
from .spectral import rapsd, rapsd_ratio_db
from .probabilistic import CRPS_ESTIMATORS, crps_ensemble, crps_pooled
from .distribution import QQ_LEVELS, ks_normal, negative_fraction, percentile_bias, qq, wet_fraction
from .protocols import (
    ProtocolAccumulator,
    from_nl50,
    protocol_accumulator,
    smaat_protocol,
    spatspark_protocol,
    to_nl50,
)
from .table import score_table

__all__ = [
    "continuous",
    "contingency",
    "categorical",
    "aggregate",
    "fss",
    "fss_curve",
    "rapsd",
    "rapsd_ratio_db",
    "crps_ensemble",
    "crps_pooled",
    "CRPS_ESTIMATORS",
    "percentile_bias",
    "wet_fraction",
    "negative_fraction",
    "ks_normal",
    "qq",
    "QQ_LEVELS",
    "score_table",
    "smaat_protocol",
    "spatspark_protocol",
    "protocol_accumulator",
    "ProtocolAccumulator",
    "to_nl50",
    "from_nl50",
    "Contingency",
    "CONTINUOUS_SCORES",
    "CATEGORICAL_SCORES",
]
