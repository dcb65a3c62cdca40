"""Dual-window local RX (LRX), vectorised with summed-area tables.

For every pixel the background is the outer window (``outer`` x ``outer``) minus the inner guard
window (``inner`` x ``inner``), both centred on the pixel and clipped at the image border. Window
sums of x and of the distinct products x_i x_j (i <= j) come from summed-area tables, so the cost
does not depend on the window size; each pixel's quadratic form comes from a symmetric elimination
vectorised over the pixels (:func:`mahalanobis_from_pairs`, pseudo-inverse for singular windows).
A large scene is done in strips of rows (:data:`STRIP_BYTES`), each with the rows its windows
reach, so no temporary is scene-sized.

Defaults, and why (chosen on the synthetic scenes, not on the real ones):

* ``n_components=10``: the bands are first projected on the 10 leading principal components of
  the whole scene. A 15 x 15 outer window minus a 5 x 5 guard holds 200 pixels, fewer than the
  188-450 bands of real sensors, so a full-band local covariance would be singular; 200 samples
  for 10 dimensions is a well-posed estimate.
* ``inner=5, outer=15``: the guard keeps targets up to ~5 px wide out of their own background.
* ``regularization=1e-3``: adds ``1e-3 * trace(global cov) / K`` to every local covariance
  (global scale, so flat local windows stay invertible).
* Pixels whose window holds fewer than ``K + 1`` valid background pixels use the global
  statistics instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_had.detectors.stats import calc_stats, centered_float64, pixel_blocks, pixels_of


@dataclass(frozen=True)
class LocalRXSettings:
    inner: int = 5
    outer: int = 15
    n_components: int | None = 10
    regularization: float = 1e-3

    def __post_init__(self) -> None:
        if self.inner < 1 or self.inner % 2 == 0 or self.outer % 2 == 0 or self.outer <= self.inner:
            raise ValueError(f"windows must be odd with outer > inner >= 1, got {self.inner}/{self.outer}")
        if self.n_components is not None and self.n_components < 1:
            raise ValueError(f"n_components must be >= 1 (or None: all bands), got {self.n_components}")
        if not self.regularization >= 0:
            raise ValueError(f"regularization must be >= 0, got {self.regularization}")


def principal_components(cube: np.ndarray, mask: np.ndarray | None, n_components: int) -> np.ndarray:
    """Project (rows, cols, bands) on the leading principal components -> (rows, cols, K) float64."""
    stats = calc_stats(cube, mask)
    _, vectors = np.linalg.eigh(stats.cov)
    basis = vectors[:, ::-1][:, :n_components]
    pixels = pixels_of(cube)
    projected = np.empty((len(pixels), basis.shape[1]))
    for block in pixel_blocks(len(pixels), pixels.shape[1]):  # no float64 copy of the whole cube
        projected[block] = centered_float64(pixels[block], stats.mean) @ basis
    return projected.reshape(*cube.shape[:2], basis.shape[1])


def symmetric_pairs(dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices ``(i, j)``, ``i <= j``, of a symmetric ``dims x dims`` matrix's
    upper triangle: the ``dims (dims + 1) / 2`` products a window has to sum."""
    return np.triu_indices(dims)


def pair_products(data: np.ndarray) -> np.ndarray:
    """``data[i] * data[j]`` for every pair of :func:`symmetric_pairs` (component-first layout:
    ``(dims, ...)`` -> ``(pairs, ...)``)."""
    i, j = symmetric_pairs(data.shape[0])
    return data[i] * data[j]


def _box_sums(table: np.ndarray, half: int) -> np.ndarray:
    """Sums over (2*half+1)^2 windows clipped at the border, from a zero-padded summed-area table
    over the last two axes."""
    rows, cols = table.shape[-2] - 1, table.shape[-1] - 1
    r = np.arange(rows)
    c = np.arange(cols)
    r0, r1 = np.clip(r - half, 0, rows), np.clip(r + half + 1, 0, rows)
    c0, c1 = np.clip(c - half, 0, cols), np.clip(c + half + 1, 0, cols)
    return (
        table[..., r1, :][..., c1]
        - table[..., r0, :][..., c1]
        - table[..., r1, :][..., c0]
        + table[..., r0, :][..., c0]
    )


