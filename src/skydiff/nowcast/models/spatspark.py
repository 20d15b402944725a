"""SpaT-SparK (Li, Siebes & Mehrkanoon 2024, arXiv 2412.15917).

Self-supervised pretraining of a CNN encoder-decoder by SparK-style masked image modelling, then a nowcasting
model that puts a *translation network* between the pretrained encoder and decoder.

Components
----------
- :class:`MaskedConv2d`, :class:`MaskedBatchNorm2d`: SparK's simulation of sparse (submanifold) convolution.
  A boolean *active mask* ``(B, 1, h, w)`` on the patch grid (one cell per ``2**depth x 2**depth`` patch) is
  expanded to the resolution of each feature map; every convolution output is multiplied by it and the batch
  norm statistics are computed over the active positions only, so the features at visible positions do not
  depend on the content of the masked patches (they only see zeros there). ``active=None`` is the ordinary
  dense network (the same weights).
- :class:`SparseResNet`: the encoder, frames as channels. ResNet stem (``stem_kernel`` conv with stride 2 and
  3x3 max-pool with stride 2, as many of the two as the total stride needs) and ``len(layers)`` stages of
  :class:`Bottleneck` (expansion 4) or :class:`BasicBlock`; the first stage keeps the resolution, each further
  one halves it; total stride ``2**depth``. SpaT-SparK's "ResNet-18" (``resnet18_chan12``) is
  ``block="bottleneck", layers=(2, 2, 2, 2), base_width=64, depth=5`` (widths 256/512/1024/2048, §6), not the
  BasicBlock ResNet-18 (``block="basic"``). The defaults here are CPU-sized (``base_width=16``).
- :class:`LightDecoder`: SparK's light U-Net decoder: ``depth`` blocks of ``ConvTranspose 4x4/2 -> conv3x3-BN-
  LeakyReLU -> conv3x3-BN``, widths ``dec_width / 2**i``; the densified encoder features are *added* at the
  input of the first ``len(layers)`` blocks (deepest first); a 1x1 head gives the output channels.
- :class:`SparKPretrain`: random patch masking (``mask_ratio``, default 0.6) at the total stride -> sparse
  encoder -> densify (masked BN, per-scale learnable mask tokens in the empty positions, 1x1 (deepest) / 3x3
  projection) -> decoder -> reconstruction of the input frames; per-patch-normalised MSE on the masked
  patches (``loss_on="masked"``, SparK) or on all patches (``loss_on="all"``, SpaT-SparK).
- :class:`SpaTSparK` (registered as ``"spatspark"``): encoder -> translation network at every encoder scale
  (``translation="conv_tanh"``: per scale ``translation_layers`` x (conv3x3 + tanh); ``"none"``: identity,
  the ablation) -> densify -> decoder -> ``n_out`` frames, de-normalised with the input patch statistics.

Output normalisation (``output_norm="patch"``, SpaT-SparK's ``unpatchify(rec * std + mean)``)
---------------------------------------------------------------------------------------------
The decoder predicts every ``p x p`` patch (``p = 2**depth``) in units of that patch's input statistics: with
``mean`` and ``std = sqrt(var + 1e-6)`` of the ``in_frames * p * p`` input values of the patch (unbiased
variance, all input frames together, as SparK's per-patch target normalisation), the output is
``rec * std + mean`` in the model's data space (``scaler``, by default SmaAt's ``R / 12 / 47.83``). Pretraining
learns ``rec`` against ``(x - mean) / std`` of the same patch, so the pretrained decoder speaks this language.
Consequence: a patch that is dry in all input frames has ``std = 1e-3`` and can only receive tiny values
(rain moving into a dry patch is damped); ``output_norm="none"`` makes the decoder output the data directly.

Deviations from the reference code (``htlee6/SpaT-SparK``, ``keyu-tian/SparK``), all deliberate
---------------------------------------------------------------------------------------------------
- Written from scratch in plain PyTorch (no timm): the encoder is this module's ResNet; widths, depth and block
  are configurable; the densify projection of the deepest scale is always a 1x1 convolution (SparK uses an
  identity when the widths already agree).
- The pretraining loss over ``"all"`` patches is the *mean* of the per-patch losses (SpaT-SparK *sums* them
  over the patches and averages over the batch, i.e. a loss ``h * w`` times larger; Adam-type optimisers are
  nearly invariant to that scale).
- Pixels flagged invalid (``valid`` mask, no-data) and the padding added to reach a multiple of ``2**depth``
  do not count in the pretraining loss; patch statistics use all pixels of the (padded) patch.
- Fine-tuning does not mask by default (``mask_ratio=0``): the reference's README command keeps the random
  0.6 mask in fine-tuning *and in evaluation*; ``mask_ratio=0.6, mask_at_eval=True`` reproduces that.
- Translation weights are initialised like the reference (truncated normal, std 0.02, also the biases);
  ``translation_init="identity"`` starts each conv3x3 as the identity map instead (the pretrained
  encoder-decoder path is then kept at the start of fine-tuning, up to the tanh).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import nn

from ...errors import InputError, ReadError, ShapeError
from .blocks import PAD_MODES, NowcastModel, _config_from_locals, crop_padding, get_scaler, pad_to_multiple
from .rainnet import _check_int
from .registry import register_model

__all__ = [
    "MaskedConv2d",
    "MaskedBatchNorm2d",
    "BasicBlock",
    "Bottleneck",
    "SparseResNet",
    "LightDecoder",
    "SparKPretrain",
    "SpaTSparK",
    "expand_active",
    "random_patch_mask",
    "patch_stats",
    "reconstruction_loss",
    "ssim",
    "init_from_pretrain",
    "finetune_config_from_pretrain",
    "PRETRAIN_NAME",
]

PRETRAIN_NAME = "spatspark-pretrain"
"""Registry name of :class:`SparKPretrain` (``skydiff train spatspark-pretrain``)."""

_PATCH_EPS = 1e-6  # SparK: std = sqrt(var + 1e-6)
BLOCKS = ("bottleneck", "basic")
TRANSLATIONS = {"conv_tanh": "conv_tanh", "lineara": "conv_tanh", "none": "none", "identity": "none"}
DENSIFY_NORMS = ("bn", "none")
OUTPUT_NORMS = ("patch", "none")
LOSS_ON = ("masked", "all")


# ---------------------------------------------------------------------------------------------------------------
# masks and patch statistics
# ---------------------------------------------------------------------------------------------------------------


def expand_active(active: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Expand a patch-grid mask ``(B, 1, h, w)`` to ``(B, 1, H, W)`` by repetition (``H, W`` multiples of ``h, w``)."""
    h, w = active.shape[-2:]
    H, W = int(size[0]), int(size[1])
    if H % h or W % w:
        raise ShapeError(f"feature map {H}x{W} is not a multiple of the {h}x{w} mask grid")
    kh, kw = H // h, W // w
    if kh > 1:
        active = active.repeat_interleave(kh, dim=-2)
    if kw > 1:
        active = active.repeat_interleave(kw, dim=-1)
    return active


