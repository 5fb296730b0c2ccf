"""Pure statistics for detection, alerts and verdicts: numpy and scipy only, no I/O, no clocks.

Public surface (``from canary.stats import X``):

- sequential detection (:mod:`canary.stats.sequential`): :class:`BernoulliSPRT`, :class:`BernoulliCUSUM`,
  :func:`cusum_paths`, :func:`cusum_arl`, :func:`cusum_threshold_for_arl`, :func:`wald_asn`,
  :func:`always_valid_p_value`, :func:`mean_wait_for_event`;
- multiple testing (:mod:`canary.stats.multiple`): :func:`benjamini_hochberg`;
- rates (:mod:`canary.stats.rates`): :func:`rate_ci`, :func:`rate_difference_ci`, :func:`compare_rates`,
  :func:`peer_test`, :func:`minimum_detectable_effect`, :func:`minimum_sample_size`,
  :func:`sample_size_sufficient`;
- continuous values (:mod:`canary.stats.continuous`): :func:`compare_continuous`;
- patterns (:mod:`canary.stats.patterns`): :func:`change_point`, :func:`session_clustering`;
- anytime-valid canary-vs-baseline tests (:mod:`canary.stats.two_sample`): :func:`rate_evidence`,
  :func:`rate_power`, :func:`rate_mde`, :func:`rate_sample_size`, :func:`planning_rate`;
  (:mod:`canary.stats.anytime`) :func:`rate_difference_cs`, :func:`e_benjamini_hochberg`; for medians
  (:mod:`canary.stats.median_shift`): :func:`log_e_median_greater`, :func:`median_cs`,
  :func:`median_ratio_cs`.

Randomised procedures take ``rng: numpy.random.Generator``; nothing here reads a clock.
"""

from canary.stats.anytime import e_benjamini_hochberg, rate_difference_cs
from canary.stats.continuous import ContinuousComparison, compare_continuous
from canary.stats.median_shift import log_e_median_greater, median_cs, median_ratio_cs
from canary.stats.multiple import benjamini_hochberg
from canary.stats.patterns import SessionClustering, change_point, session_clustering
from canary.stats.rates import (
    RateComparison,
    compare_rates,
    minimum_detectable_effect,
    minimum_sample_size,
    peer_test,
    rate_ci,
    rate_difference_ci,
    sample_size_sufficient,
)
from canary.stats.sequential import (
    ASN,
    BernoulliCUSUM,
    BernoulliSPRT,
    CUSUMState,
    SPRTState,
    always_valid_p_value,
    cusum_arl,
    cusum_paths,
    cusum_threshold_for_arl,
    kl_bernoulli,
    llr_steps,
    mean_wait_for_event,
    wald_asn,
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
    "ASN",
    "BernoulliCUSUM",
    "BernoulliSPRT",
    "CUSUMState",
    "ContinuousComparison",
    "RateComparison",
    "RateEvidence",
    "SPRTState",
    "SessionClustering",
    "always_valid_p_value",
    "benjamini_hochberg",
    "change_point",
    "compare_continuous",
    "compare_rates",
    "cusum_arl",
    "cusum_paths",
    "cusum_threshold_for_arl",
    "e_benjamini_hochberg",
    "kl_bernoulli",
    "llr_steps",
    "log_e_median_greater",
    "mean_wait_for_event",
    "median_cs",
    "median_ratio_cs",
    "minimum_detectable_effect",
    "minimum_sample_size",
    "peer_test",
    "planning_rate",
    "rate_ci",
    "rate_difference_ci",
    "rate_difference_cs",
    "rate_evidence",
    "rate_mde",
    "rate_power",
    "rate_sample_size",
    "sample_size_sufficient",
    "session_clustering",
    "wald_asn",
]