def _summed_area(values: np.ndarray) -> np.ndarray:
    table = np.zeros((*values.shape[:-2], values.shape[-2] + 1, values.shape[-1] + 1), dtype=np.float64)
    table[..., 1:, 1:] = values.cumsum(axis=-2).cumsum(axis=-1)
    return table


def local_rx(
    cube: np.ndarray,
    mask: np.ndarray | None = None,
    settings: LocalRXSettings | None = None,
) -> np.ndarray:
    """Dual-window RX of a (rows, cols, bands) cube -> (rows, cols) float64 (NaN where masked)."""
    settings = settings or LocalRXSettings()
    rows, cols, bands = cube.shape
    valid = np.ones((rows, cols), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if valid.shape != (rows, cols):
        raise ValueError(f"mask shape {valid.shape} does not match the cube's pixels {(rows, cols)}")
    if settings.n_components is not None and settings.n_components < bands:
        data = principal_components(cube, valid, settings.n_components)  # centred on the mean
    else:
        # centred as well: window sums of x x^T less the window mean's square cancel badly when
        # the mean is large against the spread (raw radiances)
        data = cube.astype(np.float64) - calc_stats(cube, valid).mean
    global_stats = calc_stats(data, valid)
    data = np.moveaxis(np.where(valid[..., None], data, 0.0), -1, 0)  # (dims, rows, cols)
    step, reach = strip_rows(data.shape[0], cols), settings.outer // 2
    scores = np.empty((rows, cols))
    for top in range(0, rows, step):
        # a strip of rows with the rows its windows reach above and below: the window sums of
        # its own rows are those of the whole image, and no temporary is image-sized
        bottom = min(top + step, rows)
        first, last = max(0, top - reach), min(rows, bottom + reach)
        sums = window_sums(data[:, first:last], valid[first:last], settings)
        own = slice(top - first, bottom - first)  # the strip's rows among those summed
        scores[top:bottom] = scores_from_window_sums(
            data[:, top:bottom],
            valid[top:bottom],
            {name: values[..., own, :] for name, values in sums.items()},
            global_stats.mean,
            global_stats.cov,
            settings.regularization,
        )
    return scores


#: Bytes of float64 window sums (count, components, their products) one strip of local RX holds:
#: each of the several image-sized temporaries of the summed-area tables is this size at most.
#: The ten ABU scenes (at most 150 x 150, 10 components) are one strip each.
STRIP_BYTES = 16 << 20


def strip_rows(dims: int, cols: int) -> int:
    """Rows of one strip of :func:`local_rx` for ``dims`` components and ``cols`` columns."""
    per_row = 8 * cols * (1 + dims + dims * (dims + 1) // 2)
    return max(1, STRIP_BYTES // per_row)


def window_sums(data: np.ndarray, valid: np.ndarray, settings: LocalRXSettings) -> dict[str, np.ndarray]:
    """Per pixel, over its background window (outer minus guard, clipped at the border): the
    count of valid pixels ``n``, the sums of the components ``x`` and of their products ``xx``
    (:func:`symmetric_pairs`); ``data`` ``(dims, rows, cols)``, zero where not ``valid``."""
    sums = {}
    for name, values in (("n", valid.astype(np.float64)), ("x", data), ("xx", pair_products(data))):
        table = _summed_area(values)
        sums[name] = _box_sums(table, settings.outer // 2) - _box_sums(table, settings.inner // 2)
    return sums


def local_rx_line_reference(
    lines: np.ndarray,
    valid: np.ndarray,
    centre: int,
    *,
    inner_half: int,
    outer_half: int,
    load: float,
    fallback: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Float64 oracle of one line's local RX, by explicit loops: no sums, no box filters.

    ``lines`` ``(rows, width, dims)`` are the rows of the window (the caller clips them: at the
    image border, or to what a stream holds) and ``centre`` indexes the scored one; ``valid``
    ``(rows, width)``. Per column: every valid pixel within ``outer_half`` columns, minus the guard
    (``inner_half`` rows and columns), gives the mean and covariance (two passes, divided by n);
    with ``dims`` pixels or fewer, ``fallback`` (mean, cov) does. Score ``d^T (cov + load I)^-1 d``
    for every column, valid or not; NaN where that matrix is exactly singular.
    """
    rows, width, dims = lines.shape
    scores = np.empty(width)
    for col in range(width):
        window = [
            lines[r, c].astype(np.float64)
            for r in range(rows)
            for c in range(max(col - outer_half, 0), min(col + outer_half, width - 1) + 1)
            if valid[r, c] and not (abs(r - centre) <= inner_half and abs(c - col) <= inner_half)
        ]
        if len(window) >= dims + 1:
            pixels = np.array(window)
            mean = pixels.mean(axis=0)
            cov = (pixels - mean).T @ (pixels - mean) / len(pixels)
        else:
            mean, cov = (np.asarray(value, np.float64) for value in fallback)
        d = lines[centre, col].astype(np.float64) - mean
        try:
            scores[col] = d @ np.linalg.solve(cov + load * np.eye(dims), d)
        except np.linalg.LinAlgError:
            scores[col] = np.nan
    return scores


def scores_from_window_sums(
    data: np.ndarray,
    valid: np.ndarray,
    sums: dict[str, np.ndarray],
    global_mean: np.ndarray,
    global_cov: np.ndarray,
    regularization: float,
) -> np.ndarray:
    """Local RX of each pixel from the sums over its dual window of the valid pixels.

    Component-first layout (the per-pixel arithmetic then runs on contiguous rows of pixels):
    ``data`` is ``(dims, *pixels)`` (zero where not ``valid``), ``sums["n"]`` the count
    ``(*pixels)``, ``sums["x"]`` ``(dims, *pixels)`` and ``sums["xx"]`` the products of
    :func:`symmetric_pairs` ``(pairs, *pixels)``. Windows with fewer than ``dims + 1`` pixels use
    the global statistics; every covariance gets ``regularization * trace(global_cov) / dims``.
    Shared by the offline detector and the stream's causal one
    (:mod:`edge_had.stream.causal_local`)."""
    dims = data.shape[0]
    i, j = symmetric_pairs(dims)
    broadcast = (slice(None),) + (None,) * valid.ndim  # a per-component constant, over the pixels
    count = sums["n"]
    enough = count >= dims + 1
    safe = np.where(enough, count, 1.0)
    mean = np.where(enough, sums["x"] / safe, np.asarray(global_mean, dtype=np.float64)[broadcast])
    cov_pairs = np.where(
        enough, sums["xx"] / safe - mean[i] * mean[j], np.asarray(global_cov)[i, j][broadcast]
    )
    cov_pairs[i == j] += regularization * float(np.trace(global_cov)) / dims
    scores = mahalanobis_from_pairs(cov_pairs, data - mean)
    scores[~valid] = np.nan
    return scores


SINGULAR_PIVOT = 1e-12  # a pivot this small against C's largest diagonal entry: numerically singular
# ... and so is a pivot whose size against C's largest diagonal entry, times the smallest earlier
# one's, is this small: an earlier small pivot p leaves rounding of ~eps x largest^2 / p in the
# later ones. Tested against its own diagonal entry alone, 1 in ~500 random rank-2 3 x 3 windows
# and 1 in ~100 rank-9 10 x 10 ones with d outside their range passed as regular (scores of
# 1e13-1e16 where the pseudo-inverse gives 0.1-20); against the largest entry alone, 1 in ~700.
PIVOT_ROUNDING = 64 * np.finfo(np.float64).eps
CHUNK_PIXELS = 4096  # pixels per elimination: the temporaries stay in cache (whole scenes are slower)


def mahalanobis_from_pairs(cov_pairs: np.ndarray, centered: np.ndarray) -> np.ndarray:
    """``d^T C^-1 d`` per pixel, C given by its :func:`symmetric_pairs` entries ``(pairs, *pixels)``
    and d ``(dims, *pixels)``; NaN where an entry of C or d is not finite.

    Symmetric Gaussian elimination of the bordered matrix ``[[C, d], [d^T, 0]]``, vectorised over
    the pixels (in chunks of :data:`CHUNK_PIXELS`): after the ``dims`` pivots its last entry is
    the Schur complement ``-d^T C^-1 d``. A positive definite C has positive pivots (this is a
    Cholesky factorisation without the square roots); pixels where a pivot is numerically zero
    (:data:`SINGULAR_PIVOT`, :data:`PIVOT_ROUNDING`: a singular window) use the pseudo-inverse."""
    dims, shape = centered.shape[0], centered.shape[1:]
    cov_flat, d_flat = cov_pairs.reshape(len(cov_pairs), -1), centered.reshape(dims, -1)
    scores = np.empty(d_flat.shape[1])
    for start in range(0, len(scores), CHUNK_PIXELS):
        chunk = slice(start, start + CHUNK_PIXELS)
        scores[chunk] = _bordered_elimination(cov_flat[:, chunk], d_flat[:, chunk])
    return scores.reshape(shape)


def _bordered_elimination(cov_pairs: np.ndarray, centered: np.ndarray) -> np.ndarray:
    """:func:`mahalanobis_from_pairs` for ``(pairs, n)`` and ``(dims, n)``.

    Only the lower triangle of the bordered matrix is updated, a row segment per operation, so
    every temporary is a few rows of pixels. For one 1024-pixel line with 10 components that was
    4.5x faster than updating the whole trailing block, whose temporaries came fresh from the
    kernel each time under glibc's defaults (a library caller without :mod:`edge_had.allocator`),
    and 1.35x with freed memory kept; the results are the same to the bit."""
    dims = centered.shape[0]
    i, j = symmetric_pairs(dims)
    bordered = np.empty((dims + 1, dims + 1, centered.shape[1]))
    bordered[j, i] = cov_pairs  # i <= j: the lower triangle
    bordered[dims, :dims] = centered
    bordered[dims, dims] = 0.0
    largest = cov_pairs[i == j].max(axis=0)
    smallest_so_far = np.ones(centered.shape[1])  # of the pivots over ``largest``
    positive = np.ones(centered.shape[1], dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(dims):
            pivot = bordered[k, k]
            relative = pivot / largest
            positive &= (relative > SINGULAR_PIVOT) & (relative * smallest_so_far > PIVOT_ROUNDING)
            smallest_so_far = np.minimum(smallest_so_far, relative)
            scaled = bordered[k + 1 :, k] / pivot  # column k below the pivot, over the pivot
            for row in range(k + 1, dims + 1):  # entry (row, c), k < c <= row: -= L[row, k] L[c, k] / pivot
                bordered[row, k + 1 : row + 1] -= scaled[: row - k] * bordered[row, k]
    scores = -bordered[dims, dims]
    finite = np.isfinite(cov_pairs).all(axis=0) & np.isfinite(centered).all(axis=0)
    scores[~finite] = np.nan
    singular = ~positive & finite
    if singular.any():
        index = np.zeros((dims, dims), dtype=np.intp)
        index[i, j] = index[j, i] = np.arange(len(i))
        cov = np.moveaxis(cov_pairs[:, singular][index], -1, 0)  # (n, dims, dims)
        d = centered[:, singular].T
        scores[singular] = np.einsum("nk,nkj,nj->n", d, np.linalg.pinv(cov, hermitian=True), d)
    return scores


class LocalRX:
    """SPy-like class form: ``LocalRX(settings)(cube, mask)``."""

    def __init__(self, settings: LocalRXSettings | None = None) -> None:
        self.settings = settings or LocalRXSettings()

    def __call__(self, cube: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return local_rx(cube, mask, self.settings)
