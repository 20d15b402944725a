"""Tests of skydiff.plot: every figure renders headless on small synthetic inputs and is saved atomically."""

from __future__ import annotations

import datetime as dt
import gc
import os
import weakref

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from skydiff import plot as P
from skydiff.errors import InputError, ShapeError

H, W = 64, 80
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rain() -> np.ndarray:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:H, 0:W]
    f = 25 * np.exp(-((x - 30) ** 2 + (y - 25) ** 2) / 200) + 70 * np.exp(-((x - 60) ** 2 + (y - 45) ** 2) / 50)
    f += rng.gamma(0.5, 0.4, (H, W))
    f[:10, :15] = np.nan  # no-data corner
    f[-3:, :] = np.nan  # no-data strip
    return f


@pytest.fixture(scope="module")
def velocity() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([-(y - H / 2) * 0.1, (x - W / 2) * 0.1])  # solid-body rotation


@pytest.fixture(scope="module")
def nowcast(rain: np.ndarray) -> np.ndarray:
    return np.stack([np.roll(rain, 2 * k, axis=1) for k in range(1, 7)])


@pytest.fixture(scope="module")
def scores_table() -> pd.DataFrame:
    rows = []
    for model in ("extrapolation", "persistence"):
        tau = 40.0 if model == "extrapolation" else 20.0
        for thr in (0.5, 5.0):
            for lt in range(5, 65, 5):
                rows.append(
                    {"leadtime_min": lt, "model": model, "threshold": thr, "csi": np.exp(-lt / tau), "mae": np.nan}
                )
        for lt in range(5, 65, 5):
            rows.append({"leadtime_min": lt, "model": model, "threshold": np.nan, "csi": np.nan, "mae": lt / tau})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """No function of skydiff.plot may leave a figure registered with pyplot."""
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before


def check_png(path, fig) -> np.ndarray:
    """``path`` is a valid PNG with the figure's size and aspect ratio; no temporary file beside it."""
    assert path.is_file()
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    w_in, h_in = fig.get_size_inches()
    assert img.shape[1] / img.shape[0] == pytest.approx(w_in / h_in, rel=0.02)
    assert img.shape[1] == pytest.approx(w_in * P.DPI, abs=2)
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return img


# --------------------------------------------------------------------------------------------------- colours
def test_rain_cmap_bounds_under_over_bad():
    cmap, norm = P.rain_cmap()
    assert list(norm.boundaries) == [0.1, 0.5, 1, 2, 5, 10, 20, 30, 50, 100]
    assert cmap.N == len(norm.boundaries) - 1 == norm.Ncmap
    assert cmap(norm(0.0))[3] == 0.0  # dry: transparent
    assert cmap(norm(0.05))[3] == 0.0
    assert cmap(norm(0.3))[3] == 1.0
    rgba_bad = cmap(np.ma.masked_invalid([np.nan]))[0]
    assert rgba_bad[3] == 1.0 and rgba_bad[0] == rgba_bad[1] == rgba_bad[2] > 0.7  # light grey
    colours = {tuple(cmap(norm(v))) for v in (0.3, 0.7, 1.5, 3, 7, 15, 25, 40, 70, 150)}
    assert len(colours) == 10  # every class and the > 100 mm/h one distinct


