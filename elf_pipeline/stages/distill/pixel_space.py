"""Which pixel space an imported synthetic set is stored in, read from the images themselves.

An import declares the space of its file (``normalization``, ``zca``); a wrong declaration decodes
to a set that trains quietly to a bad number (a [0, 1] set declared ``uint8`` becomes an all-black
set).  ``detect`` decodes the raw values under every candidate space and compares what comes out
with the dataset's real images; ``judge`` turns that into nothing, a warning or a one-line error.

Statistics (numpy only, no training, no torch):

- per space, the images are decoded to [0, 1] pixels (``u = x * scale + shift`` per channel) and
  compared with the training split's per-channel mean ``m`` and std ``s`` (of [0, 1] pixels):
  ``mean_dev = max_c |mean_c(u) - m_c| / s_c``, ``std_dev = max_c |log(std_c(u) / s_c)|`` and
  ``outside``, the share of decoded values outside [-0.5, 1.5];
- the whitening slope: the variance of the images along the training split's top principal
  components (those with eigenvalue >= 1/100 of the largest, 3 to 64 of them), regressed on the
  eigenvalues in log-log.  Images in pixel space vary like real images (slope near 1); ZCA-whitened
  images have the same variance along every strong component (``S / (S + eps)``, slope near 0).

Each space gets ``score = max(mean_dev / MEAN_LIMIT, std_dev / STD_LIMIT, outside / OUTSIDE_LIMIT)``,
consistent up to 1.  A declared space is ruled out (an error) when its score is above 1 and another
space is consistent with a score at most ``1 / BETTER`` of it; inconsistent without such a clearly
better alternative, it is a warning.  A whitening slope below ``WHITENED_SLOPE`` declared without
``zca`` is an error, above ``PLAIN_SLOPE`` declared with ``zca`` too; between the two, a warning.

The limits come from measurements on correctly declared sets (random real subsets and short DM,
DC and DSA runs of this pipeline on digits and Fashion-MNIST, IPC 1 to 50, each exported as uint8,
[0, 1], dataset- and DC-normalised and ZCA-whitened at eps 0.1; docs/datasets.md): no new error on
the 104 correct declarations (three unclipped exports beyond [-0.5, 1.5] fail the range check, as
before); whitening slopes of plain sets 0.35 (a set distilled five steps from noise) to 1.25, of
whitened sets -0.57 to 0.34 (a whitened IPC-1 DM set: a warning).  Pure white noise has the flat
spectrum of a whitened set and is refused as one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Decision limits (see the module docstring and docs/datasets.md for the measurements behind them).
MEAN_LIMIT = 1.0      # decoded per-channel mean at most one dataset std from the real mean
STD_LIMIT = math.log(2.0)  # decoded per-channel std within a factor 2 of the real std
OUTSIDE_LIMIT = 0.1   # at most 10% of decoded values outside [-0.5, 1.5]
BETTER = 2.0          # a declared space is ruled out when it is inconsistent (score > 1) and another
                      # space is consistent with a score at most 1 / BETTER of the declared one's
WHITENED_SLOPE = 0.2   # whitening slope below this: ZCA-whitened
PLAIN_SLOPE = 0.65     # above this: not whitened; between the two: doubtful
TOP_RATIO = 100.0      # components with eigenvalue >= largest / TOP_RATIO enter the slope
MIN_COMPONENTS, MAX_COMPONENTS = 3, 64
EPS_RANGE = 1e-6
FLAT_FIT = 0.5         # eps estimate (messages only): S / (S + eps) must fit with half a flat profile's residual
UNIT_RANGE = (-0.5, 1.5)


@dataclass(frozen=True)
class Space:
    """A non-ZCA pixel space: ``name`` as ``imported_normalization`` records it, ``declare`` as the
    config writes it, and the per-channel decoding ``u = x * scale + shift`` to [0, 1] pixels."""

    name: str
    declare: str
    scale: tuple[float, ...]
    shift: tuple[float, ...]


@dataclass(frozen=True)
class Spectrum:
    """The training split's top principal components in the dataset-normalised space."""

    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray   # (k,), descending


