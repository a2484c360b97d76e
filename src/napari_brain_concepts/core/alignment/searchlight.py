"""Volumetric searchlight RSA, batched in torch on the CPU or a CUDA device.

A searchlight is the sphere of voxels whose distance to a centre voxel is strictly less than ``radius``
voxels (rsatoolbox's definition). A centre is kept when at least ``threshold`` of the sphere's voxels that
lie on the grid are inside the mask; its neighbours are the sphere's voxels inside the mask (the
"truncated at the boundary" sphere, so that no voxel outside the mask enters an RDM). For every kept
centre the correlation-distance RDM of its neighbours' patterns is compared with each model RDM, on each
stimulus subset, and the scores are averaged over subsets.

Instead of looping over centres, a batch of centres is gathered into one padded tensor
(batch, sphere voxels, stimuli) and all their RDMs come out of one batched matrix product (the Gram
matrix of the raw patterns, centred afterwards from the column sums).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..context import resolve_device
from ..errors import InputError, check_range
from ..progress import Progress
from ..ranges import SEARCHLIGHT
from .rsa import METHODS, TIE_DECIMALS, correlation_rdm, rank_rows, upper_triangle


def sphere_offsets(radius: float) -> np.ndarray:
    """Integer voxel offsets (k, 3) with Euclidean norm strictly below ``radius``."""
    SEARCHLIGHT["radius"].check("radius", radius)
    r = int(np.ceil(radius))
    grid = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1].reshape(3, -1).T
    return grid[np.sqrt((grid.astype(np.float64) ** 2).sum(axis=1)) < radius]


class Spheres:
    """Searchlight centres and their in-mask neighbours.

    Attributes
    ----------
    centers : ndarray (n_centers,)
        Flat (C-order) indices of the centre voxels in the volume.
    sizes : ndarray (n_centers,)
        Number of in-mask voxels in each centre's sphere.
    shape : tuple
        The volume's shape.
    mask : bool ndarray
        The mask the spheres were made for.
    offsets : ndarray (k, 3)
        Voxel offsets of the sphere.
    neighbors : ndarray (n_centers, max_size)
        Column indices (into the mask's voxels, C order) of each centre's neighbours, padded with -1;
        built on first use (the sliding engine never needs it).
    """

    def __init__(self, centers: np.ndarray, sizes: np.ndarray, mask: np.ndarray, offsets: np.ndarray):
        self.centers = centers
        self.sizes = sizes
        self.mask = mask
        self.offsets = offsets
        self.shape = tuple(int(s) for s in mask.shape)
        self._neighbors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.centers)

    @property
    def width(self) -> int:
        """Largest number of voxels in a sphere."""
        return int(self.sizes.max()) if len(self.sizes) else 0

    @property
    def neighbors(self) -> np.ndarray:
        if self._neighbors is None:
            coords = np.array(np.unravel_index(self.centers, self.shape)).T
            column = np.full(self.shape, -1, dtype=np.int64)
            column[self.mask] = np.arange(int(self.mask.sum()))
            shape = np.array(self.shape)
            neighbors = np.full((len(self.centers), len(self.offsets)), -1, dtype=np.int64)
            for k, off in enumerate(self.offsets):
                pos = coords + off
                ok = np.all((pos >= 0) & (pos < shape), axis=1)
                neighbors[ok, k] = column[tuple(pos[ok].T)]
            order = np.argsort(neighbors < 0, axis=1, kind="stable")
            self._neighbors = np.take_along_axis(neighbors, order, axis=1)[:, :self.width]
        return self._neighbors

    def neighbor_list(self, mask: np.ndarray | None = None) -> list[np.ndarray]:
        """Neighbours of every centre as flat volume indices (the form rsatoolbox returns)."""
        flat = np.flatnonzero(self.mask.ravel() if mask is None else np.asarray(mask).ravel())
        return [flat[row[:n]] for row, n in zip(self.neighbors, self.sizes)]


def searchlight_spheres(mask: np.ndarray, radius: float = 6, threshold: float = 0.5) -> Spheres:
    """Searchlight centres (mask voxels with ≥ ``threshold`` of their on-grid sphere in the mask).

    Equals rsatoolbox's ``get_volume_searchlight(mask, radius, threshold)`` centres; the neighbours are
    rsatoolbox's restricted to the mask. Sphere counts come from two correlations of the mask with the
    sphere kernel, not from a loop over centres.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InputError("mask", f"has {mask.ndim} dimensions", "give a 3D mask volume")
    SEARCHLIGHT["threshold"].check("threshold", threshold)
    mask = mask != 0
    offsets = sphere_offsets(radius)
    r = int(np.abs(offsets).max()) if len(offsets) else 0
    kernel = np.zeros((2 * r + 1,) * 3, dtype=np.int64)
    kernel[tuple((offsets + r).T)] = 1
    in_mask = ndimage.correlate(mask.astype(np.int64), kernel, mode="constant", cval=0)
    on_grid = ndimage.correlate(np.ones(mask.shape, dtype=np.int64), kernel, mode="constant", cval=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = in_mask / on_grid
    keep = mask & (fraction >= threshold)
    centers = np.flatnonzero(keep.ravel())
    return Spheres(centers=centers, sizes=in_mask.ravel()[centers].astype(np.int64), mask=mask, offsets=offsets)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based, ties averaged) along the last axis, like ``scipy.stats.rankdata``."""
    vals, order = torch.sort(x, dim=-1)
    m = x.shape[-1]
    new_group = torch.ones_like(vals, dtype=torch.bool)
    new_group[..., 1:] = vals[..., 1:] != vals[..., :-1]
    group = torch.cumsum(new_group.to(torch.int64), dim=-1) - 1
    pos = torch.arange(m, device=x.device, dtype=x.dtype).expand_as(vals)
    first = torch.full_like(vals, float(m)).scatter_reduce(-1, group, pos, reduce="amin", include_self=True)
    last = torch.full_like(vals, -1.0).scatter_reduce(-1, group, pos, reduce="amax", include_self=True)
    avg_sorted = (torch.gather(first, -1, group) + torch.gather(last, -1, group)) / 2 + 1
    return torch.empty_like(x).scatter_(-1, order, avg_sorted)


def _standardize(v: torch.Tensor) -> torch.Tensor:
    v = v - v.mean(dim=-1, keepdim=True)
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def padded_columns(patterns: torch.Tensor) -> torch.Tensor:
    """Voxel-major patterns (n_voxels + 1, n_stimuli + 1): a column of ones, and a final zero row.

    Each stimulus is first centred and scaled over all voxels: a correlation distance within any sphere
    does not change under a per-stimulus offset or scale, and the centred values keep the sphere means
    small, so the Gram-matrix shortcut loses no precision. The extra column of ones makes the Gram matrix
    of a sphere carry its column sums (last row) and its voxel count (corner) at no extra pass. Padding
    indices point at the final all-zero row, which adds nothing.
    """
    x = patterns - patterns.mean(dim=1, keepdim=True)
    x = x / x.std(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    out = torch.zeros(x.shape[1] + 1, x.shape[0] + 1, dtype=x.dtype, device=x.device)
    out[:-1, :-1] = x.T
    out[:-1, -1] = 1.0
    return out


def batch_rdms(columns: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Upper-triangle correlation-distance RDMs of a batch of searchlights.

    Parameters
    ----------
    columns : tensor (n_voxels + 1, n_stimuli + 1)
        From :func:`padded_columns`.
    neighbors : tensor (batch, k)
        Column indices of each sphere's voxels, padded with -1.

    Returns
    -------
    tensor (batch, n_stimuli * (n_stimuli - 1) / 2)
    """
    pad = columns.shape[0] - 1
    x = _gather(columns, torch.where(neighbors >= 0, neighbors, pad))          # (B, k, n + 1)
    return _rdm_from_gram(torch.bmm(x.transpose(1, 2), x))


class _Models:
    """Model RDM vectors of one stimulus subset, in the forms the scorers need.

    ``vectors`` (K, m): standardised (zero mean, unit norm) upper triangles (ranked first for Spearman);
    ``full`` (K, n * n): the same values at their upper-triangle positions of an n × n matrix, zeros
    elsewhere; ``upper`` (n * n,): 1 on the upper triangle, 0 elsewhere. Always float64: scoring is a
    few passes over each sphere's n × n matrix, cheap next to building its Gram matrix, and float32 sums
    over thousands of pairs would cost about 1e-6 in r.
    """

    def __init__(self, vectors: np.ndarray, n: int, method: str, device: torch.device):
        self.method = method
        self.vectors = _standardize(torch.as_tensor(vectors, dtype=torch.float64, device=device))
        i, j = torch.triu_indices(n, n, offset=1, device=device)
        self.full = torch.zeros(len(vectors), n * n, dtype=torch.float64, device=device)
        self.full[:, i * n + j] = self.vectors
        self.upper = torch.zeros(n * n, dtype=torch.float64, device=device)
        self.upper[i * n + j] = 1.0
        self.n_pairs = len(i)


def _score(gram: torch.Tensor, models: _Models) -> np.ndarray:
    """Model scores (K, B) of a batch of searchlights from their augmented Gram matrices (B, n + 1, n + 1)."""
    gram = gram.to(torch.float64)
    if models.method == "spearman":
        rdm = _average_ranks(torch.round(_rdm_from_gram(gram), decimals=TIE_DECIMALS))
        return (_standardize(rdm) @ models.vectors.T).T.cpu().numpy()
    return _pearson_from_gram(gram, models).T.cpu().numpy()


def _centred(gram: torch.Tensor) -> torch.Tensor:
    """Centred Gram matrices ``G − s sᵀ / k`` (B, n, n) from augmented ones (B, n + 1, n + 1)."""
    n = gram.shape[1] - 1
    sums = gram[:, :n, n]
    mean = sums / gram[:, n, n][:, None]
    return torch.baddbmm(gram[:, :n, :n], sums[:, :, None], mean[:, None, :], alpha=-1)


def _pearson_from_gram(gram: torch.Tensor, models: _Models) -> torch.Tensor:
    """Pearson r (B, K) of each searchlight's correlation-distance RDM with each model RDM.

    The correlation matrix ``R`` of each sphere is formed in full (centred Gram matrix scaled by the
    standard deviations: contiguous elementwise passes, no gather of the upper triangle), and the
    comparison runs on whole matrices: with ``d = 1 − R`` on the upper triangle and standardised
    (zero-mean, unit-norm) model vectors ``m``, ``r = −Σ m (R − R̄) / ‖R − R̄‖`` with ``R̄`` the mean of the
    upper triangle; the sums are matrix products with the upper-triangle-masked models and mask.
    """
    corr = _centred(gram)
    b, n, _ = corr.shape
    scale = torch.diagonal(corr, dim1=1, dim2=2).rsqrt()
    corr.mul_(scale[:, :, None]).mul_(scale[:, None, :])
    flat = corr.view(b, n * n)
    flat.sub_((flat @ models.upper)[:, None] / models.n_pairs)
    num = flat @ models.full.T
    return -num / torch.sqrt(flat.square_() @ models.upper)[:, None]


def _rdm_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Upper-triangle correlation distances (B, n (n − 1) / 2) from augmented Gram matrices."""
    corr = _centred(gram)
    n = corr.shape[1]
    i, j = torch.triu_indices(n, n, offset=1, device=gram.device)
    var = torch.diagonal(corr, dim1=1, dim2=2)
    return 1.0 - corr.reshape(len(corr), n * n)[:, i * n + j] / torch.sqrt(var[:, i] * var[:, j])


_SAME_SIZE_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def _gather(columns: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``columns`` at ``index`` (B, k) → (B, k, n).

    The rows are copied through an integer view of the same width: a bit-exact copy, and several times
    faster than ``index_select`` on float64 tensors on the CPU.
    """
    flat = index.reshape(-1)
    as_int = _SAME_SIZE_INT.get(columns.element_size())
    if as_int is None or columns.is_cuda:
        rows = columns.index_select(0, flat)
    else:
        rows = columns.view(as_int).index_select(0, flat).view(columns.dtype)
    return rows.view(*index.shape, columns.shape[1])


class _SlidingPlan:
    """Lines of centres along the last axis, and the sphere's leading and trailing caps along it.

    Moving a sphere one voxel along the last axis adds the voxels of its leading cap and drops those of its
    trailing cap (about pi r^2 each, against 4/3 pi r^3 in the sphere), so each line's Gram matrix is built
    once in full at its first centre and then updated voxel by voxel.
    """

    def __init__(self, mask: np.ndarray, spheres: Spheres, offsets: np.ndarray):
        pad = int(np.abs(offsets).max()) + 1 if len(offsets) else 1
        shape = np.array(mask.shape)
        padded = shape + 2 * pad
        self.n_voxels = int(mask.sum())
        columns = np.full(tuple(padded), self.n_voxels, dtype=np.int64)
        inner = tuple(slice(pad, pad + n) for n in shape)
        columns[inner][mask] = np.arange(self.n_voxels)
        self.columns = columns.ravel()
        strides = np.array([padded[1] * padded[2], padded[2], 1])
        members = {tuple(o) for o in offsets}
        step = np.array([0, 0, 1])
        lead = np.array([o for o in offsets if tuple(o + step) not in members]).reshape(-1, 3)
        trail = np.array([o for o in offsets if tuple(o - step) not in members]).reshape(-1, 3)
        self.delta_all = offsets @ strides
        self.delta_lead = lead @ strides            # relative to the new centre
        self.delta_trail = trail @ strides          # relative to the old centre
        coords = np.array(np.unravel_index(spheres.centers, mask.shape)).T
        line = coords[:, 0] * shape[1] + coords[:, 1]
        starts = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])
        ends = np.r_[starts[1:], len(line)] - 1
        z0, z1 = coords[starts, 2], coords[ends, 2]
        self.first = ((coords[starts] + pad) @ strides).astype(np.int64)     # padded flat index of line start
        self.length = (z1 - z0 + 1).astype(np.int64)
        centre_at = np.full(int(np.prod(padded)), -1, dtype=np.int64)
        centre_at[(coords + pad) @ strides] = np.arange(len(coords))
        self.centre_at = centre_at
        order = np.argsort(-self.length, kind="stable")
        self.first, self.length = self.first[order], self.length[order]


