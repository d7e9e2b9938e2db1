"""Heatmap codec: keypoints <-> Gaussian heatmaps, and the flip-test merge.

The only module that knows the heatmap stride and how targets are made and read.

Coordinate spaces:

- *input px*: pixels of the model's input crop, ``input_size = (w, h)``.
- *heatmap px*: pixels of the network output, ``heatmap_size = (W, H)``.
- ``stride = (w / W, h / H)``. A heatmap coordinate ``x_hm`` is ``x_hm * sx`` input px, and an
  input-px keypoint is encoded at ``x / sx`` heatmap px (the mmpose 1.x ``MSRAHeatmap`` pair, so
  ``decode(encode(p)) ~= p``).

Encoding is the "unbiased" one of DARK (Zhang et al., CVPR 2020): the Gaussian is centred on the
unrounded coordinate. Decoding is ``argmax``, the classic quarter-pixel ``shift``, or ``dark``
(blur, log, one Newton step), all vectorised torch on the heatmaps' device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, get_args

import cv2
import numpy as np
import torch

from models.pose.keypoints import KeypointSpec

DecodeMode = Literal["argmax", "shift", "dark"]
"""A heatmap decoding of :meth:`HeatmapCodec.decode` (the type; settings and schemas use it)."""
DECODE_MODES: tuple[DecodeMode, ...] = get_args(DecodeMode)
"""The valid ``mode`` values of :meth:`HeatmapCodec.decode`, in order of cost."""

_LOG_EPS = 1e-10  # DARK: blurred maps are clamped to this before the log (as mmpose does)

# DARK: (dx, dy) neighbours of the integer argmax read for the finite differences, in this order:
# centre, x+1, x-1, y+1, y-1, x+2, x-2, y+2, y-2, (x+1,y+1), (x-1,y+1), (x+1,y-1), (x-1,y-1).
_TAPS_NEAR = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
_TAPS_FAR = ((2, 0), (-2, 0), (0, 2), (0, -2))
_TAPS_DIAGONAL = ((1, 1), (-1, 1), (1, -1), (-1, -1))
_DARK_TAPS = (*_TAPS_NEAR, *_TAPS_FAR, *_TAPS_DIAGONAL)


DecodeEngine = Literal["auto", "torch", "numpy"]
"""Who runs :meth:`HeatmapCodec.decode`'s arithmetic."""
NUMPY_DECODE_MAPS = 2048
"""``auto`` decodes CPU batches of up to this many maps (``B * K``) in numpy."""

NETWORK_STRIDE = 4
"""Input pixels per heatmap pixel of PoseResNet (body stride 32, three x2 deconvolutions)."""