@dataclass(frozen=True)
class Fit:
    space: Space
    mean_dev: float
    std_dev: float
    outside: float
    mean: float  # decoded mean / std of the channel that deviates most (for messages)
    std: float

    @property
    def score(self) -> float:
        return max(self.mean_dev / MEAN_LIMIT, self.std_dev / STD_LIMIT, self.outside / OUTSIDE_LIMIT)

    @property
    def verdict(self) -> str:
        return "consistent" if self.score <= 1 else "inconsistent"


@dataclass(frozen=True)
class Detection:
    fits: list[Fit]
    low: float
    high: float
    dataset_mean: float
    dataset_std: float
    slope: float | None = None  # whitening slope; None without a spectrum
    eps: float | None = None    # an estimate of the whitening's eps, for messages; None: none fits

    @property
    def whitening(self) -> str | None:
        """``whitened``, ``plain``, ``doubtful`` (between the slopes) or None (not measured)."""
        if self.slope is None:
            return None
        return "whitened" if self.slope < WHITENED_SLOPE else "plain" if self.slope > PLAIN_SLOPE else "doubtful"

    def consistent(self) -> list[str]:
        """The spaces the images are consistent with (best first), ``zca`` where they look whitened."""
        if self.whitening == "whitened":
            return ["dataset+zca" + (f"(eps~{self.eps:.2g})" if self.eps is not None else "")]
        return [fit.space.name for fit in sorted(self.fits, key=lambda f: f.score) if fit.verdict == "consistent"]

    def fit(self, name: str) -> Fit | None:
        return next((fit for fit in self.fits if fit.space.name == name), None)

    def best(self, exclude: str | None = None) -> Fit | None:
        candidates = [fit for fit in self.fits if fit.space.name != exclude]
        return min(candidates, key=lambda f: f.score) if candidates else None


def candidate_spaces(dataset_mean, dataset_std, release: dict[str, tuple[tuple[float, ...], tuple[float, ...]]],
                     declared: Space | None = None) -> list[Space]:
    """uint8, unit, dataset, each releasing code's constants (``release``: code -> (mean, std)) and
    the declared space when it is none of these ({mean, std})."""
    channels = len(dataset_mean)
    spaces = [Space("uint8", "uint8", (1 / 255,) * channels, (0.0,) * channels),
              Space("unit", "unit", (1.0,) * channels, (0.0,) * channels),
              Space("dataset", "dataset", tuple(map(float, dataset_std)), tuple(map(float, dataset_mean)))]
    for code, (mean, std) in release.items():
        if len(mean) == channels:
            spaces.append(Space(f"published:{code}", f"{{published: {code}}}", tuple(map(float, std)), tuple(map(float, mean))))
    if declared is not None and declared.name not in {space.name for space in spaces}:
        spaces.append(declared)
    return spaces


def spectrum(normalised: np.ndarray) -> Spectrum:
    """Top principal components of (a sample of) the dataset-normalised training images, N x D."""
    x = normalised.reshape(len(normalised), -1).astype(np.float64)
    x = x - x.mean(axis=0)
    n, d = x.shape
    if n <= d:  # eigenvectors of the Gram matrix, mapped to pixel space
        values, vectors = np.linalg.eigh(x @ x.T / max(n - 1, 1))
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        keep = values > values[0] * 1e-9
        components = (x.T @ vectors[:, keep]) / np.sqrt(values[keep] * max(n - 1, 1))
        return Spectrum(components.T, values[keep])
    values, vectors = np.linalg.eigh(x.T @ x / (n - 1))
    order = np.argsort(values)[::-1]
    return Spectrum(vectors[:, order].T, values[order])


def _variances(images: np.ndarray, spec: Spectrum, k: int) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float64)
    projections = (flat - flat.mean(axis=0)) @ spec.components[:k].T
    return projections.var(axis=0, ddof=1)


