"""Which streams the self test could alarm on this round: the detector over every stream at once.

Pure. A detection round over 1,000 cells evaluates about 4,000 streams; most never come near
their threshold, and per stream the work is a few dozen small numpy and scipy calls, so Python's
overhead dominates. :func:`may_alarm` computes lower bounds of the same null rates and an upper
bound of the same mixture Shiryaev-Roberts statistic as
:func:`canary.detection.sequential.evaluate`, for all streams in a few array operations, and
keeps those whose bound comes within :data:`MARGIN` of the threshold anywhere. Only those go
through the exact per-stream path. A stream that does not is one on which
:func:`~canary.detection.sequential.self_candidate` finds no alarm, hence ``None``: before its
first alarm the detector never restarts, so its statistic is the closed form over the whole
stream, which differs from the chunked one only by rounding, far below the margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from canary.config.sections import DetectionSpec
from canary.detection.decisions import Counts
from canary.detection.nulls import MAX_NULL_RATE, clip_rates, predictive_rate, window_cuts
from canary.detection.sequential import Stream
from canary.stats.edetector import DEFAULT_DELTAS, MAX_Q0

MARGIN = 1e-6  # nats: rounding between the batched and the per-stream statistic is ~1e-12
CELLS_PER_BATCH = 2_000_000  # streams x observations in one padded array (x deltas, 8 bytes each)


def _dense_unique(values: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``np.unique(values, return_inverse=True)`` of non-negative integers, by counting, not sorting
    (probe row ids, and stream x stratum numbers: dense, and far fewer than the values)."""
    if values.size == 0 or values.min() < 0 or values.max() > 4 * values.size + 1_000_000:
        uniques, inverse = np.unique(values, return_inverse=True)
        return uniques, inverse.ravel()
    present = np.bincount(values) > 0
    return np.flatnonzero(present), (np.cumsum(present) - 1)[values]


