"""Pure statistics for detection, alerts and verdicts: numpy and scipy only, no I/O, no clocks.

Public surface (``from canary.stats import X``):

- sequential detection (:mod:`canary.stats.edetector`): :func:`run_detector` (the mixture
  Shiryaev-Roberts e-detector), :func:`threshold_for_budget`, :func:`log_likelihood_ratios`,
  :func:`kl_bernoulli`;
- rates (:mod:`canary.stats.rates`): :func:`rate_ci`, :func:`rate_difference_ci`,
  :func:`cmh_test`, :func:`minimum_detectable_effect`;
- patterns (:mod:`canary.stats.patterns`): :func:`session_clustering`;
- anytime-valid canary-vs-baseline tests (:mod:`canary.stats.two_sample`): :func:`rate_evidence`,
  :func:`rate_power`, :func:`rate_mde`, :func:`rate_sample_size`, :func:`planning_rate`;
  (:mod:`canary.stats.anytime`) :func:`rate_difference_cs`, :func:`e_benjamini_hochberg`; for medians
  (:mod:`canary.stats.median_shift`): :func:`log_e_median_greater`, :func:`median_cs`,
  :func:`median_ratio_cs`; stochastic order, tail-sensitive (:mod:`canary.stats.stochastic_order`):
  :func:`order_evidence`, :func:`order_path`, :func:`dominance_power`, :func:`dominance_mde`,
  :func:`dominance_sample_size`.

Randomised procedures take ``rng: numpy.random.Generator``; nothing here reads a clock.
"""

from canary.stats.anytime import e_benjamini_hochberg, rate_difference_cs
from canary.stats.edetector import (
    DetectorRun,
    kl_bernoulli,
    log_likelihood_ratios,
    run_detector,
    threshold_for_budget,
)
from canary.stats.median_shift import log_e_median_greater, median_cs, median_ratio_cs
from canary.stats.patterns import SessionClustering, session_clustering
from canary.stats.rates import (
    CMHResult,
    cmh_test,
    minimum_detectable_effect,
    rate_ci,
    rate_difference_ci,
)
from canary.stats.stochastic_order import (
    OrderEvidence,
    dominance_mde,
    dominance_power,
    dominance_sample_size,
    order_evidence,
    order_path,
)
from canary.stats.two_sample import (
    RateEvidence,
    planning_rate,
    rate_evidence,
    rate_mde,
    rate_power,
    rate_sample_size,
)

__all__ = [
    "CMHResult",
    "DetectorRun",
    "OrderEvidence",
    "RateEvidence",
    "SessionClustering",
    "cmh_test",
    "dominance_mde",
    "dominance_power",
    "dominance_sample_size",
    "e_benjamini_hochberg",
    "kl_bernoulli",
    "log_e_median_greater",
    "log_likelihood_ratios",
    "median_cs",
    "median_ratio_cs",
    "minimum_detectable_effect",
    "order_evidence",
    "order_path",
    "planning_rate",
    "rate_ci",
    "rate_difference_ci",
    "rate_difference_cs",
    "rate_evidence",
    "rate_mde",
    "rate_power",
    "rate_sample_size",
    "run_detector",
    "session_clustering",
    "threshold_for_budget",
]