def test_motion_to_rgb_directions():
    vel = np.zeros((2, 1, 6))
    vel[:, 0, 0] = (2, 0)  # right
    vel[:, 0, 1] = (-2, 0)  # left
    vel[:, 0, 2] = (0, 2)  # down (image rows)
    vel[:, 0, 3] = (0, -2)  # up
    vel[:, 0, 4] = (0, 0)  # still
    vel[:, 0, 5] = (np.nan, 0)
    rgb, vmax = P.motion_to_rgb(vel)
    assert vmax == pytest.approx(2.0)
    assert rgb.shape == (1, 6, 3)
    np.testing.assert_allclose(rgb[0, 0], (1, 0, 0), atol=1e-6)  # hue 0: red
    np.testing.assert_allclose(rgb[0, 1], (0, 1, 1), atol=1e-6)  # opposite: cyan
    np.testing.assert_allclose(rgb[0, 2], (0.5, 1, 0), atol=1e-6)  # hue 1/4 (clockwise on the image)
    np.testing.assert_allclose(rgb[0, 3], (0.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(rgb[0, 4], (1, 1, 1), atol=1e-6)  # no motion: white
    assert np.allclose(rgb[0, 5], rgb[0, 5, 0]) and 0.7 < rgb[0, 5, 0] < 1  # NaN: grey


# --------------------------------------------------------------------------------------------------- axes level
def test_plot_field_on_given_axes_and_new_figure(tmp_path, rain):
    im = P.plot_field(None, torch.as_tensor(rain), title="a rain field")
    fig = im.figure
    ax = im.axes
    assert ax.get_title() == "a rain field"
    assert ax.yaxis_inverted()  # row 0 at the top
    assert len(fig.axes) == 2  # map + colorbar
    assert fig.axes[1].get_ylabel() == "rain rate (mm/h)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["no data"]
    out = tmp_path / "field.png"
    assert P.save_figure(fig, out) == out
    img = check_png(out, fig)
    # the NaN corner is light grey, dry pixels are white
    ax_bbox = ax.get_window_extent()
    px = lambda col, row: img[  # noqa: E731 - pixel of data point (col, row) in the PNG
        int(round(img.shape[0] - ax.transData.transform((col, row))[1])),
        int(round(ax.transData.transform((col, row))[0])),
        :3,
    ]
    assert ax_bbox.width > 0
    grey = px(3, 3)
    assert np.allclose(grey, grey[0], atol=0.02) and 0.75 < grey[0] < 0.9
    assert px(62, 44)[0] > 0.5 and px(62, 44)[2] < 0.4  # heavy rain: red-ish

    fig2 = P._new_figure(4, 3)
    ax2 = fig2.add_subplot()
    im2 = P.plot_field(ax2, np.zeros((H, W)), colorbar=False)
    assert im2.axes is ax2 and len(fig2.axes) == 1 and ax2.get_legend() is None


def test_plot_motion_arrow_directions(rain):
    """[0] = +2 points right and [1] = +2 points DOWN on the image (origin upper)."""
    expected = {(2, 0): (1, 0), (0, 2): (0, -1), (-2, 0): (-1, 0), (0, -2): (0, 1)}  # display coords: y up
    for (u, v), (ex, ey) in expected.items():
        vel = np.stack([np.full((H, W), float(u)), np.full((H, W), float(v))])
        q = P.plot_motion(None, vel, background=rain)
        fig = q.figure
        fig.canvas.draw()
        verts = q.get_transform().transform(q.get_paths()[0].vertices)  # arrow relative to its tail, pixels
        tip = verts[np.argmax(np.hypot(verts[:, 0], verts[:, 1]))]
        tip = tip / np.hypot(*tip)
        np.testing.assert_allclose(tip, (ex, ey), atol=1e-6)
        assert q.axes.yaxis_inverted()


def test_plot_motion_subsampling_and_scale(velocity):
    q = P.plot_motion(None, velocity)
    n_side = len(np.unique(q.get_offsets()[:, 0]))
    assert 20 <= n_side <= 30  # ~25 arrows along the longer side
    assert q.scale_units == "xy" and q.angles == "xy"
    # the fastest arrows fill about the arrow spacing, in pixels
    step = max(1, round(max(H, W) / 25))
    longest = np.hypot(q.U, q.V).max() / q.scale
    assert 0.5 * step < longest < 1.5 * step
    # reference arrow labelled in pixels per step
    texts = [c for c in q.axes.get_children() if type(c).__name__ == "QuiverKey"]
    assert texts and "px/step" in texts[0].text.get_text()

    q2 = P.plot_motion(None, velocity, step=8)
    assert len(np.unique(q2.get_offsets()[:, 0])) == W // 8


def test_plot_motion_wheel(tmp_path, velocity, rain):
    im = P.plot_motion(None, torch.as_tensor(velocity), background=rain, kind="wheel")
    ax = im.axes
    assert im.get_array().shape == (H, W, 3)
    assert len(ax.child_axes) == 1  # colour-wheel inset
    out = tmp_path / "wheel.png"
    check_png(P.save_figure(im.figure, out), im.figure)


def test_plot_motion_nan_and_still():
    vel = np.full((2, H, W), np.nan)
    q = P.plot_motion(None, vel)
    assert len(q.get_offsets()) == 0
    q = P.plot_motion(None, np.zeros((2, H, W)))
    q.figure.canvas.draw()
    P.plot_motion(None, vel, kind="wheel").figure.canvas.draw()


# --------------------------------------------------------------------------------------------------- figures
@pytest.mark.parametrize("with_observed", [False, True])
def test_plot_nowcast(tmp_path, rain, velocity, nowcast, with_observed):
    out = tmp_path / "sub" / "dir" / "nowcast.png"  # parents are created
    observed = nowcast * 0.8 if with_observed else None
    fig = P.plot_nowcast(
        rain, velocity, torch.as_tensor(nowcast), leadtimes_min=[5, 10, 15, 20, 25, 30], observed=observed,
        path=out, title="test nowcast",
    )
    check_png(out, fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert "nowcast +5 min" in titles and "nowcast +15 min" in titles and "nowcast +30 min" in titles
    assert ("observed +30 min" in titles) == with_observed
    assert fig.get_suptitle() == "test nowcast"
    assert any(ax.get_ylabel() == "rain rate (mm/h)" for ax in fig.axes)
    assert sum(len(ax.child_axes) for ax in fig.axes) == 1  # one colour wheel


def test_plot_nowcast_panels_and_scalar_step(rain, velocity, nowcast):
    fig = P.plot_nowcast(rain, velocity, nowcast, leadtimes_min=5, panels=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert [t for t in titles if t.startswith("nowcast")] == ["nowcast +5 min", "nowcast +30 min"]
    fig = P.plot_nowcast(rain, velocity, nowcast[:1], leadtimes_min=[10], panels=3)
    assert [t for t in (ax.get_title() for ax in fig.axes) if t.startswith("nowcast")] == ["nowcast +10 min"]


def test_plot_scores(tmp_path, scores_table):
    out = tmp_path / "scores.png"
    fig = P.plot_scores(scores_table, path=out)
    check_png(out, fig)
    ax_csi, ax_mae = fig.axes[:2]
    assert ax_csi.get_title() == "CSI" and ax_mae.get_title() == "MAE (mm/h)"
    assert ax_csi.get_xlabel() == "lead time (min)"
    assert len(ax_csi.get_lines()) == 4  # 2 models x 2 thresholds
    assert len(ax_mae.get_lines()) == 2  # MAE does not depend on the threshold
    labels = [t.get_text() for t in ax_mae.get_legend().get_texts()]
    assert labels == ["extrapolation", "persistence"]
    # colours follow the model in both panels
    col = {ln.get_label(): ln.get_color() for ln in ax_csi.get_lines()}
    assert col["extrapolation, ≥0.5 mm/h"] == ax_mae.get_lines()[0].get_color()
    line = ax_mae.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), np.arange(5, 65, 5))

    fig = P.plot_scores(scores_table, scores="csi", hue="threshold")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "≥0.5 mm/h, extrapolation"
    # a verify-style table: MAE repeated on each threshold's rows draws one line (it drew one per threshold)
    lead = np.repeat([5, 10, 15], 2)
    table = pd.DataFrame({"leadtime_min": lead, "threshold": [1.0, 5.0] * 3,
                          "csi": [0.8, 0.5, 0.7, 0.4, 0.6, 0.3], "mae": np.repeat([0.1, 0.2, 0.3], 2)})
    fig = P.plot_scores(table)
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].get_lines()) == 1
    # a plain table without model/threshold columns works too
    fig = P.plot_scores({"leadtime_min": [5, 10, 15], "mae": [0.1, 0.2, 0.4]}, scores=["mae"])
    assert len(fig.axes[0].get_lines()) == 1
    with pytest.raises(InputError, match="fss"):
        P.plot_scores(scores_table, scores=("csi", "fss"))
    with pytest.raises(InputError, match="leadtime"):
        P.plot_scores(pd.DataFrame({"lead": [1], "csi": [0.5]}))