def _null_rate_bounds(
    streams: Sequence[Stream], spec: DetectionSpec
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Every observation's ``q0`` lower bound and usability, concatenated, and the streams' sizes.

    Usability is :func:`~canary.detection.nulls.null_rates_of`'s exactly: per (stream,
    stratum), the baseline plus the observations at least ``window_s`` older. A stream is ordered
    by time, so those are its stratum's observations among the first ``j`` of the stream, ``j``
    from one search of the stream's times; counting them is one search of (stratum, position)
    keys. ``q0`` freezes at an excursion's start, which only the per-stream CUSUM knows, so the
    bound is the lowest predictive rate over every history the freeze could leave: each prefix
    of the stratum's observations from ``min_baseline_observations`` up to the window's cut (a
    running minimum per stratum). A lower ``q0`` only raises the likelihood ratio of a failure.
    """
    sizes = np.array([s.at.size for s in streams], dtype=np.int64)
    total = int(sizes.sum())
    offsets = np.r_[0, np.cumsum(sizes)[:-1]]
    stratum = np.concatenate([s.stratum for s in streams])
    failed = np.concatenate([s.failed for s in streams])
    owner = np.repeat(np.arange(len(streams)), sizes)
    # Positions below the cut-off, per stream: exact float comparisons, ties counted as older.
    cut = np.concatenate([window_cuts(s.at, spec.window_s) for s in streams]) + np.repeat(offsets, sizes)
    strata, rank = _dense_unique(stratum)
    groups, group = _dense_unique(owner * strata.size + rank)
    keys = group * (total + 1) + np.arange(total)  # sorted by group, then position
    # A stable sort by group alone is the sort by keys; 16-bit groups sort by radix.
    order = np.argsort(group.astype(np.uint16) if groups.size <= 1 << 16 else group, kind="stable")
    sorted_keys = keys[order]
    fail_cum = np.r_[0, np.cumsum(failed[order])]
    group_start = np.r_[0, np.cumsum(np.bincount(group, minlength=groups.size))[:-1]]
    below = np.searchsorted(sorted_keys, group * (total + 1) + cut)
    seen = below - group_start[group]
    owners, probes = groups // strata.size, strata[groups % strata.size]
    base = [streams[int(o)].baseline.get(int(p), Counts()) for o, p in zip(owners, probes, strict=True)]
    base_f = np.array([c.failures for c in base], dtype=np.float64)
    base_n = np.array([c.n for c in base], dtype=np.float64)
    prior_n = base_n[group] + seen
    loose = predictive_rate(base_f[group] + fail_cum[below] - fail_cum[group_start[group]], prior_n)
    usable = (prior_n >= spec.min_baseline_observations) & (loose < MAX_NULL_RATE)
    # The predictive rate after each prefix of k + 1 >= the floor of a group's observations, and
    # its running minimum per group (offsets keep groups apart: rates are at most 1).
    g_sorted = group[order]
    k = np.arange(total) - group_start[g_sorted] + 1
    floor = np.maximum(spec.min_baseline_observations - base_n, 0.0)
    after = predictive_rate(
        base_f[g_sorted] + fail_cum[1:] - fail_cum[group_start[g_sorted]], base_n[g_sorted] + k
    )
    after = np.where(k >= floor[g_sorted], after, 2.0)
    lift = 3.0 * (groups.size - 1 - g_sorted)
    running = np.minimum.accumulate(after + lift) - lift
    lowest = np.where(seen >= 1, running[np.maximum(below - 1, 0)], 2.0)
    lowest = np.minimum(
        lowest, np.where(floor[group] == 0, predictive_rate(base_f[group], base_n[group]), 2.0)
    )
    # Rounding of the offsets (~1e-11) stays far inside this relative slack.
    return clip_rates(lowest * (1.0 - 1e-7), spec), usable, sizes


def _peak_bounds(
    failed: Sequence[npt.NDArray[np.bool_]], q0: Sequence[npt.NDArray[np.float64]]
) -> npt.NDArray[np.float64]:
    """Per stream, an upper bound of ``ln((1/K) sum_k R_k)`` over it, from ``R_0 = 0`` without restarts.

    ``R_t = sum_{j<=t} exp(W_t - W_{j-1})`` is at most ``t`` times its largest term, and the
    average over alternatives at most their maximum: ``ln t + max_k (W_t - min_{m<t} W_m)``,
    Page's CUSUM plus ``ln t``: sums and minima, no logarithm of a sum per element.
    """
    peaks = np.full(len(failed), -np.inf)
    deltas = np.asarray(DEFAULT_DELTAS)[:, None, None]
    lengths = np.array([f.size for f in failed], dtype=np.int64)
    by_length = np.argsort(lengths, kind="stable")
    i = 0
    while i < by_length.size:
        # Streams of similar length share a padded array; the longest decides its width.
        j = i + 1
        while j < by_length.size and (j - i + 1) * int(lengths[by_length[j]]) <= CELLS_PER_BATCH:
            j += 1
        batch = by_length[i:j]
        width = max(int(lengths[batch[-1]]), 1)
        inside = np.arange(width)[None, :] < lengths[batch][:, None]
        x = np.zeros((batch.size, width), bool)
        q = np.full((batch.size, width), 0.5)
        if inside.any():
            x[inside] = np.concatenate([failed[b] for b in batch])
            q[inside] = np.concatenate([q0[b] for b in batch])
        q = np.clip(q, 1e-12, MAX_Q0)
        z = np.where(x[None], np.log1p(deltas * (1.0 - q) / q), np.log1p(-deltas))
        w = np.cumsum(z, axis=-1)
        earlier = np.concatenate([np.zeros((*w.shape[:-1], 1)), w[..., :-1]], axis=-1)
        lowest = np.minimum.accumulate(earlier, axis=-1)
        bound = np.log(np.arange(1, width + 1)) + (w - lowest).max(axis=0)
        peaks[batch] = np.where(inside, bound, -np.inf).max(axis=1)
        i = j
    return peaks


def may_alarm(
    streams: Sequence[Stream], spec: DetectionSpec, thresholds: Sequence[float]
) -> npt.NDArray[np.bool_]:
    """Per stream, whether the self test's detector may alarm on it at ``thresholds`` (``ln A``).

    ``False`` is certain: the exact path would find no alarm (or no usable observation) there.
    """
    if not streams:
        return np.zeros(0, bool)
    q0, usable, sizes = _null_rate_bounds(streams, spec)
    bounds = np.cumsum(sizes)[:-1]
    parts = zip(np.split(usable, bounds), np.split(q0, bounds), streams, strict=True)
    failed, rates = [], []
    for use, rate, s in parts:
        failed.append(s.failed[use])
        rates.append(rate[use])
    return _peak_bounds(failed, rates) >= np.asarray(thresholds) - MARGIN
