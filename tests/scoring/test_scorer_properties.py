"""Property tests: no scorer raises on arbitrary text or token streams, and detail stays storable."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary.probing.catalog import Probe, load_catalog
from canary.probing.completion import Completion, TokenLogprob
from canary.scoring import SCORERS, Score, ScoringContext, score_completion

CATALOG = load_catalog()
# One probe per distinct scorer configuration: every grader, language and script set.
PROBES = list(
    {
        (
            p.spec.scorers,
            p.spec.code_language,
            p.spec.code_extract,
            p.spec.allowed_scripts,
            p.spec.answer.kind if p.spec.answer else None,
            p.spec.temperature,
        ): p
        for p in CATALOG.probes
    }.values()
)
FRAGMENTS = [
    "```python\n",
    "```sql\n",
    "```js\n",
    "```bash\n",
    "```\n",
    "~~~json\n",
    "\n```\n",
    "{",
    "}",
    "[",
    '"',
    "(",
    "def f(:",
    "SELECT",
    "fi",
    "สวัสดี",
    "漢字",
    "\x00",
    "\ud800",
    "1,234",
    "B)",
    "é\u0301",
]
TEXT = st.one_of(st.text(), st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8))).map("".join))
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
TOKENS = st.lists(
    st.builds(
        TokenLogprob,
        st.text(max_size=6),
        FLOATS,
        st.lists(st.tuples(st.text(max_size=6), FLOATS), max_size=5).map(tuple),
    ),
    max_size=30,
)
RELAXED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_storable(scores: list[Score]) -> None:
    for score in scores:
        assert score.metric in SCORERS
        assert isinstance(score.passed, bool)
        assert score.value is None or math.isfinite(score.value)
        encoded = json.dumps(score.detail, allow_nan=False, ensure_ascii=False)
        encoded.encode("utf-8")  # lone surrogates would raise here; JSONB rejects them
        assert "\\u0000" not in encoded


@RELAXED
@given(text=TEXT, probe=st.sampled_from(PROBES), reference=st.one_of(st.none(), TEXT))
def test_no_scorer_raises_on_arbitrary_text(text: str, probe: Probe, reference: str | None) -> None:
    scores = score_completion(probe, Completion(ok=True, text=text), ScoringContext(reference_text=reference))
    assert_storable(scores)


@RELAXED
@given(tokens=TOKENS, temperature=st.sampled_from([0.0, 0.7]), top_p=st.sampled_from([None, 0.9, 0.99]))
def test_argmax_conformance_never_raises_on_arbitrary_logprobs(
    tokens: list[TokenLogprob], temperature: float, top_p: float | None
) -> None:
    probe = CATALOG.by_id("det-count-to-twenty")
    spec = probe.spec.model_copy(update={"temperature": temperature, "top_p": top_p})
    probe = Probe.from_spec(spec, probe.probe_set)
    text = "".join(t.token for t in tokens)
    completion = Completion(ok=True, text=text, tokens=tokens)
    assert_storable(SCORERS["argmax_conformance"].score(probe, completion, ScoringContext()))
    assert_storable(
        SCORERS["determinism"].score(probe, completion, ScoringContext(reference_text="x" + text))
    )