def test_plot_spectra(tmp_path):
    k = np.fft.rfftfreq(64)  # includes 0, dropped on the log axis
    with np.errstate(divide="ignore"):
        spectra = {"observed": (k, np.where(k > 0, k, 1.0) ** -2.5), "nowcast": (torch.as_tensor(k), k**-3.0)}
    out = tmp_path / "spectra.png"
    fig = P.plot_spectra(spectra, pixel_km=2.0, path=out)
    check_png(out, fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "wavenumber (1/km)"
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["observed", "nowcast"]
    assert lines[0].get_xdata().max() == pytest.approx(0.5 / 2.0)  # Nyquist of 2 km pixels: 0.25 /km
    assert len(lines[0].get_xdata()) == len(k) - 1
    top = [c for c in ax.get_children() if type(c).__name__ == "SecondaryAxis"]
    assert top and top[0].get_xlabel() == "wavelength (km)"
    with pytest.raises(ShapeError, match="same length"):
        P.plot_spectra({"bad": (k, k[:-1])})
    with pytest.raises(InputError):
        P.plot_spectra({})


def test_plot_sequence(tmp_path, nowcast):
    times = [dt.datetime(2010, 8, 26, 12, 0) + dt.timedelta(minutes=5 * i) for i in range(len(nowcast))]
    out = tmp_path / "seq.png"
    fig = P.plot_sequence(nowcast, times, ncols=4, path=out, title="sequence")
    check_png(out, fig)
    maps = [ax for ax in fig.axes if ax.get_images()]
    assert len(maps) == len(nowcast)
    assert maps[0].get_title() == "2010-08-26 12:00" and maps[-1].get_title() == "2010-08-26 12:25"
    assert any(ax.get_ylabel() == "rain rate (mm/h)" for ax in fig.axes)
    # lists of fields, numpy datetimes, default labels
    fig = P.plot_sequence(list(nowcast[:3]), np.array(times[:3], dtype="datetime64[m]"))
    assert [ax.get_title() for ax in fig.axes if ax.get_images()][1] == "2010-08-26 12:05"
    fig = P.plot_sequence(nowcast[:2])
    assert [ax.get_title() for ax in fig.axes if ax.get_images()] == ["frame 0", "frame 1"]
    with pytest.raises(ShapeError, match="times"):
        P.plot_sequence(nowcast, times[:2])


# --------------------------------------------------------------------------------------------------- saving
def test_existing_file_replaced_atomically(tmp_path, rain):
    out = tmp_path / "fig.png"
    out.write_bytes(b"old content")
    (tmp_path / "other.txt").write_text("keep me")
    fig = P.plot_sequence(rain[None], path=out)
    check_png(out, fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "other.txt"]
    assert (tmp_path / "other.txt").read_text() == "keep me"
    # a file saved by skydiff is readable by others (umask honoured, not mkstemp's 0600)
    assert os.stat(out).st_mode & 0o044 == 0o044 & ~_umask()


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, rain, monkeypatch):
    out = tmp_path / "fig.png"
    out.write_bytes(b"old content")
    fig = P.plot_sequence(rain[None])

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        P.save_figure(fig, out)
    assert out.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    with pytest.raises(InputError, match="xyz"):
        P.save_figure(fig, tmp_path / "fig.xyz")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_figures_are_not_kept_alive(rain, velocity, nowcast):
    """Figures are plain objects (not registered with pyplot): dropping the reference frees them."""
    fig = P.plot_nowcast(rain, velocity, nowcast, leadtimes_min=5)
    ref = weakref.ref(fig)
    del fig
    gc.collect()
    assert ref() is None


