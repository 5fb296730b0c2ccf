"""The verdict's equivalence metric: the canary cells' forced log-likelihoods against the baseline's (pure).

With scheduled equivalence probes (:mod:`canary.probing.equivalence_runs`), each cell's forced
runs in the deploy's window give per-token log-probabilities per probe version. The canary side
is the mean over its cells; it is compared with the baseline cells on the same tokens by the test
``canary compare`` and detection use (:func:`canary.stats.audit.compare_forced`: the deviation
from the baseline cells' median against a tolerance set by their own spread).

The construction is explicitly budgeted, not anytime-valid: the metric takes ``1 / (m + 1)`` of
``alpha`` (``m`` the verdict's other deciding metrics, which keep the rest for e-BH), spread by
Bonferroni over ``equivalence_looks`` looks of the deploy. So over up to that many looks, a
canary serving the same model FAILs on it with probability at most its share, and the verdict's
false-FAIL rate stays at most ``alpha``. PASS when the interval's upper bound is below the
tolerance (equivalent), FAIL when the deviation exceeds it at the look's level, else INCONCLUSIVE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from canary.config.sections import VerdictPolicy
from canary.stats.audit import Forced, compare_forced
from canary.verdicts.judgement import MetricResult

METRIC = "equivalence.forced"


def pooled(cells: Sequence[Forced]) -> dict[tuple[str, int], list[float]]:
    """The per-token mean over ``cells`` of every (probe, version) they all scored with one token count."""
    cells = [c for c in cells if c]
    if not cells:
        return {}
    out = {}
    for key, first in cells[0].items():
        rows = [c[key] for c in cells if key in c and len(c[key]) == len(first)]
        if len(rows) == len(cells):
            out[key] = [sum(values) / len(values) for values in zip(*rows, strict=True)]
    return out


def forced_level(policy: VerdictPolicy, other_metrics: int) -> float:
    """The level of one look: the metric's share of ``alpha`` over ``equivalence_looks`` looks."""
    return policy.alpha / (other_metrics + 1) / policy.equivalence_looks


def forced_result(
    canary: Sequence[Forced], baseline: Mapping[str, Forced], policy: VerdictPolicy, other_metrics: int
) -> MetricResult | None:
    """The metric's judgement, or None when neither side has forced runs (no equivalence probing)."""
    mine = pooled(canary)
    theirs = [f for f in baseline.values() if f]
    if not mine and not theirs:
        return None
    level = forced_level(policy, other_metrics)
    c = compare_forced(mine, theirs, level)
    critical, muted = METRIC in policy.critical_metrics, METRIC in policy.muted_metrics
    r = MetricResult(METRIC, "equivalence", "INCONCLUSIVE", "", critical, muted, c.n, len(theirs))
    r.effect, r.ci_low, r.ci_high, r.p_value = c.effect, c.ci_low, c.ci_high, c.p_value
    r.method = f"{c.statistic}: paired t-test vs tolerance, Bonferroni over {policy.equivalence_looks} looks"
    r.e_threshold = 1.0 / level
    what = f"{c.effect:.4g} nats/token [CI {c.ci_low:.4g}, {c.ci_high:.4g}] vs tolerance {c.tolerance:.4g}"
    if c.verdict == "different":
        r.outcome = "FAIL"
        r.reason = f"canary not the baseline's model: {what}, {c.n} tokens (p={c.p_value:.2g})"
    elif c.verdict == "equivalent":
        r.outcome, r.reason = "PASS", f"equivalent to the baseline: {what}, {c.n} tokens"
    else:
        r.reason = "not enough forced evidence on both sides" if not c.n else f"not yet shown: {what}"
    return r