def random_patch_mask(
    batch: int,
    grid: Sequence[int],
    mask_ratio: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random active mask ``(B, 1, h, w)`` (True = visible) keeping ``max(1, round(h*w*(1-mask_ratio)))`` patches
    per sample, uniformly at random (SparK's ``mask``). ``generator`` (a CPU generator) makes it reproducible."""
    h, w = int(grid[0]), int(grid[1])
    n = h * w
    keep = max(1, int(round(n * (1.0 - float(mask_ratio)))))
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)[:, :keep]
    active = torch.zeros(batch, n, dtype=torch.bool)
    active.scatter_(1, order, True)
    return active.view(batch, 1, h, w).to(device if device is not None else "cpu")


def patch_stats(x: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and ``sqrt(var + 1e-6)`` of ``x`` (B, C, H, W) over the ``C * patch**2`` values of each patch.

    Unbiased variance, as SparK's per-patch target normalisation. Returns two ``(B, 1, H/patch, W/patch)`` tensors.
    """
    B, C, H, W = x.shape
    if H % patch or W % patch:
        raise ShapeError(f"fields {H}x{W} are not a multiple of the patch size {patch}")
    if C * patch * patch < 2:
        raise ShapeError("a patch must hold at least two values for its variance")
    t = x.reshape(B, C, H // patch, patch, W // patch, patch)
    mean = t.mean(dim=(1, 3, 5))
    var = t.var(dim=(1, 3, 5), unbiased=True)
    return mean[:, None], torch.sqrt(var + _PATCH_EPS)[:, None]


def reconstruction_loss(
    rec: torch.Tensor,
    x: torch.Tensor,
    active: torch.Tensor,
    patch: int,
    loss_on: str = "masked",
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """SparK's per-patch-normalised MSE between ``rec`` (normalised units) and the input ``x`` (B, C, H, W).

    Each patch of ``x`` is normalised by its own mean and std (:func:`patch_stats`); the squared error is
    averaged over the valid pixels and channels of each patch, then over the masked patches
    (``loss_on="masked"``, SparK) or over all patches (``"all"``, SpaT-SparK up to the sum-vs-mean scale).
    ``valid`` (B, C, H, W) or (B, 1, H, W) bool excludes no-data / padding pixels.
    """
    if loss_on not in LOSS_ON:
        raise InputError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    if rec.shape != x.shape:
        raise ShapeError(f"reconstruction {tuple(rec.shape)} and input {tuple(x.shape)} differ in shape")
    B, C, H, W = x.shape
    mean, std = patch_stats(x, patch)
    target = (x - expand_active(mean, (H, W))) / expand_active(std, (H, W))
    err = (rec - target) ** 2
    w = torch.ones_like(err) if valid is None else valid.to(err.dtype).expand_as(err)
    h, ww = H // patch, W // patch
    num = (err * w).reshape(B, C, h, patch, ww, patch).sum(dim=(1, 3, 5))
    den = w.reshape(B, C, h, patch, ww, patch).sum(dim=(1, 3, 5))
    per_patch = num / den.clamp_min(1.0)  # (B, h, w)
    sel = den > 0
    if loss_on == "masked":
        sel = sel & ~active[:, 0].to(torch.bool)
    selw = sel.to(err.dtype)
    return (per_patch * selw).sum() / selw.sum().clamp_min(1.0)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: tuple[float, float] = (0.0, 1.0),
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean structural similarity of ``pred`` and ``target`` (B, C, H, W), every channel separately.

    Gaussian window (11, sigma 1.5), ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` with ``L`` the width of ``data_range``;
    both fields are clamped to ``data_range`` and reflect-padded so the SSIM map covers every pixel (the
    conventions of torchmetrics' SSIM with ``data_range=(0, 1)``, which SpaT-SparK's fine-tuning loss uses).
    Differentiable.
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ShapeError(f"ssim expects two (B, C, H, W) tensors of one shape, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")
    lo, hi = float(data_range[0]), float(data_range[1])
    L = hi - lo
    p, t = pred.clamp(lo, hi), target.clamp(lo, hi)
    B, C, H, W = p.shape
    g = _gaussian_window(window, sigma, p.dtype, p.device)
    r = window // 2
    mode = "reflect" if (r < H and r < W) else "replicate"
    x = torch.cat([p, t, p * p, t * t, p * t], dim=1).reshape(B * 5 * C, 1, H, W)
    x = nnf.pad(x, (r, r, r, r), mode=mode)
    x = nnf.conv2d(x, g.view(1, 1, 1, -1))
    x = nnf.conv2d(x, g.view(1, 1, -1, 1))
    mp, mt, spp, stt, spt = x.reshape(B, 5, C, H, W).unbind(1)
    vp, vt, cov = spp - mp * mp, stt - mt * mt, spt - mp * mt
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    s = ((2 * mp * mt + c1) * (2 * cov + c2)) / ((mp * mp + mt * mt + c1) * (vp + vt + c2))
    return s.mean()


# ---------------------------------------------------------------------------------------------------------------
# sparse (masked) layers
# ---------------------------------------------------------------------------------------------------------------


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose output is multiplied by the active mask (expanded to the output size), SparK-style."""

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        y = super().forward(x)
        if active is None:
            return y
        return y * expand_active(active, y.shape[-2:]).to(y.dtype)


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose statistics come from the active positions only; masked positions are set to 0.

    With ``active=None`` it is ``nn.BatchNorm2d``. In training the batch mean and (biased) variance are taken
    over the active pixels of all samples, and the running statistics are updated with those (unbiased
    variance, ``momentum`` as in ``nn.BatchNorm2d``), exactly what SparK's ``SparseBatchNorm2d`` gets by running
    ``BatchNorm1d`` on the gathered active positions. In eval mode the running statistics are used.
    """

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if active is None:
            return super().forward(x)
        out_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):  # statistics in float32 (as batch_norm under autocast)
            x = x.float()
        m = expand_active(active, x.shape[-2:]).to(x.dtype)  # (B, 1, H, W)
        use_batch = self.training or not self.track_running_stats or self.running_mean is None
        if use_batch:
            n = m.sum() * 1.0
            nc = n.clamp_min(1.0)
            mean = (x * m).sum(dim=(0, 2, 3)) / nc
            var = (((x - mean[None, :, None, None]) ** 2) * m).sum(dim=(0, 2, 3)) / nc
            if self.training and self.track_running_stats and self.running_mean is not None:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                    mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                    unbiased = var * n / (n - 1.0).clamp_min(1.0)
                    rm, rv = self.running_mean, self.running_var
                    assert rv is not None
                    rm.mul_(1.0 - mom).add_(mean.detach().to(rm.dtype), alpha=mom)
                    rv.mul_(1.0 - mom).add_(unbiased.detach().to(rv.dtype), alpha=mom)
        else:
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)  # type: ignore[union-attr]
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None].to(y.dtype) + self.bias[None, :, None, None].to(y.dtype)
        return (y * m).to(out_dtype)


class _MaskedMaxPool(nn.MaxPool2d):
    """Max-pool then re-mask (inputs are ReLU outputs >= 0, so the zeros of masked positions never win over a
    visible value: no leak)."""

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        y = super().forward(x)
        if active is None:
            return y
        return y * expand_active(active, y.shape[-2:]).to(y.dtype)


class _ResBlock(nn.Module):
    """The identity / projection shortcut shared by the two sparse-capable ResNet blocks."""

    def _init_shortcut(self, cin: int, cout: int, stride: int) -> None:
        self.down_conv: MaskedConv2d | None = None
        self.down_bn: MaskedBatchNorm2d | None = None
        if stride != 1 or cin != cout:
            self.down_conv = MaskedConv2d(cin, cout, 1, stride=stride, bias=False)
            self.down_bn = MaskedBatchNorm2d(cout)

    def _shortcut(self, x: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
        if self.down_conv is None:
            return x
        return self.down_bn(self.down_conv(x, active), active)  # type: ignore[misc]


class BasicBlock(_ResBlock):
    """ResNet basic block (two 3x3 convolutions), sparse-capable; ``expansion = 1``."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = MaskedConv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = MaskedBatchNorm2d(width)
        self.conv2 = MaskedConv2d(width, cout, 3, padding=1, bias=False)
        self.bn2 = MaskedBatchNorm2d(cout)
        self._init_shortcut(cin, cout, stride)

    def last_bn(self) -> MaskedBatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        out = nnf.relu(self.bn1(self.conv1(x, active), active))
        out = self.bn2(self.conv2(out, active), active)
        return nnf.relu(out + self._shortcut(x, active))


class Bottleneck(_ResBlock):
    """ResNet bottleneck block (1x1 -> 3x3 with the stride -> 1x1, ``expansion = 4``), sparse-capable."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = MaskedConv2d(cin, width, 1, bias=False)
        self.bn1 = MaskedBatchNorm2d(width)
        self.conv2 = MaskedConv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = MaskedBatchNorm2d(width)
        self.conv3 = MaskedConv2d(width, cout, 1, bias=False)
        self.bn3 = MaskedBatchNorm2d(cout)
        self._init_shortcut(cin, cout, stride)

    def last_bn(self) -> MaskedBatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        out = nnf.relu(self.bn1(self.conv1(x, active), active))
        out = nnf.relu(self.bn2(self.conv2(out, active), active))
        out = self.bn3(self.conv3(out, active), active)
        return nnf.relu(out + self._shortcut(x, active))


class SparseResNet(nn.Module):
    """ResNet encoder (frames as channels) that runs dense (``active=None``) or sparse (SparK, see module doc).

    Parameters
    ----------
    in_channels
        Input channels (frames).
    base_width
        Width of the first stage's blocks; stage ``i`` has ``base_width * 2**i`` (outputs ``x expansion``).
    layers
        Blocks per stage (default ``(2, 2, 2, 2)``).
    depth
        Total stride ``2**depth``. The stem reduces by ``2**(depth - len(layers) + 1)``, which must be 1 (no
        down-sampling), 2 (strided conv) or 4 (strided conv + max-pool, the ResNet stem).
    block
        ``"bottleneck"`` (default) or ``"basic"``.
    stem_kernel
        Kernel of the stem convolution (default 7, ResNet).

    ``forward(x, active=None)`` returns the list of the stage outputs, shallowest first; stage ``i`` has
    stride ``2**(depth - len(layers) + 1 + i)`` and ``self.widths[i]`` channels. ``active`` ``(B, 1, h, w)``
    bool on the grid of the deepest stage; the input is multiplied by it (expanded) before the stem.
    """

    def __init__(
        self,
        in_channels: int,
        base_width: int = 16,
        layers: Sequence[int] = (2, 2, 2, 2),
        depth: int = 5,
        block: str = "bottleneck",
        stem_kernel: int = 7,
    ):
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("base_width", base_width, 1)
        _check_int("depth", depth, 1)
        _check_int("stem_kernel", stem_kernel, 1)
        layers = tuple(layers)
        if not layers or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise InputError(f"layers must be a non-empty list of positive integers, got {list(layers)}")
        stem_log = depth - (len(layers) - 1)
        if stem_log not in (0, 1, 2):
            raise InputError(
                f"depth {depth} does not fit {len(layers)} stages: the stem must down-sample by 1, 2 or 4, i.e. "
                f"depth in {len(layers) - 1}..{len(layers) + 1}"
            )
        if block not in BLOCKS:
            raise InputError(f"block must be one of {BLOCKS}, got {block!r}")
        blk = Bottleneck if block == "bottleneck" else BasicBlock
        self.depth = depth
        self.stem_stride = 2**stem_log
        stem_w = base_width  # ResNet: a 64-channel stem for base width 64
        self.stem_conv = MaskedConv2d(in_channels, stem_w, stem_kernel, stride=2 if stem_log >= 1 else 1,
                                      padding=stem_kernel // 2, bias=False)
        self.stem_bn = MaskedBatchNorm2d(stem_w)
        self.stem_pool = _MaskedMaxPool(3, stride=2, padding=1) if stem_log == 2 else None
        self.stages = nn.ModuleList()
        widths = []
        cin = stem_w
        for i, n in enumerate(layers):
            w = base_width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(blk(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w * blk.expansion
            self.stages.append(nn.ModuleList(blocks))
            widths.append(cin)
        self.widths = widths
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan-out) convolutions, BN weight 1 / bias 0, and the last BN of every residual branch at
        weight 0 (each block starts as the identity; timm's ``zero_init_last``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stage in self.stages:
            for b in stage:  # type: ignore[union-attr]
                nn.init.zeros_(b.last_bn().weight)

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> list[torch.Tensor]:
        if active is not None:
            x = x * expand_active(active, x.shape[-2:]).to(x.dtype)
        x = nnf.relu(self.stem_bn(self.stem_conv(x, active), active))
        if self.stem_pool is not None:
            x = self.stem_pool(x, active)
        feats = []
        for stage in self.stages:
            for b in stage:  # type: ignore[union-attr]
                x = b(x, active)
            feats.append(x)
        return feats


# ---------------------------------------------------------------------------------------------------------------
# decoder, densify, translation
# ---------------------------------------------------------------------------------------------------------------


class _UpBlock(nn.Module):
    """x2 up-sampling block: ConvTranspose 4x4/2 -> conv3x3-BN-LeakyReLU -> conv3x3-BN (SparK's ``UNetBlock``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin, 4, stride=2, padding=1)
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        x = nnf.leaky_relu(self.bn1(self.conv1(x)), 0.01)
        return self.bn2(self.conv2(x))


class LightDecoder(nn.Module):
    """SparK's light decoder: ``depth`` x2 up-sampling blocks with widths ``dec_width // 2**i`` (i = 0..depth).

    ``forward(to_dec)``: ``to_dec`` lists features deepest first, ``to_dec[i]`` with ``self.widths[i]`` channels
    at stride ``2**(depth - i)``; ``to_dec[i]`` is added to the input of block ``i``. Returns ``(B, out_channels,
    H, W)`` at stride 1 from the 1x1 head.
    """

    def __init__(self, depth: int, dec_width: int, out_channels: int):
        super().__init__()
        _check_int("dec_width", dec_width, 2**depth)
        self.widths = [dec_width // 2**i for i in range(depth + 1)]
        self.blocks = nn.ModuleList(_UpBlock(a, b) for a, b in zip(self.widths[:-1], self.widths[1:]))
        self.head = nn.Conv2d(self.widths[-1], out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal (std 0.02) convolutions, He-normal transposed convolutions, zero biases (SparK)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, to_dec: Sequence[torch.Tensor | None]) -> torch.Tensor:
        x: torch.Tensor | None = None
        for i, blk in enumerate(self.blocks):
            f = to_dec[i] if i < len(to_dec) else None
            if f is not None:
                x = f if x is None else x + f
            if x is None:
                raise InputError("LightDecoder needs the deepest feature map")
            x = blk(x)
        assert x is not None
        return self.head(x)


class _Translation(nn.Module):
    """Per encoder scale (shallowest first) ``n_i`` x (conv3x3 + tanh); 0 layers = identity at that scale."""

    def __init__(self, widths: Sequence[int], n_layers: Sequence[int], init: str):
        super().__init__()
        self.nets = nn.ModuleList()
        for c, n in zip(widths, n_layers):
            mods: list[nn.Module] = []
            for _ in range(n):
                mods += [nn.Conv2d(c, c, 3, padding=1), nn.Tanh()]
            self.nets.append(nn.Sequential(*mods) if mods else nn.Identity())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if init == "identity":
                    nn.init.zeros_(m.weight)
                    nn.init.zeros_(m.bias)
                    with torch.no_grad():
                        idx = torch.arange(m.weight.shape[0])
                        m.weight[idx, idx, 1, 1] = 1.0
                else:  # the reference's trunc_normal_(std=0.02) on weights and biases
                    nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                    nn.init.trunc_normal_(m.bias, std=0.02, a=-2.0, b=2.0)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [net(f) for net, f in zip(self.nets, feats)]


class _SparKBackbone(nn.Module):
    """Sparse encoder + densify (norm, mask tokens, projection) + light decoder; shared by pretraining and
    fine-tuning (the state-dict keys ``backbone.*`` are the same in both)."""

    def __init__(self, in_channels: int, out_channels: int, base_width: int, layers: Sequence[int], depth: int,
                 block: str, stem_kernel: int, dec_width: int, densify_norm: str):
        super().__init__()
        if densify_norm not in DENSIFY_NORMS:
            raise InputError(f"densify_norm must be one of {DENSIFY_NORMS}, got {densify_norm!r}")
        self.depth = depth
        self.encoder = SparseResNet(in_channels, base_width, layers, depth, block, stem_kernel)
        self.decoder = LightDecoder(depth, dec_width, out_channels)
        e_widths = list(reversed(self.encoder.widths))  # deepest first
        self.densify_norms = nn.ModuleList(
            MaskedBatchNorm2d(c) if densify_norm == "bn" else nn.Identity() for c in e_widths
        )
        self.densify_projs = nn.ModuleList(
            nn.Conv2d(c, self.decoder.widths[i], 1 if i == 0 else 3, padding=0 if i == 0 else 1)
            for i, c in enumerate(e_widths)
        )
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in e_widths)
        for p in self.mask_tokens:
            nn.init.trunc_normal_(p, std=0.02, a=-0.02, b=0.02)

    @property
    def patch(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None,
                translation: nn.Module | None = None) -> torch.Tensor:
        """x (B, C, H, W) with H, W multiples of ``patch`` -> decoder output (B, out, H, W)."""
        feats = self.encoder(x, active)
        if translation is not None:
            feats = translation(feats)
        to_dec = []
        for i, f in enumerate(reversed(feats)):
            norm = self.densify_norms[i]
            f = norm(f, active) if isinstance(norm, MaskedBatchNorm2d) else norm(f)
            if active is not None:
                a = expand_active(active, f.shape[-2:])
                f = torch.where(a, f, self.mask_tokens[i].to(f.dtype).expand_as(f))
            to_dec.append(self.densify_projs[i](f))
        return self.decoder(to_dec)


def _check_arch(in_frames: int, base_width: int, depth: int, dec_width: int, stem_kernel: int,
                layers: Any = (1,)) -> None:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers
    ):
        raise InputError(f"layers must be a non-empty list of positive integers (blocks per stage), got {layers!r}")
    for nm, v, lo in (("in_frames", in_frames, 1), ("base_width", base_width, 1), ("depth", depth, 1),
                      ("stem_kernel", stem_kernel, 1)):
        _check_int(nm, v, lo)
    if isinstance(dec_width, bool) or not isinstance(dec_width, int) or dec_width < 2**depth:
        raise InputError(f"dec_width must be an integer >= 2**depth = {2**depth}, got {dec_width!r}")


def _check_ratio(name: str, v: Any) -> float:
    try:
        r = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in [0, 1), got {v!r}") from None
    if not 0.0 <= r < 1.0:
        raise InputError(f"{name} must be in [0, 1), got {v!r}")
    return r


def _prepare_active(active: torch.Tensor, batch: int, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    if not isinstance(active, torch.Tensor):
        raise InputError(f"active must be a bool tensor (B, 1, h, w), got {type(active).__name__}")
    if active.ndim == 3:
        active = active[:, None]
    if tuple(active.shape) != (batch, 1, *grid):
        raise ShapeError(f"active must have shape {(batch, 1, *grid)} (the patch grid of the padded input), "
                         f"got {tuple(active.shape)}")
    return active.to(device=device, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------------------------
# pretraining
# ---------------------------------------------------------------------------------------------------------------


@register_model(PRETRAIN_NAME)
class SparKPretrain(nn.Module):
    """SparK masked-image-modelling pretraining of the SpaT-SparK encoder-decoder (``"spatspark-pretrain"``).

    Parameters
    ----------
    in_frames
        Frames (as channels) of the windows it reconstructs (default 12; SpaT-SparK pretrains on the 12 input
        frames of the NL-50 samples).
    base_width, layers, depth, block, stem_kernel
        The encoder, see :class:`SparseResNet` (total stride = patch size = ``2**depth``, default 32).
    dec_width
        Width of the deepest decoder block (default 256; SparK 768).
    densify_norm
        ``"bn"`` (masked batch norm, SpaT-SparK's ``--densify_norm bn``) or ``"none"``.
    mask_ratio
        Fraction of patches masked at random (default 0.6, SparK; SpaT-SparK's README pretrains with 0.3).
    loss_on
        ``"masked"`` (SparK) or ``"all"`` (SpaT-SparK) patches, see :func:`reconstruction_loss`.
    scaler
        Data space (default ``"smaat"``, ``R / 12 / 47.83``).
    pad_mode
        Padding to a multiple of ``2**depth``.

    ``forward(x, active=None, *, valid=None, generator=None)``: ``x`` (B, in_frames, H, W) transformed, any
    ``H x W`` (padded internally); returns a dict with ``loss`` (scalar), ``rec`` (B, in_frames, H, W) the
    reconstruction in per-patch-normalised units, ``rec_data`` the reconstruction in the data space
    (``rec * std + mean`` of the input patches), ``active`` (B, 1, h, w) on the padded grid and
    ``active_pixels`` (B, 1, H, W). ``active`` may be given (True = visible); else it is drawn at random
    (``generator``: a CPU ``torch.Generator`` for reproducible masks).
    """

    model_name = PRETRAIN_NAME

    def __init__(
        self,
        in_frames: int = 12,
        base_width: int = 16,
        layers: Sequence[int] = (2, 2, 2, 2),
        depth: int = 5,
        block: str = "bottleneck",
        stem_kernel: int = 7,
        dec_width: int = 256,
        densify_norm: str = "bn",
        mask_ratio: float = 0.6,
        loss_on: str = "masked",
        scaler: str = "smaat",
        pad_mode: str = "reflect",
    ):
        super().__init__()
        self.config = _config_from_locals(locals())
        _check_arch(in_frames, base_width, depth, dec_width, stem_kernel, layers)
        self.mask_ratio = _check_ratio("mask_ratio", mask_ratio)
        if loss_on not in LOSS_ON:
            raise InputError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
        if pad_mode not in PAD_MODES:
            raise InputError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.loss_on = loss_on
        self.pad_mode = pad_mode
        self.n_input_frames = in_frames
        self.scaler = get_scaler(scaler)
        self.backbone = _SparKBackbone(in_frames, in_frames, base_width, layers, depth, block, stem_kernel,
                                       dec_width, densify_norm)

    # --- data space (same interface as NowcastModel) ---------------------------------------------------------

    def transform(self, rain: torch.Tensor) -> torch.Tensor:
        """mm/h -> the data space (``self.scaler``)."""
        return self.scaler.forward(rain)

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """Data space -> mm/h, clamped at 0."""
        return self.scaler.inverse(y)

    @property
    def patch(self) -> int:
        """Patch size = total stride of the encoder, ``2**depth``."""
        return self.backbone.patch

    def extra_repr(self) -> str:
        return f"mask_ratio={self.mask_ratio}, loss_on={self.loss_on!r}, scaler={self.scaler.name!r}"

    # --- forward --------------------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        active: torch.Tensor | None = None,
        *,
        valid: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"SparKPretrain.forward expects a torch tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.n_input_frames:
            raise ShapeError(f"SparKPretrain.forward expects (B, {self.n_input_frames}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] < 2 or x.shape[-1] < 2:
            raise ShapeError(f"fields must be at least 2 x 2 pixels, got {tuple(x.shape[-2:])}")
        B = x.shape[0]
        p = self.patch
        xp, pads = pad_to_multiple(x, p, self.pad_mode)
        Hp, Wp = xp.shape[-2:]
        grid = (Hp // p, Wp // p)
        if active is None:
            active = random_patch_mask(B, grid, self.mask_ratio, device=x.device, generator=generator)
        else:
            active = _prepare_active(active, B, grid, x.device)
        w = torch.ones(B, 1, *x.shape[-2:], dtype=torch.bool, device=x.device) if valid is None else valid
        if w.shape[0] != B or w.shape[-2:] != x.shape[-2:] or w.ndim != 4:
            raise ShapeError(f"valid must be (B, C or 1, H, W) = {tuple(x.shape)}, got {tuple(w.shape)}")
        left, right, top, bottom = pads
        wp = nnf.pad(w.to(x.dtype), (left, right, top, bottom), value=0.0) > 0.5
        rec = self.backbone(xp, active)
        loss = reconstruction_loss(rec, xp, active, p, self.loss_on, wp)
        mean, std = patch_stats(xp, p)
        rec_data = rec * expand_active(std, (Hp, Wp)) + expand_active(mean, (Hp, Wp))
        act_pix = expand_active(active, (Hp, Wp))
        return {
            "loss": loss,
            "rec": crop_padding(rec, pads),
            "rec_data": crop_padding(rec_data, pads),
            "active": active,
            "active_pixels": crop_padding(act_pix, pads),
        }

    def reconstruct(self, frames: torch.Tensor, active: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Reconstruct ``frames`` (B, in_frames, H, W) in mm/h (NaN read as 0) without gradients, in eval mode.

        Returns ``rec`` (the reconstruction in mm/h, clamped at 0), ``filled`` (the input with the masked
        patches replaced by the reconstruction), ``active_pixels`` and ``loss``.
        """
        x = torch.nan_to_num(frames.to(next(self.parameters()).dtype), nan=0.0).clamp_min(0.0)
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self(self.transform(x), active, generator=generator)
        finally:
            self.train(was)
        rec = self.inverse_transform(out["rec_data"])
        filled = torch.where(out["active_pixels"], x, rec)
        return {"rec": rec, "filled": filled, "active_pixels": out["active_pixels"], "loss": out["loss"]}

    # --- export ---------------------------------------------------------------------------------------------

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights (keys of :class:`SparseResNet`, e.g. to use it as a plain backbone)."""
        return {k: v.detach().clone() for k, v in self.backbone.encoder.state_dict().items()}

    def decoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Densify layers, mask tokens and decoder (keys relative to the backbone, without ``encoder.``)."""
        return {k: v.detach().clone() for k, v in self.backbone.state_dict().items() if not k.startswith("encoder.")}

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder + densify + decoder with the ``backbone.`` prefix: what :meth:`SpaTSparK.load_pretrained` reads."""
        return {f"backbone.{k}": v.detach().clone() for k, v in self.backbone.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# the nowcasting model
# ---------------------------------------------------------------------------------------------------------------


@register_model("spatspark")
class SpaTSparK(NowcastModel):
    """SpaT-SparK: ``in_frames`` frames (as channels) -> ``n_out`` frames at lead times ``leadtime_steps``.

    Parameters
    ----------
    in_frames, n_out
        Input and output frames (default 12 -> 12, 5-60 min, the paper's task; 6 -> 6 works as well).
    base_width, layers, depth, block, stem_kernel, dec_width, densify_norm
        Encoder, decoder and densify layers as in :class:`SparKPretrain` (they must agree with the pretraining
        run to initialise from it).
    translation
        ``"conv_tanh"`` (default; the reference's ``linearA``) or ``"none"`` (identity, the ablation).
    translation_layers
        conv3x3 + tanh layers per encoder scale, shallowest first; default 2 at the two shallowest scales and
        1 at the others (the reference: 2 at 256/512 channels, 1 at 1024/2048).
    translation_init
        ``"trunc_normal"`` (reference) or ``"identity"`` (see the module docstring).
    output_norm
        ``"patch"`` (default): output = ``rec * std + mean`` with the input patch statistics (SpaT-SparK);
        ``"none"``: the decoder output is the data.
    mask_ratio, mask_at_eval
        Random patch masking of the *input* while training (default 0: dense) and also in eval mode /
        :meth:`predict` (default False). The reference fine-tunes and evaluates with ``0.6`` and True.
    scaler
        Data space (default ``"smaat"``: ``R / 12 / 47.83``, the NL-50 normalisation).
    leadtime_steps
        Lead time of each output channel in 5-min steps (default ``1..n_out``).
    pad_mode
        Padding to a multiple of ``2**depth``.

    ``forward(x, active=None)``: (B, in_frames, H, W) transformed -> (B, n_out, H, W) transformed, any H x W.
    ``predict(frames, leadtimes)``: the first ``leadtimes`` outputs in mm/h (``leadtimes <= n_out``).
    :meth:`load_pretrained` initialises encoder, densify layers, mask tokens and decoder from a pretraining run.
    """

    model_name = "spatspark"
    autoregressive = False

    def __init__(
        self,
        in_frames: int = 12,
        n_out: int = 12,
        base_width: int = 16,
        layers: Sequence[int] = (2, 2, 2, 2),
        depth: int = 5,
        block: str = "bottleneck",
        stem_kernel: int = 7,
        dec_width: int = 256,
        densify_norm: str = "bn",
        translation: str = "conv_tanh",
        translation_layers: Sequence[int] | None = None,
        translation_init: str = "trunc_normal",
        output_norm: str = "patch",
        mask_ratio: float = 0.0,
        mask_at_eval: bool = False,
        scaler: str = "smaat",
        leadtime_steps: Sequence[int] | None = None,
        pad_mode: str = "reflect",
    ):
        super().__init__()
        _check_arch(in_frames, base_width, depth, dec_width, stem_kernel, layers)
        _check_int("n_out", n_out, 1)
        key = str(translation).lower()
        if key not in TRANSLATIONS:
            raise InputError(f"translation must be 'conv_tanh' (alias 'linearA') or 'none' (alias 'identity'), "
                             f"got {translation!r}")
        translation = TRANSLATIONS[key]
        if translation_init not in ("trunc_normal", "identity"):
            raise InputError(f"translation_init must be 'trunc_normal' or 'identity', got {translation_init!r}")
        if output_norm not in OUTPUT_NORMS:
            raise InputError(f"output_norm must be one of {OUTPUT_NORMS}, got {output_norm!r}")
        if pad_mode not in PAD_MODES:
            raise InputError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        n_stages = len(tuple(layers))
        if translation_layers is None:
            translation_layers = tuple(2 if i < 2 else 1 for i in range(n_stages))
        translation_layers = tuple(translation_layers)
        if len(translation_layers) != n_stages or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in translation_layers
        ):
            raise InputError(f"translation_layers must be {n_stages} integers >= 0 (one per encoder scale, "
                             f"shallowest first), got {list(translation_layers)}")
        if leadtime_steps is None:
            leadtime_steps = tuple(range(1, n_out + 1))
        leadtime_steps = tuple(int(s) for s in leadtime_steps)
        if len(leadtime_steps) != n_out or any(s < 1 for s in leadtime_steps):
            raise InputError(f"leadtime_steps must be {n_out} positive steps, got {leadtime_steps}")
        self.config = {
            "in_frames": in_frames, "n_out": n_out, "base_width": base_width, "layers": list(layers),
            "depth": depth, "block": block, "stem_kernel": stem_kernel, "dec_width": dec_width,
            "densify_norm": densify_norm, "translation": translation, "translation_layers": list(translation_layers),
            "translation_init": translation_init, "output_norm": output_norm, "mask_ratio": mask_ratio,
            "mask_at_eval": bool(mask_at_eval), "scaler": scaler, "leadtime_steps": list(leadtime_steps),
            "pad_mode": pad_mode,
        }
        self.mask_ratio = _check_ratio("mask_ratio", mask_ratio)
        self.mask_at_eval = bool(mask_at_eval)
        self.output_norm = output_norm
        self.pad_mode = pad_mode
        self.leadtime_steps = leadtime_steps
        self.n_input_frames = in_frames
        self.n_out = n_out
        self.scaler = get_scaler(scaler)
        self.backbone = _SparKBackbone(in_frames, n_out, base_width, layers, depth, block, stem_kernel,
                                       dec_width, densify_norm)
        self.translation: _Translation | None = (
            _Translation(self.backbone.encoder.widths, translation_layers, translation_init)
            if translation == "conv_tanh" else None
        )

    @property
    def patch(self) -> int:
        """Patch size = total stride of the encoder, ``2**depth``."""
        return self.backbone.patch

    def extra_repr(self) -> str:
        return (f"scaler={self.scaler.name!r}, n_input_frames={self.n_input_frames}, n_out={self.n_out}, "
                f"translation={self.config['translation']!r}, output_norm={self.output_norm!r}")

    def forward(self, x: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        self._check_forward_input(x, self.n_input_frames, "transformed frames")
        p = self.patch
        xp, pads = pad_to_multiple(x, p, self.pad_mode)
        Hp, Wp = xp.shape[-2:]
        grid = (Hp // p, Wp // p)
        if active is not None:
            active = _prepare_active(active, x.shape[0], grid, x.device)
        elif self.mask_ratio > 0 and (self.training or self.mask_at_eval):
            active = random_patch_mask(x.shape[0], grid, self.mask_ratio, device=x.device)
        rec = self.backbone(xp, active, self.translation)
        if self.output_norm == "patch":
            mean, std = patch_stats(xp, p)
            rec = rec * expand_active(std, (Hp, Wp)) + expand_active(mean, (Hp, Wp))
        return crop_padding(rec, pads)

    def _predict(self, x: torch.Tensor, leadtimes: int, **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise InputError(f"SpaTSparK.predict got unexpected options {sorted(kwargs)}")
        self._check_direct_leadtimes(leadtimes)
        return self.inverse_transform(self(self.transform(x))[:, :leadtimes])

    def load_pretrained(self, source: Any) -> dict[str, list[str]]:
        """Initialise from a pretraining run; see :func:`init_from_pretrain`."""
        return init_from_pretrain(self, source)


# ---------------------------------------------------------------------------------------------------------------
# initialisation from a pretraining run
# ---------------------------------------------------------------------------------------------------------------

_ARCH_KEYS = ("in_frames", "base_width", "layers", "depth", "block", "stem_kernel", "dec_width", "densify_norm",
              "scaler", "pad_mode")


def finetune_config_from_pretrain(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`SpaTSparK` keywords implied by a :class:`SparKPretrain` config (the shared architecture:
    ``in_frames``, widths, depth, block, decoder, densify norm, scaler, padding)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if k in _ARCH_KEYS}


def _read_state(source: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    p = Path(source).expanduser()
    if p.suffix == ".ckpt":
        if not p.is_file():
            raise InputError(f"checkpoint {p} not found")
        try:
            ck = torch.load(str(p), map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise ReadError(f"cannot read checkpoint {p}: {exc}") from None
        sd = ck.get("state_dict", ck) if isinstance(ck, Mapping) else {}
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")} or dict(sd)
        return sd
    from ...registry import weights_paths

    f = weights_paths(p)[0]  # (a stem may hold dots: with_suffix would cut it)
    if not f.is_file():
        raise InputError(f"pretrained weights {f} not found")
    from safetensors.torch import load_file

    try:
        return load_file(str(f))
    except Exception as exc:  # noqa: BLE001
        raise ReadError(f"cannot read weights {f}: {exc}") from None


def init_from_pretrain(model: SpaTSparK, source: Any) -> dict[str, list[str]]:
    """Copy encoder, densify layers, mask tokens and decoder of a pretraining run into ``model``.

    ``source``: a :class:`SparKPretrain` (or :class:`SpaTSparK`) instance, a state dict with ``backbone.*``
    keys, or a path: ``.safetensors`` file / stem written by :func:`~skydiff.nowcast.models.save_model` (e.g.
    ``runs/spatspark-pretrain/spatspark-pretrain``) or a Lightning ``.ckpt`` of the training module.

    Every ``backbone.*`` key of ``model`` except the decoder head must be present with the same shape
    (otherwise :class:`~skydiff.errors.InputError`: the architectures differ). The head
    (``backbone.decoder.head.*``) and the translation network are copied only when the source has them with the
    same shapes (a pretraining head reconstructs ``in_frames`` channels, so it fits only when ``n_out ==
    in_frames``). Returns ``{"loaded": [...], "skipped": [...]}`` (the model's keys left as they were).
    """
    if isinstance(source, nn.Module):
        state = dict(source.state_dict())
    elif isinstance(source, Mapping):
        state = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        state = _read_state(source)
    else:
        raise InputError(f"init_from_pretrain needs a module, a state dict or a path, got {type(source).__name__}")
    own = model.state_dict()
    optional = ("backbone.decoder.head.", "translation.")
    missing, shapes = [], []
    loaded, skipped = [], []
    new = {}
    for k, v in own.items():
        src = state.get(k)
        ok = src is not None and tuple(src.shape) == tuple(v.shape)
        if ok:
            new[k] = src
            loaded.append(k)
        elif k.startswith(optional):
            skipped.append(k)
        elif src is None:
            missing.append(k)
        else:
            shapes.append(f"{k}: source {tuple(src.shape)} vs model {tuple(v.shape)}")
    if missing or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch for " + ", ".join(shapes[:6]) + (" ..." if len(shapes) > 6 else ""))
        if missing:
            parts.append("missing keys " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
        raise InputError("pretrained weights do not fit this SpaTSparK: " + "; ".join(parts)
                         + " (build it with the pretraining run's architecture: finetune_config_from_pretrain)")
    with torch.no_grad():
        for k, v in new.items():
            own[k].copy_(v.to(dtype=own[k].dtype))
    return {"loaded": loaded, "skipped": skipped}