# --------------------------------------------------------------------------------------------------- bad inputs
def test_bad_shapes_raise_shape_error(rain, velocity, nowcast):
    with pytest.raises(ShapeError, match=r"field must be a 2-D \(H, W\).*\(3, 64, 80\)"):
        P.plot_field(None, np.zeros((3, H, W)))
    with pytest.raises(ShapeError, match="2-D"):
        P.plot_field(None, np.zeros(W))
    with pytest.raises(ShapeError, match=r"velocity must have shape \(2, H, W\).*\(3, 64, 80\)"):
        P.plot_motion(None, np.zeros((3, H, W)))
    with pytest.raises(ShapeError, match="velocity"):
        P.plot_motion(None, np.zeros((H, W)))
    with pytest.raises(ShapeError, match="background"):
        P.plot_motion(None, velocity, background=rain[:10])
    with pytest.raises(ShapeError, match="velocity"):
        P.plot_nowcast(rain, velocity[0], nowcast, leadtimes_min=5)
    with pytest.raises(ShapeError, match="last_obs"):
        P.plot_nowcast(rain[None], velocity, nowcast, leadtimes_min=5)
    with pytest.raises(ShapeError, match="nowcast"):
        P.plot_nowcast(rain, velocity, nowcast[0], leadtimes_min=5)
    with pytest.raises(ShapeError, match="observed"):
        P.plot_nowcast(rain, velocity, nowcast, leadtimes_min=5, observed=nowcast[:2])
    with pytest.raises(ShapeError, match="leadtimes_min"):
        P.plot_nowcast(rain, velocity, nowcast, leadtimes_min=[5, 10])
    with pytest.raises(ShapeError, match="fields"):
        P.plot_sequence(rain)
    with pytest.raises(ShapeError, match="same shape"):
        P.plot_sequence([rain, rain[:10]])
    with pytest.raises(InputError, match="kind"):
        P.plot_motion(None, velocity, kind="streamlines")
    assert issubclass(ShapeError, ValueError)


