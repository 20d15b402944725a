"""skydiff.nowcast.postprocess: CDF matching, cross-checked against pysteps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skydiff.errors import ShapeError
from skydiff.nowcast.postprocess import match_cdf


@pytest.mark.parametrize("field_cut, target_cut", [(0.5, 1.0), (2.0, 1.0), (0.1, 1.0), (3.0, 0.2), (0.0, 1.0)])
def test_match_cdf_equals_pysteps(field_cut, target_cut):
    """Same values as pysteps' nonparam_match_empirical_cdf, with fewer or more wet pixels than the target (then
    the target's lightest rain is set dry first, never a dry pixel wet) and with a field that has no zero."""
    probmatching = pytest.importorskip("pysteps.postprocessing.probmatching")
    rng = np.random.default_rng(int(10 * field_cut + target_cut))
    a = rng.gamma(0.5, 2.0, (40, 50))
    a[a < field_cut] = 0.0
    t = rng.gamma(0.6, 3.0, (40, 50))
    t[t < target_cut] = 0.0
    ref = probmatching.nonparam_match_empirical_cdf(a.copy(), t.copy())
    ours = match_cdf(torch.tensor(a)[None, None], torch.tensor(t)[None])[0, 0].numpy()
    np.testing.assert_array_equal(ours, ref)
    assert ((ours > 0) <= (a > a.min())).all()


def test_match_cdf_batch_mask_and_errors():
    """Each batch member is matched to its own target on its valid pixels only; other pixels are unchanged."""
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 3, 8, 9, generator=g, dtype=torch.float64)
    tgt = torch.rand(2, 8, 9, generator=g, dtype=torch.float64) * 10
    valid = torch.ones(2, 8, 9, dtype=torch.bool)
    valid[1, :2] = False
    out = match_cdf(f, tgt, valid)
    for b in range(2):
        for t in range(3):
            assert torch.equal(torch.sort(out[b, t][valid[b]]).values, torch.sort(tgt[b][valid[b]]).values)
    assert torch.equal(out[1, :, :2], f[1, :, :2])
    assert torch.equal(match_cdf(f, tgt, torch.zeros_like(valid)), f)
    with pytest.raises(ShapeError, match="match_cdf"):
        match_cdf(f, tgt[:, :4])
    with pytest.raises(ShapeError, match="valid"):
        match_cdf(f, tgt, valid[:, :4])
    # integer fields took the target's intensities rounded to integers
    fi = (f * 10).round().to(torch.int64)
    out_i = match_cdf(fi, tgt, valid)
    assert out_i.is_floating_point() and not torch.equal(out_i, out_i.round())


def test_match_cdf_refuses_no_data_among_the_valid_pixels():
    """Sorted last, a NaN field pixel took the target's heaviest rain and target NaN landed on the field's peaks
    (pysteps raises here too); numpy input or a float mask were raw errors."""
    from skydiff.errors import InputError

    f = torch.rand(1, 2, 6, 6)
    t = torch.rand(1, 6, 6)
    f[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        match_cdf(f, t)
    valid = torch.ones(1, 6, 6, dtype=torch.bool)
    valid[0, 0, 0] = False
    out = match_cdf(f, t, valid)  # left out: fine, and kept as it was
    assert torch.isnan(out[0, 0, 0, 0])
    with pytest.raises(InputError, match="torch tensors"):
        match_cdf(f.numpy(), t)
    with pytest.raises(InputError, match="bool"):
        match_cdf(f, t, valid.float())


def test_match_cdf_gradcheck_to_the_target_and_outside_valid():
    """The docstring promises a gradient to the target's values and to the pixels outside ``valid`` (float64)."""
    from skydiff.nowcast.postprocess import match_cdf

    g = torch.Generator().manual_seed(3)
    fields = (torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    target = (torch.rand(1, 5, 6, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)  # distinct values
    valid = torch.ones(1, 5, 6, dtype=torch.bool)
    valid[0, 0, :2] = False
    assert torch.autograd.gradcheck(lambda f, t: match_cdf(f, t, valid), (fields, target))