def whitening_slope(images: np.ndarray, spec: Spectrum) -> float | None:
    """Slope of log(variance of the images along a component) on log(its eigenvalue), over the top
    components; None where fewer than two images or components."""
    if len(images) < 2 or len(spec.variances) < MIN_COMPONENTS:
        return None
    keep = spec.variances >= spec.variances[0] / TOP_RATIO
    k = int(min(max(keep.sum(), MIN_COMPONENTS), MAX_COMPONENTS, len(spec.variances)))
    variance = _variances(images, spec, k)
    if (variance <= 0).any():
        return None
    x, y = np.log(spec.variances[:k]), np.log(variance)
    if np.ptp(x) <= 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def whitening_eps(images: np.ndarray, spec: Spectrum) -> float | None:
    """An estimate of the whitening's eps, for messages only: the eps of ``S / (S + eps)`` that best
    fits the images' variance along the components within ``EPS_RANGE`` of the strongest (least
    squares in log space, quarter decades), or None where a flat profile fits about as well.  It
    recovers eps from whitened real images; distilled images, which also vary along directions the
    real data does not, often give None."""
    usable = spec.variances > spec.variances[0] * EPS_RANGE
    k = int(usable.sum())
    if len(images) < 2 or k < 2 * MIN_COMPONENTS:
        return None
    variance = _variances(images, spec, k)
    if (variance <= 0).any():
        return None
    strength, y = spec.variances[:k], np.log(variance)

    def residual(model: np.ndarray) -> float:
        r = y - model
        return float(((r - r.mean()) ** 2).sum())

    grid = strength[0] * 10.0 ** (-np.arange(1, 4 * 12) / 4)
    grid = grid[(grid > strength[-1] * 3) & (grid < strength[0] / 3)]
    if not len(grid):
        return None
    fits = [residual(np.log(strength / (strength + eps))) for eps in grid]
    best = int(np.argmin(fits))
    flat = residual(np.zeros_like(y))
    return float(grid[best]) if fits[best] < FLAT_FIT * flat else None


def detect(images: np.ndarray, dataset_mean, dataset_std, spaces: list[Space], spec: Spectrum | None = None) -> Detection:
    """Fit every candidate space to raw NCHW ``images`` (as stored in the file)."""
    images = np.asarray(images, dtype=np.float64)
    mean_c = images.mean(axis=(0, 2, 3))
    std_c = images.std(axis=(0, 2, 3))
    low, high = float(images.min()), float(images.max())
    real_mean, real_std = np.asarray(dataset_mean, dtype=np.float64), np.maximum(np.asarray(dataset_std, dtype=np.float64), 1e-8)
    per_channel = images.transpose(1, 0, 2, 3).reshape(images.shape[1], -1)
    fits = []
    for space in spaces:
        scale, shift = np.asarray(space.scale), np.asarray(space.shift)
        mean_u, std_u = mean_c * scale + shift, np.maximum(std_c * np.abs(scale), 1e-12)
        mean_dev = np.abs(mean_u - real_mean) / real_std
        std_dev = np.abs(np.log(std_u / real_std))
        decoded = per_channel * scale[:, None] + shift[:, None]
        outside = float(((decoded < UNIT_RANGE[0]) | (decoded > UNIT_RANGE[1])).mean())
        worst = int(np.argmax(np.maximum(mean_dev / MEAN_LIMIT, std_dev / STD_LIMIT)))
        fits.append(Fit(space, float(mean_dev.max()), float(std_dev.max()), outside, float(mean_u[worst]), float(std_u[worst])))
    slope = whitening_slope(images, spec) if spec is not None else None
    eps = whitening_eps(images, spec) if slope is not None and slope < WHITENED_SLOPE else None
    return Detection(fits, low, high, float(real_mean[0]) if len(real_mean) == 1 else float(real_mean.mean()),
                     float(real_std[0]) if len(real_std) == 1 else float(real_std.mean()), slope, eps)