@dataclass
class SearchlightResult:
    """Searchlight scores: ``scores[k, c]`` is model k's r at centre c, averaged over subsets."""

    spheres: Spheres
    models: list[str]
    scores: np.ndarray
    method: str
    n_subsets: int

    def volume(self, model: str, fill: float = 0.0) -> np.ndarray:
        """The score map of ``model`` as a 3D volume (``fill`` where no centre)."""
        if model not in self.models:
            raise InputError("searchlight result", f"has no model {model!r}", f"choose one of {', '.join(self.models)}")
        out = np.full(int(np.prod(self.spheres.shape)), fill, dtype=np.float32)
        out[self.spheres.centers] = self.scores[self.models.index(model)]
        return out.reshape(self.spheres.shape)


_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (as everywhere else in the package) or the torch dtype itself."""
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if dtype in _DTYPES.values():
        return dtype
    raise InputError("parameter dtype", f"{dtype!r} is unknown", "use 'float64' or 'float32'")


def searchlight_rsa(patterns: np.ndarray, mask: np.ndarray, models: Mapping[str, np.ndarray],
                    subsets: Sequence[np.ndarray] | None = None, *, radius: float = 6,
                    threshold: float = 0.5, method: str = "pearson", device: str = "auto",
                    dtype: str | torch.dtype = "float64", batch_size: int | None = None,
                    memory_mb: int | None = None, spheres: Spheres | None = None, engine: str = "sliding"
                    ) -> Generator[Progress, None, SearchlightResult]:
    """Searchlight RSA of several models over a volume (a generator yielding progress).

    Parameters
    ----------
    patterns : ndarray (n_stimuli, n_voxels)
        Stimulus patterns of the mask's voxels (C order of ``mask``).
    mask : bool ndarray (X, Y, Z)
    models : {name: ndarray (n_stimuli, d)}
        Model features in the same stimulus order.
    subsets : list of index arrays, optional
        Stimulus subsets whose scores are averaged (default: all stimuli at once).
    radius, threshold : float
        Sphere radius in voxels (strictly less than) and the in-mask fraction a centre needs.
    method : {"pearson", "spearman"}
    device : {"auto", "cpu", "cuda", ...}
    dtype : {"float64", "float32"} or the torch dtype
        Precision of the Gram matrices (the bulk of the work). float64 (default) reproduces rsatoolbox to
        ~1e-14. float32 is 1.5–2× faster and within ~2e-8 in r when each voxel's mean over stimuli is
        small next to its variation (z-scored or mean-centred responses); a large constant per voxel
        costs float32 precision (about 1e-6 at offsets 10×, 1e-4 at 100× the variation). The RDMs and
        their comparison are always computed in float64 from the Gram matrices.
    batch_size : int, optional
        Centres (gather) or lines of centres (sliding) per batch (default from ``memory_mb``).
    memory_mb : int, optional
        Size of the largest temporary a batch gathers. Default 16 MB on the CPU (small batches stay in
        the CPU's caches and below the allocator's threshold for returning memory to the system at every
        step) and 512 MB on a GPU (fewer, larger kernels).
    spheres : Spheres, optional
        Precomputed :func:`searchlight_spheres` of ``mask`` (reused across subjects and calls).
    engine : {"sliding", "gather"}
        ``"sliding"`` (default) builds each line of centres' Gram matrix once and slides the sphere along
        the last axis, adding and dropping only its caps; ``"gather"`` gathers every sphere in full. Both
        give the same values (to rounding).

    Returns
    -------
    SearchlightResult
    """
    if method not in METHODS:
        raise InputError("parameter method", f"{method!r} is not an RDM comparison", f"use one of {', '.join(METHODS)}")
    dtype = _torch_dtype(dtype)
    mask = np.asarray(mask) != 0
    patterns = np.asarray(patterns)
    if patterns.ndim != 2 or patterns.shape[1] != int(mask.sum()):
        raise InputError("searchlight patterns", f"have shape {patterns.shape} for {int(mask.sum())} mask voxels",
                         "give (n_stimuli, n_voxels) patterns in the mask's voxel order")
    n = patterns.shape[0]
    if subsets is None:
        subsets = [np.arange(n)]
    if spheres is None:
        spheres = searchlight_spheres(mask, radius, threshold)
    if len(spheres) == 0:
        raise InputError("searchlight", f"no centre has {threshold:.0%} of its radius-{radius} sphere in the mask",
                         "lower the radius (in voxels; in an analysis --param rsa.radius=N) or the threshold "
                         "(rsa.threshold), or use a larger mask")
    if engine not in ("sliding", "gather"):
        raise InputError("parameter engine", f"{engine!r} is unknown", "use 'sliding' or 'gather'")
    dev = torch.device(resolve_device(device))
    if memory_mb is None:
        memory_mb = 16 if dev.type == "cpu" else 512
    check_range("memory_mb", memory_mb, 0, low_open=True)
    names = list(models)
    largest = max(len(s) for s in subsets)
    if batch_size is None:
        bytes_per = (largest + 1) * max(spheres.width, largest + 1) * torch.finfo(dtype).bits // 8
        batch_size = max(1, int(memory_mb * 2 ** 20 // max(bytes_per, 1)))
    check_range("batch_size", batch_size, 1)
    scores = np.zeros((len(names), len(spheres)))
    total = len(subsets) * len(spheres)
    done = 0
    if engine == "sliding":
        plan = _SlidingPlan(mask, spheres, sphere_offsets(radius))
        lookup = torch.as_tensor(plan.columns, device=dev)
        d_all = torch.as_tensor(plan.delta_all, device=dev)
        d_lead = torch.as_tensor(plan.delta_lead + 1, device=dev)     # relative to the current centre
        d_trail = torch.as_tensor(plan.delta_trail, device=dev)
    else:
        neighbors = torch.as_tensor(spheres.neighbors, device=dev)
    for s in subsets:
        s = np.asarray(s)
        model_vecs = np.stack([upper_triangle(correlation_rdm(np.asarray(models[m])[s], name=f"model {m}"))
                               for m in names])
        if method == "spearman":
            model_vecs = rank_rows(model_vecs)
        mods = _Models(model_vecs, len(s), method, dev)
        columns = padded_columns(torch.as_tensor(patterns[s], dtype=dtype, device=dev))

        if engine == "gather":
            pad_row = columns.shape[0] - 1
            for start in range(0, len(spheres), batch_size):
                stop = min(start + batch_size, len(spheres))
                nb = neighbors[start:stop]
                x = _gather(columns, torch.where(nb >= 0, nb, pad_row))
                scores[:, start:stop] += _score(torch.bmm(x.transpose(1, 2), x), mods)
                del x
                done += stop - start
                if start // batch_size % 16 == 15 or stop == len(spheres):
                    yield Progress("searchlight", done, total, f"{stop}/{len(spheres)} centres")
            continue
        n_lines = len(plan.first)
        for batch, start in enumerate(range(0, n_lines, batch_size)):
            stop = min(start + batch_size, n_lines)
            first_np, length = plan.first[start:stop], plan.length[start:stop]     # longest lines first
            first = torch.as_tensor(first_np, device=dev)
            x = _gather(columns, lookup[first[:, None] + d_all])                       # (B, k, n + 1)
            gram = torch.bmm(x.transpose(1, 2), x)
            del x
            for t in range(int(length[0])):
                # lines are sorted by length, so the lines still going at step t are a prefix
                live = int(np.count_nonzero(length > t))
                centre = plan.centre_at[first_np[:live] + t]
                here = centre >= 0
                if here.all():
                    scores[:, centre] += _score(gram[:live], mods)
                elif here.any():
                    rows = torch.as_tensor(np.flatnonzero(here), device=dev)
                    scores[:, centre[here]] += _score(gram.index_select(0, rows), mods)
                done += int(here.sum())
                moving = int(np.count_nonzero(length > t + 1))
                if moving == 0:
                    break
                pos = first[:moving, None] + t
                lead = _gather(columns, lookup[pos + d_lead])
                trail = _gather(columns, lookup[pos + d_trail])
                part = gram[:moving]
                part.baddbmm_(lead.transpose(1, 2), lead)
                part.baddbmm_(trail.transpose(1, 2), trail, alpha=-1)
            if batch % 16 == 15 or stop == n_lines:
                yield Progress("searchlight", done, total, f"{done}/{total} centres")
    scores /= len(subsets)
    return SearchlightResult(spheres=spheres, models=names, scores=scores, method=method, n_subsets=len(subsets))