@dataclass(frozen=True)
class HeatmapCodec:
    """Encodes keypoints as Gaussian heatmaps and decodes heatmaps back to keypoints.

    Attributes:
        input_size: ``(w, h)`` of the input crop, input px.
        heatmap_size: ``(W, H)`` of the heatmaps, heatmap px.
        sigma: standard deviation of the target Gaussian, heatmap px.
        blur_kernel: odd size of the DARK blur kernel. Its sigma is OpenCV's default for that
            size (``cv2.getGaussianKernel(k, 0)``: ``0.3 * ((k - 1) / 2 - 1) + 0.8``, i.e. 2.0 for
            11; OpenCV's fixed tables for k <= 7), exactly what mmpose's ``gaussian_blur`` uses;
            11 matches ``sigma=2`` targets.
    """

    input_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    sigma: float = 2.0
    blur_kernel: int = 11

    def __post_init__(self) -> None:
        for name in ("input_size", "heatmap_size"):
            size = tuple(int(v) for v in getattr(self, name))
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"{name} must be two positive ints (width, height), got {size}")
            object.__setattr__(self, name, size)
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd int, got {self.blur_kernel}")

    @classmethod
    def for_input(
        cls, input_size: tuple[int, int], sigma: float = 2.0, blur_kernel: int = 11
    ) -> HeatmapCodec:
        """The codec of a SimpleBaselines network for ``input_size`` ``(w, h)``: heatmaps at
        stride 4 (:data:`NETWORK_STRIDE`).

        Raises:
            ValueError: a side that is not a multiple of 32 (the ResNet body's stride), for
                which the network's heatmaps would not be ``input / 4``.
        """
        w, h = int(input_size[0]), int(input_size[1])
        if w <= 0 or h <= 0 or w % 32 or h % 32:
            raise ValueError(f"input size (w, h) = ({w}, {h}): both sides must be multiples of 32")
        s = NETWORK_STRIDE
        return cls((w, h), (w // s, h // s), sigma=sigma, blur_kernel=blur_kernel)

    @property
    def stride(self) -> tuple[float, float]:
        """``(sx, sy)`` = input size / heatmap size: input px per heatmap px."""
        return (
            self.input_size[0] / self.heatmap_size[0],
            self.input_size[1] / self.heatmap_size[1],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (stored inside checkpoints)."""
        return {
            "input_size": list(self.input_size),
            "heatmap_size": list(self.heatmap_size),
            "sigma": float(self.sigma),
            "blur_kernel": int(self.blur_kernel),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeatmapCodec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            input_size=(int(d["input_size"][0]), int(d["input_size"][1])),
            heatmap_size=(int(d["heatmap_size"][0]), int(d["heatmap_size"][1])),
            sigma=float(d["sigma"]),
            blur_kernel=int(d["blur_kernel"]),
        )

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training targets for one person.

        Args:
            keypoints: (K, 2) ``(x, y)``, input px.
            visible: (K,); ``> 0`` means labelled.

        Returns:
            heatmaps: (K, H, W) float32, ``exp(-((x - mx)^2 + (y - my)^2) / (2 sigma^2))`` over
                the whole map, ``(mx, my) = keypoint / stride`` in heatmap px, not rounded
                (amplitude 1, reached only when the centre falls on a pixel).
            weights: (K,) float32, 1 for a labelled keypoint whose ``+-3 sigma`` square overlaps
                the map's pixel centres ``[0, W-1] x [0, H-1]``, else 0 (and its channel is all
                zero). A non-finite coordinate counts as unlabelled. (mmpose tests the
                half-open ``[mu - 3 sigma, mu + 3 sigma + 1)`` against ``[0, W)``; this square is
                symmetric, so it differs only for centres within 1 px of that limit.)
        """
        kp = np.asarray(keypoints, dtype=np.float64)
        vis = np.asarray(visible)
        if kp.ndim != 2 or kp.shape[1] != 2 or vis.shape != (kp.shape[0],):
            raise ValueError(f"need keypoints (K, 2) and visible (K,), got {kp.shape}, {vis.shape}")
        w, h = self.heatmap_size
        mu = kp / np.asarray(self.stride)  # (K, 2) heatmap px
        r = 3.0 * self.sigma
        with np.errstate(invalid="ignore"):
            inside = (
                (mu[:, 0] + r >= 0)
                & (mu[:, 0] - r <= w - 1)
                & (mu[:, 1] + r >= 0)
                & (mu[:, 1] - r <= h - 1)
            )
        valid = (vis > 0) & np.isfinite(mu).all(axis=1) & inside  # (K,)
        mu = np.where(valid[:, None], mu, 0.0)
        two_var = 2.0 * self.sigma**2
        gx = np.exp(-((np.arange(w) - mu[:, :1]) ** 2) / two_var)  # (K, W)
        gy = np.exp(-((np.arange(h) - mu[:, 1:]) ** 2) / two_var)  # (K, H)
        heatmaps = gy[:, :, None] * gx[:, None, :] * valid[:, None, None]  # (K, H, W)
        return heatmaps.astype(np.float32), valid.astype(np.float32)

    def decode(
        self, heatmaps: torch.Tensor, mode: str = "dark", *, engine: DecodeEngine = "auto"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints and scores from a batch of heatmaps, on the heatmaps' device, no loops.

        Args:
            heatmaps: (B, K, H, W) torch tensor, any float dtype and device; ``(W, H)`` must be
                :attr:`heatmap_size`.
            mode: ``"argmax"`` (integer maximum), ``"shift"`` (+-0.25 heatmap px toward the
                higher neighbour, x and y separately, each only where the maximum is not on that
                axis' border) or ``"dark"`` (see :meth:`_dark_offsets`).
            engine: ``"torch"`` (vectorised torch on the heatmaps' device), ``"numpy"`` (CPU
                only; the same float32 arithmetic, answers equal to the torch path's), or
                ``"auto"``: numpy for CPU batches of at most :data:`NUMPY_DECODE_MAPS` maps
                (``B * K``), where torch's per-op overhead dominates.

        Returns:
            keypoints: (B, K, 2) float32 ``(x, y)``, input px (heatmap px times :attr:`stride`).
            scores: (B, K) float32, the maxima of the raw heatmaps.
        """
        if mode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {mode!r}; valid modes are {DECODE_MODES}")
        if heatmaps.ndim != 4 or (heatmaps.shape[3], heatmaps.shape[2]) != self.heatmap_size:
            raise ValueError(
                f"heatmaps must be (B, K, {self.heatmap_size[1]}, {self.heatmap_size[0]}), "
                f"got {tuple(heatmaps.shape)}"
            )
        b, k, h, w = heatmaps.shape
        maps = heatmaps.detach().to(torch.float32).reshape(b * k, h, w)
        if engine == "numpy" and maps.device.type != "cpu":
            raise ValueError(f"engine='numpy' decodes CPU heatmaps, got {maps.device}")
        if engine == "numpy" or (
            engine == "auto" and maps.device.type == "cpu" and b * k <= NUMPY_DECODE_MAPS
        ):
            xy_np, scores_np = self._decode_numpy(maps, mode)
            xy, scores = torch.from_numpy(xy_np), torch.from_numpy(scores_np)
        else:
            scores, index = maps.reshape(b * k, h * w).max(dim=1)
            x, y = index % w, torch.div(index, w, rounding_mode="floor")
            xy = torch.stack([x, y], dim=1).to(torch.float32)  # (B*K, 2) heatmap px
            if mode == "shift":
                xy = xy + _shift_offsets(torch, maps, x, y)
            elif mode == "dark":
                xy = xy + self._dark_offsets(maps, x, y)
        stride = torch.tensor(self.stride, dtype=torch.float32, device=xy.device)
        return (xy * stride).reshape(b, k, 2), scores.reshape(b, k)

    def _decode_numpy(self, maps: torch.Tensor, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`decode`'s arithmetic in numpy for ``(N, H, W)`` float32 CPU maps (a small
        batch spends most of the torch path in per-op overhead): ``(N, 2)`` heatmap px and
        ``(N,)`` scores. The same float32 operations in the same order: the blur's matrix
        products and the log stay torch calls, so the answers equal the torch path's."""
        m = maps.contiguous().numpy()
        n, h, w = m.shape
        flat = m.reshape(n, h * w)
        index = flat.argmax(axis=1)  # the first maximum, as torch's max
        scores = np.take_along_axis(flat, index[:, None], 1)[:, 0]
        x, y = index % w, index // w
        xy = np.stack([x, y], axis=1).astype(np.float32)
        if mode == "shift":
            xy = xy + _shift_offsets(np, m, x, y)
        elif mode == "dark":
            blurred = (
                _blur_matrix(h, self.blur_kernel) @ maps @ _blur_matrix(w, self.blur_kernel).T
            ).numpy()
            blur_max = blurred.reshape(n, h * w).max(axis=1)
            ratio = scores / np.where(blur_max != 0, blur_max, np.float32(1.0))
            tx, ty = self._taps(np, x, y, w, h)
            v = np.take_along_axis(blurred.reshape(n, h * w), ty * w + tx, 1) * ratio[:, None]
            v = torch.from_numpy(v).clamp_min_(_LOG_EPS).log_().numpy()
            xy = xy + _newton_offsets(np, v, m, x, y)
        return xy, scores

    @staticmethod
    def _taps(xp: Any, x: Any, y: Any, w: int, h: int) -> tuple[Any, Any]:
        """The DARK taps' ``(tx, ty)`` ``(N, 13)`` around argmax ``(x, y)`` ``(N,)``, clamped to
        the map (numpy or torch: ``xp`` is the module)."""
        taps = np.asarray(_DARK_TAPS)
        dx = xp.asarray(taps[:, 0]) if xp is np else torch.tensor(taps[:, 0], device=x.device)
        dy = xp.asarray(taps[:, 1]) if xp is np else torch.tensor(taps[:, 1], device=x.device)
        return xp.clip(x[:, None] + dx, 0, w - 1), xp.clip(y[:, None] + dy, 0, h - 1)

    def _dark_offsets(self, maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """DARK sub-pixel offsets (N, 2), heatmap px, for maps (N, H, W) with argmax (x, y) (N,).

        As mmpose's ``refine_keypoints_dark``: blur each map with a ``blur_kernel`` Gaussian
        (zero padding), rescale it to its original maximum, clamp to ``1e-10``, take the log,
        then one Newton step ``-H^-1 g`` with central differences (gradient step 1, Hessian
        step 2), only where ``2 <= x <= W-3`` and ``2 <= y <= H-3`` (elsewhere the offset is 0).
        Where that step is not trustworthy (``H`` not negative definite, i.e. not a maximum;
        a non-finite step; or more than 1 heatmap px in either axis) the keypoint gets the
        quarter-pixel ``shift`` offset instead, so DARK never moves a keypoint more than one
        heatmap px from its argmax. mmpose takes the step wherever ``det H != 0``: the two agree
        wherever that step is a move of at most 1 px toward a maximum (clean single-peak maps
        always; noisy low-amplitude maps for most keypoints).
        The blur is two float32 matrix products: if TF32 matmuls are enabled globally on CUDA,
        it runs in TF32 and loses some precision.
        """
        n, h, w = maps.shape
        blur_h = _blur_matrix(h, self.blur_kernel).to(maps.device)
        blur_w = _blur_matrix(w, self.blur_kernel).to(maps.device)
        blurred = blur_h @ maps @ blur_w.T  # separable, zero padding: (N, H, W)
        blur_max = blurred.amax(dim=(1, 2))
        ratio = maps.amax(dim=(1, 2)) / torch.where(blur_max != 0, blur_max, 1.0)
        tx, ty = self._taps(torch, x, y, w, h)
        # Rescale, clamp and log are per pixel: apply them to the 13 taps only.
        v = blurred.reshape(n, h * w).gather(1, ty * w + tx) * ratio[:, None]  # (N, 13)
        v = v.clamp_min(_LOG_EPS).log()
        return _newton_offsets(torch, v, maps, x, y)


def _newton_offsets(xp: Any, v: Any, maps: Any, x: Any, y: Any) -> Any:
    """DARK's offsets ``(N, 2)``, heatmap px, from the log-blurred taps ``v`` ``(N, 13)``
    (:data:`_DARK_TAPS` order) around the argmax ``(x, y)`` of ``maps`` ``(N, H, W)``: the
    Newton step where trusted inside the ``2 <= x <= W-3``, ``2 <= y <= H-3`` window, the
    ``shift`` offset where not, 0 outside the window. One function for torch and numpy
    (``xp`` is the module), so both paths compute the same float32 operations in order."""
    c, xp1, xm1, yp1, ym1, x2p, x2m, y2p, y2m, pp, mp, pm, mm = (v[:, i] for i in range(13))
    gx, gy = 0.5 * (xp1 - xm1), 0.5 * (yp1 - ym1)
    hxx = 0.25 * (x2p - 2 * c + x2m)
    hyy = 0.25 * (y2p - 2 * c + y2m)
    hxy = 0.25 * (pp - pm - mp + mm)
    det = hxx * hyy - hxy * hxy
    # Trust the Newton step only at a maximum (Hessian negative definite) and for a step of
    # at most one pixel per axis; elsewhere (saddles, ridges, plateaus, near-singular
    # Hessians) it can land far outside the map, so the quarter-pixel shift is used instead.
    maximum = (hxx < 0) & (det > 0)
    safe_det = xp.where(maximum, det, 1.0)
    offsets = xp.stack([-(hyy * gx - hxy * gy) / safe_det, -(hxx * gy - hxy * gx) / safe_det], 1)
    trusted = maximum & xp.isfinite(offsets).all(1) & (xp.abs(offsets) <= 1).all(1)
    _, h, w = maps.shape
    inside = (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
    fallback = xp.where(inside[:, None], _shift_offsets(xp, maps, x, y), 0.0)
    return xp.where((inside & trusted)[:, None], offsets, fallback)


@functools.lru_cache(maxsize=32)
def _blur_matrix(n: int, kernel: int) -> torch.Tensor:
    """(n, n) float32 matrix ``M`` with ``M @ v`` = ``v`` (length n) correlated with OpenCV's
    default Gaussian of size ``kernel`` (``cv2.getGaussianKernel(kernel, 0)``), zero padding.

    A banded matrix product is much faster on CPU than a one-channel ``conv2d``.
    """
    taps = cv2.getGaussianKernel(kernel, 0)[:, 0]
    offset = np.arange(n)[None, :] - np.arange(n)[:, None] + kernel // 2  # (n, n) tap index
    inside = (offset >= 0) & (offset < kernel)
    return torch.from_numpy(
        np.where(inside, taps[offset.clip(0, kernel - 1)], 0.0).astype(np.float32)
    )


def _shift_offsets(xp: Any, maps: Any, x: Any, y: Any) -> Any:
    """Quarter-pixel offsets (N, 2), heatmap px, toward the higher neighbour, per axis.

    maps (N, H, W); argmax ``x``, ``y`` (N,); torch tensors or numpy arrays (``xp`` is the
    module). An axis moves only where ``0 < x < W-1`` (resp. ``0 < y < H-1``); equal
    neighbours give no move.
    """
    n, h, w = maps.shape
    rows = xp.arange(n) if xp is np else torch.arange(n, device=maps.device)
    dx = maps[rows, y, xp.clip(x + 1, 0, w - 1)] - maps[rows, y, xp.clip(x - 1, 0, w - 1)]
    dy = maps[rows, xp.clip(y + 1, 0, h - 1), x] - maps[rows, xp.clip(y - 1, 0, h - 1), x]
    ox = xp.where((x > 0) & (x < w - 1), 0.25 * xp.sign(dx), 0.0)
    oy = xp.where((y > 0) & (y < h - 1), 0.25 * xp.sign(dy), 0.0)
    return xp.stack([ox, oy], 1)


def flip_heatmaps(heatmaps: torch.Tensor, spec: KeypointSpec) -> torch.Tensor:
    """Mirror (B, K, H, W) heatmaps along W and swap left/right channels (``spec.flip_indices``).

    Column ``j`` becomes column ``W-1-j``; output channel ``i`` is input channel
    ``flip_indices[i]``.
    """
    index = torch.tensor(spec.flip_indices, device=heatmaps.device)
    return heatmaps.flip(-1).index_select(1, index)


def flip_merge(
    heatmaps: torch.Tensor, flipped_heatmaps: torch.Tensor, spec: KeypointSpec
) -> torch.Tensor:
    """Flip-test merge of (B, K, H, W) heatmaps with those of the mirrored crops (B, K, H, W).

    ``flipped_heatmaps`` is flipped back with :func:`flip_heatmaps`, shifted one heatmap pixel to
    the right (``out[..., 1:] = in[..., :-1]``, column 0 kept, as SimpleBaselines'
    ``shift_heatmap``), and averaged with ``heatmaps``. The exact offset between the two maps is
    ``1 - 1 / sx`` heatmap px (0.75 at stride 4), so the merged peak sits ``1 / (2 sx)`` heatmap
    px (0.5 input px at stride 4) right of the keypoint: the published convention.
    """
    # Flipped back and shifted without materialising either: merged column j >= 1 adds flipped
    # column W - j, column 0 adds flipped column W - 1; the same float32 sums and halving as
    # written above (a + b == b + a), in about a third of the CPU time.
    channels = torch.tensor(spec.flip_indices, device=flipped_heatmaps.device)
    back = flipped_heatmaps.index_select(1, channels)
    merged = heatmaps.clone()
    merged[..., 1:] += back[..., 1:].flip(-1)
    merged[..., 0] += back[..., -1]
    return merged.mul_(0.5)