def _describe(fit: Fit, detection: Detection, reference: bool = True) -> str:
    """The statistic that decides a space's score, in a few words."""
    if fit.space.name == "unit" and fit.outside > OUTSIDE_LIMIT:
        return f"values span [{detection.low:.3g}, {detection.high:.3g}], far outside [0, 1] for normalization: unit"
    if fit.outside / OUTSIDE_LIMIT >= max(fit.mean_dev / MEAN_LIMIT, fit.std_dev / STD_LIMIT):
        return f"as {fit.space.name}, {fit.outside:.0%} of the values decode outside [0, 1]"
    text = f"as {fit.space.name}: mean {fit.mean:.3g}, std {fit.std:.3g}"
    return text + (f"; real images: {detection.dataset_mean:.3g}, {detection.dataset_std:.3g}" if reference else "")


@dataclass(frozen=True)
class Judgement:
    level: str  # ok, warning or error
    message: str | None
    consistent: list[str]
    likely: str | None


def judge(detection: Detection, declared: Space, zca: bool, path: object) -> Judgement:
    """Compare the declared space (``declared``, whitened after it when ``zca``) with what the
    statistics allow.  Errors and warnings are one line, starting with ``path``."""
    consistent = detection.consistent()
    white = detection.whitening
    slope = f"whitening slope {detection.slope:.2f}" if detection.slope is not None else ""
    plain_best = detection.best()
    if zca:
        if white == "plain":
            likely = plain_best.space if plain_best and plain_best.verdict == "consistent" else None
            suggestion = f"likely {likely.name} without zca: drop zca" + (
                f" and declare normalization: {likely.declare}" if likely.name != "dataset" else "") if likely else \
                "drop zca"
            return Judgement("error", f"{path}: declared ZCA-whitened (zca) but the images are not whitened ({slope}, "
                                      f"whitened sets give about 0); {suggestion}", consistent,
                             likely.name if likely else None)
        if white == "doubtful":
            return Judgement("warning", f"{path}: declared ZCA-whitened (zca), but the images are only partly whitened "
                                        f"({slope}); check the declaration", consistent, None)
        return Judgement("ok", None, consistent, "dataset+zca" if white else None)
    if white == "whitened":
        eps = f", eps about {detection.eps:.2g}" if detection.eps is not None else ""
        return Judgement("error", f"{path}: declared normalization: {declared.name} without zca, but the images look "
                                  f"ZCA-whitened ({slope}{eps}; unwhitened images give about 1); "
                                  "likely dataset+zca: declare normalization: dataset and zca: {eps: <its eps, MTT's 0.1>}",
                         consistent, "dataset+zca")
    verdict = _pixel_judgement(detection, declared, path, consistent)
    if white == "doubtful" and verdict.level == "ok":
        return Judgement("warning", f"{path}: the images look partly whitened ({slope}); if the file is in ZCA space, "
                                    "declare zca", consistent, declared.name)
    return verdict


def _pixel_judgement(detection: Detection, declared: Space, path: object, consistent: list[str]) -> Judgement:
    fit = detection.fit(declared.name)
    assert fit is not None
    others = [f for f in sorted(detection.fits, key=lambda f: f.score) if f.space.name != declared.name]
    likely = next((f for f in others if f.verdict == "consistent"), None)
    if fit.verdict != "consistent" and likely is not None and likely.score * BETTER <= fit.score:
        why, fits = _describe(fit, detection), _describe(likely, detection, False)
        return Judgement("error", f"{path}: declared normalization: {declared.name}, ruled out by the images' statistics "
                                  f"({why}); likely {likely.space.name} ({fits}): declare normalization: {likely.space.declare}",
                         consistent, likely.space.name)
    if fit.verdict != "consistent":
        alternative = f"; closest: {likely.space.name} ({_describe(likely, detection, False)})" if likely else \
            "; no known space fits well"
        return Judgement("warning", f"{path}: normalization: {declared.name} fits the images' statistics poorly "
                                    f"({_describe(fit, detection)}){alternative}", consistent,
                         likely.space.name if likely else None)
    return Judgement("ok", None, consistent, declared.name)