def test_plot_assimilation(tmp_path):
    from skydiff.plot import plot_assimilation

    H, W = 48, 60
    obs = np.random.default_rng(0).random((H, W)) * 5
    obs[:6] = np.nan
    v = np.stack([np.full((H, W), 2.0), np.full((H, W), -1.0)])
    out = tmp_path / "assim.png"
    plot_assimilation(obs, v, np.logspace(3, 1, 30), obs, leadtime_min=15, path=out, title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the full-resolution cost of a coarser-level solution is a separate marker, not the curve's last point
    fig = plot_assimilation(obs, v, np.logspace(3, 1, 30), obs, leadtime_min=15, full_resolution_cost=50.0)
    ax = fig.axes[2]
    curve, marker = ax.get_lines()
    assert len(curve.get_ydata()) == 30 and list(marker.get_ydata()) == [50.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["iterations", "full resolution"]
    with pytest.raises(ShapeError):
        plot_assimilation(obs, v[:, :10], [1.0], obs, leadtime_min=5)


def test_a_grid_with_y_increasing_is_drawn_north_up():
    """A DataArray whose y increases down its rows (north in the last row, yorigin "lower": a CF netCDF written
    south to north) was drawn upside down; now it is flipped, and north_up does the same for numpy fields and
    motion (row component negated)."""
    import xarray as xr

    f = np.zeros((40, 30))
    f[-5:, 10:20] = 25.0  # rain in the northern rows
    da = xr.DataArray(f, dims=("y", "x"), coords={"y": np.arange(40) * 1000.0, "x": np.arange(30) * 1000.0})
    shown = np.asarray(P.plot_field(None, da).get_array())
    assert shown[:5, 10:20].min() == 25.0 and np.nanmax(shown[5:]) == 0.0  # at the top of the map
    down = da.isel(y=slice(None, None, -1))  # y decreasing: row 0 is north already, drawn as it is
    np.testing.assert_array_equal(np.asarray(P.plot_field(None, down).get_array()), shown)
    v = np.zeros((2, 40, 30))
    v[1] = 2.0  # moving to increasing rows = northward on this grid
    field, vel = P.north_up(da, f, velocity=v)
    np.testing.assert_array_equal(field, shown)
    assert (vel[1] == -2.0).all()  # ... which points up on the north-up map
    same = P.north_up(down, f, velocity=v)
    assert same[0] is f and same[1] is v


def test_motion_of_a_y_increasing_grid_points_the_right_way():
    """A velocity DataArray on a y-increasing grid (read_nowcast(with_velocity=True)) had its rows flipped but its
    row component kept: northward motion was drawn pointing south. A numpy velocity beside such a background was
    not flipped at all (arrows over the wrong rows)."""
    import xarray as xr

    y, x = np.arange(40) * 1000.0, np.arange(30) * 1000.0
    v = np.zeros((2, 40, 30))
    v[1, 30:] = 2.0  # northward (+rows = north here), only in the northern rows
    vda = xr.DataArray(v, dims=("component", "y", "x"), coords={"component": ["x", "y"], "y": y, "x": x})
    bg = xr.DataArray(np.zeros((40, 30)), dims=("y", "x"), coords={"y": y, "x": x})
    want = P.north_up(bg, velocity=v)[-1]
    for vel in (vda, v):
        q = P.plot_motion(None, vel, background=bg, step=1)
        np.testing.assert_array_equal(np.asarray(q.V).reshape(-1), want[1].reshape(-1))  # north-up: -2 (up)
    rgb, _ = P.motion_to_rgb(vda)
    rgb_np, _ = P.motion_to_rgb(want)
    np.testing.assert_array_equal(rgb, rgb_np)


def test_plain_arrays_beside_a_flipped_dataarray_are_drawn_the_same_way_up():
    """A y-increasing DataArray was flipped north-up but the plain-array nowcast and observed stacks beside it (and a
    plain background beside a DataArray velocity) were not: the same rain was drawn upside down in one figure."""
    import xarray as xr

    y, x = np.arange(60) * 1e3, np.arange(80) * 1e3
    obs = np.zeros((60, 80))
    obs[5:15, 5:15] = 10.0
    obs_da = xr.DataArray(obs, dims=("y", "x"), coords={"y": y, "x": x})
    fig = P.plot_nowcast(obs_da, np.zeros((2, 60, 80)), np.repeat(obs[None], 3, 0), leadtimes_min=5,
                         observed=[obs, obs, obs])
    rows = {ax.get_title(): tuple(np.unique(np.nonzero(np.ma.filled(im.get_array(), 0) > 0)[0])[[0, -1]])
            for ax in fig.axes for im in ax.images if im.get_array().ndim == 2}
    assert len(rows) >= 5 and set(rows.values()) == {(45, 54)}, rows  # north-up, in every panel
    plt.close(fig)
    v = np.zeros((2, 60, 80))
    v[1, 5:15, 5:15] = 1.0
    vda = xr.DataArray(v, dims=("component", "y", "x"), coords={"component": ["x", "y"], "y": y, "x": x})
    q = P.plot_motion(None, vda, background=obs, step=1)
    shown = np.ma.filled(q.axes.images[0].get_array(), 0)
    arrows = np.asarray(q.V).reshape(60, 80)
    assert set(np.unique(np.nonzero(shown > 0)[0])) == set(np.unique(np.nonzero(arrows)[0]))  # arrows on the rain
    plt.close(q.axes.figure)


def test_lead_times_must_be_finite(rain, velocity, nowcast):
    with pytest.raises(InputError, match="leadtimes_min must be finite"):
        P.plot_nowcast(rain, velocity, nowcast, leadtimes_min=[float("nan")] * len(nowcast))


def test_bfloat16_and_infinite_values_are_drawn():
    """bfloat16 tensors raised numpy's TypeError; +inf was drawn grey as "no data" without a legend entry."""
    f = torch.zeros(6, 6, dtype=torch.bfloat16)
    f[2, 2] = float("inf")
    shown = np.asarray(P.plot_field(None, f).get_array())
    assert not np.ma.is_masked(shown[2, 2]) and shown[2, 2] > 100.0


def test_big_grids_are_drawn_by_block_maxima():
    """A 3500 x 7000 field (MRMS) kept every pixel in the figure (GBs) and showed 1 small heavy cell in 40; it is now
    drawn by NaN-aware block maxima of at most 1000 px, in the grid's pixel coordinates."""
    f = np.zeros((3500, 7000), np.float32)
    rng = np.random.default_rng(0)
    for r, c in zip(rng.integers(0, 3494, 40), rng.integers(0, 6994, 40)):
        f[r:r + 6, c:c + 6] = 60.0
    f[:100] = np.nan
    im = P.plot_field(None, f)
    shown = np.ma.filled(im.get_array().astype(float), np.nan)
    assert max(shown.shape) <= 1000 and im.get_extent() == [-0.5, 6999.5, 3499.5, -0.5]
    assert (shown == 60.0).sum() >= 40 and np.isnan(shown[:14]).all()
    v = np.zeros((2, 3500, 7000), np.float32)
    assert max(P.plot_motion(None, v, kind="wheel", background=f).get_array().shape[:2]) <= 1000


def test_masked_arrays_hss_times_and_bad_arguments():
    import xarray as xr

    # masked pixels are no data (the fill value was drawn as rain)
    m = np.ma.masked_array(np.full((4, 4), 9.96921e36), mask=True)
    m[2:] = 2.0
    assert np.isnan(np.asarray(P.plot_field(None, m).get_array().filled(np.nan))[:2]).all()
    with pytest.raises(InputError, match="complex"):
        P.plot_field(None, np.ones((3, 3)) * 1j)
    # HSS may be negative: not clipped to [0, 1]
    df = pd.DataFrame({"leadtime_min": [5, 10, 15], "model": "a", "threshold": 1.0, "hss": [0.2, -0.1, -0.3]})
    assert P.plot_scores(df, scores=["hss"]).axes[0].get_ylim()[0] < -0.3
    # times as a DataArray label the panels by their dates (they were the DataArray's repr)
    t = np.datetime64("2025-01-01T00:00") + np.arange(2) * np.timedelta64(5, "m")
    da = xr.DataArray(np.zeros((2, 8, 8)), dims=("time", "y", "x"), coords={"time": t})
    assert P.plot_sequence(da.values, da.time).axes[0].get_title() == "2025-01-01 00:00"
    for kw in ({"vmax": -1.0}, {"vmax": "x"}):
        with pytest.raises(InputError, match="vmax"):
            P.motion_to_rgb(np.ones((2, 4, 4)), **kw)
    with pytest.raises(InputError, match="step"):
        P.plot_motion(None, np.ones((2, 4, 4)), step=float("nan"))
    with pytest.raises(InputError, match="band_db"):
        P.plot_spectrum_ratio({"a": ([4, 8, 16], [0.1, 0.2, 0.3])}, band_db="1")
    with pytest.raises(InputError, match="not numeric"):
        P.plot_scores(df.assign(hss=["a", "b", "c"]), scores=["hss"])
    with pytest.raises(InputError, match="ncols"):
        P.plot_sequence(np.zeros((2, 8, 8)), ncols=None)
    with pytest.raises(InputError, match="leadtime_min"):
        P.plot_assimilation(np.zeros((8, 8)), np.zeros((2, 8, 8)), [1.0, 0.5], np.zeros((8, 8)), leadtime_min="30")


def test_latitude_increasing_down_the_rows_is_drawn_north_up():
    """Only a dimension named y was recognised: an ascending-latitude field (ERA5 sorted, a downscaled ensemble with
    ERA5's names) was drawn with south at the top."""
    import xarray as xr

    from skydiff.plot import _as_array, _is_flipped

    a = np.arange(12.0).reshape(3, 4)
    up = xr.DataArray(a, dims=("latitude", "longitude"), coords={"latitude": [50.0, 51.0, 52.0],
                                                                 "longitude": np.arange(4.0)})
    assert _is_flipped(up) and np.array_equal(_as_array(up, "f")[0], a[-1])  # north (52) in the top row
    assert not _is_flipped(up.isel(latitude=slice(None, None, -1)))
    named = xr.DataArray(a, dims=("row", "col"), coords={"row": ("row", [1.0, 2.0, 3.0], {"axis": "Y"})})
    assert _is_flipped(named)


def test_spectra_and_log_qq_of_dry_fields(tmp_path):
    """A dry field's spectrum (all zero) or log Q-Q plot failed inside matplotlib at save time; a clear error now,
    and a dry curve beside others is named in the legend."""
    from skydiff.verify import rapsd

    psd, f = rapsd(np.zeros((64, 64)), return_freq=True)
    wet, _ = rapsd(np.random.default_rng(0).gamma(0.5, 2, (64, 64)), return_freq=True)
    with pytest.raises(InputError, match="no curve has a positive.*dry nowcast"):
        P.plot_spectra({"dry nowcast": (f, psd)}, path=tmp_path / "s.png")
    fig = P.plot_spectra({"dry nowcast": (f, psd), "truth": (f, wet)}, path=tmp_path / "s2.png")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["dry nowcast (no power)", "truth"]
    with pytest.raises(InputError, match="no pair of positive quantiles"):
        P.plot_qq({"dry": np.zeros((64, 64))}, np.random.default_rng(1).gamma(0.5, 2, (64, 64)), log=True,
                  path=tmp_path / "q.png")
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "q.png").exists()
