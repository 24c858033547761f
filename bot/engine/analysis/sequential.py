"""Sequential judge: anytime-valid tests on counters and latency histograms.

Why: a fixed-sample test repeated at every check raises false rollbacks far above its
level. E-processes (Netflix's sequential canary testing; Lindon & Malek, "Anytime-valid
inference for multinomial count data") stay valid however often we look.

Model. Within one check, given how many requests each arm served (share ``rho`` for the
canary) and how many "events" happened in total (errors, or requests slower than a
histogram boundary ``b``), the canary's count of events is Binomial(events, q) with
``q = rho θ / (rho θ + 1 - rho)``, θ the ratio of the per-request event rates. Under
"canary not worse" (θ <= 1) with real binomial traffic the conditional law is a (non)central
hypergeometric, which Hoeffding's convex ordering and monotone likelihood ratio make
no more favourable to the alternative than Binomial(events, rho): the likelihood ratio of
any θ > 1 against θ = 1 is a test supermartingale. Conditioning on each check's totals
makes the test immune to traffic swings, diurnal error-rate changes common to both arms,
and changes of the canary weight between steps. Rates only enter through the ratio.

E-values. We mix likelihood ratios over a fixed grid of 20 log-ratio alternatives
(0.01 … 6, geometric, equal weights: scale-free, θ from 1.01 to ~400; the state is 20 floats
per boundary). A discrete mixture keeps the martingale exact even when ``rho`` changes
between checks, which a conjugate Beta mixture on q would not.

* fail: e(θ<=1) >= 1/alpha. By Ville's inequality a canary that is not worse is rolled
  back with probability <= alpha, however many checks are made.
* final pass (stop early): a second e-process against "worse by at least the tolerated
  margin" (θ >= 1 + allowed_increase), alternatives below the margin, reaches 1/alpha:
  with anytime-valid confidence 1 - alpha the ratio is below 1 + allowed_increase.
  This needs many events (roughly 100+ canary errors for a 50 % margin), so it happens on
  busy services. Exact for rare events (Poisson regime), approximate when most requests
  exceed a boundary.
* pass (provisional): at least ``min_requests`` canary requests were judged and the fail
  e-value never reached 1/alpha. It means "no regression detected so far", not "proven
  fine": the engine promotes on it only when the analysis window ends.
* inconclusive: fewer than ``min_requests`` judged canary requests and no decision.

Latency. Each finite histogram boundary b gives a count test on "requests slower than b";
"canary latency not stochastically larger" is the intersection of θ_b <= 1 over all b, and
we fail on the average of the per-boundary e-processes (cost: a factor B). Given each
check's pooled histogram, the arm labels are a random split when the canary's latency has
the baseline's distribution, so every boundary's process is a supermartingale in one
filtration and the average is exactly valid; the same holds when the canary is faster in
likelihood-ratio order. Why not a Dirichlet-multinomial test on all buckets at once: it
tests "different", spends power on improvements, and needs the baseline's proportions,
which are estimated. The boundary tests are one-sided, need no distributional assumption,
and catch a median shift (boundaries near the median) as well as a tail-only regression
(boundaries near p99). Early pass requires the pass test at every boundary whose pooled
exceedance is within 1-99 %; pooled counts say nothing about the arm split, so choosing
boundaries by them does not bias the test.

Counters are cumulative since the canary started; each check uses the increase since the
last one (``SequentialState``). The first ``warmup_checks`` checks only anchor the counters
(cold caches are not held against the canary), a counter reset re-anchors without
evidence, and FAIL or a final PASS is sticky.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bot.engine.analysis.evidence import pp, size_and_pace
from bot.engine.analysis.model import (
    CODE_FAIL,
    CODE_FINAL_PASS,
    CODE_INCONCLUSIVE,
    CODE_PASS,
    JudgeKind,
    MetricResult,
    MetricSeries,
    MetricSpec,
    SequentialState,
    Unit,
    Verdict,
    fmt_evalue,
    fmt_value,
    histogram_quantile,
    verdict_of,
)

EFFECTS = 0.01 * 1.4 ** np.arange(20)  # log rate-ratio offsets of the alternatives
ACTIVE = (0.01, 0.99)  # pooled exceedance range of the boundaries an early pass must clear
Array = NDArray[np.float64]


def split_llr(alt: Array, null: float | Array, share: ArrayLike, canary_events: ArrayLike,
              baseline_events: ArrayLike) -> Array:
    """Log likelihood ratio of the canary's share of events under log-ratio ``alt`` (last
    axis) versus ``null``; zero where a check carries no information."""
    s = np.asarray(share, dtype=np.float64)[..., None]
    ec = np.asarray(canary_events, dtype=np.float64)[..., None]
    eb = np.asarray(baseline_events, dtype=np.float64)[..., None]
    ok = (s > 0) & (s < 1) & (ec + eb > 0)
    s = np.where(ok, s, 0.5)
    ls, l1s = np.log(s), np.log1p(-s)
    norm_alt = np.logaddexp(ls + alt, l1s)
    norm_null = np.logaddexp(ls + null, l1s)
    return np.where(ok, ec * (alt - null) - (ec + eb) * (norm_alt - norm_null), 0.0)


def evidence_step(fail_llr: Array, pass_llr: Array, canary_requests: ArrayLike,
                  canary_events: ArrayLike, baseline_requests: ArrayLike,
                  baseline_events: ArrayLike, allowed_increase: float) -> tuple[Array, Array]:
    """Add one check's increments. Shapes: llr (..., B, J), requests (...), events (..., B)."""
    cr = np.asarray(canary_requests, dtype=np.float64)
    br = np.asarray(baseline_requests, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(cr + br > 0, cr / (cr + br), 0.0)[..., None]
    margin = math.log1p(allowed_increase)
    effects = np.asarray(EFFECTS, dtype=np.float64)
    fail = np.add(fail_llr, split_llr(effects, 0.0, share, canary_events, baseline_events))
    ok = np.add(pass_llr, split_llr(np.subtract(margin, effects), margin, share,
                                    canary_events, baseline_events))
    return fail, ok


def log_mean_exp(x: Array, axis: int | tuple[int, ...] = -1) -> Array:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.mean(np.exp(x - m), axis=axis, keepdims=True)) + m
    squeezed: Array = np.squeeze(out, axis=axis)
    return squeezed


def log_evalues(fail_llr: Array, pass_llr: Array, active: NDArray[np.bool_]
                ) -> tuple[Array, Array]:
    """(log e fail, log e pass): fail mixes boundaries and alternatives; pass needs every
    active boundary (-inf when none is active)."""
    log_fail = log_mean_exp(fail_llr, axis=(-2, -1))
    per_bound = log_mean_exp(pass_llr, axis=-1)
    log_pass = np.min(np.where(active, per_bound, np.inf), axis=-1)
    log_pass = np.where(active.any(axis=-1), log_pass, -np.inf)
    return log_fail, log_pass


def decide(log_fail: ArrayLike, log_pass: ArrayLike, canary_seen: ArrayLike,
           spec: MetricSpec) -> NDArray[np.int8]:
    """Verdict codes from the evidence (vectorised; the engine and the benchmark share it)."""
    level = math.log(1 / spec.alpha)
    enough = np.asarray(canary_seen) >= spec.min_requests
    code = np.where(np.asarray(log_fail) >= level, CODE_FAIL,
                    np.where(enough & (np.asarray(log_pass) >= level), CODE_FINAL_PASS,
                             np.where(enough, CODE_PASS, CODE_INCONCLUSIVE)))
    return code.astype(np.int8)


def active_bounds(seen_canary: ArrayLike, seen_baseline: ArrayLike) -> NDArray[np.bool_]:
    """Boundaries whose pooled exceedance is in ACTIVE; seen = (..., 1 + B): total, slow_b."""
    c, b = np.asarray(seen_canary, float), np.asarray(seen_baseline, float)
    total = (c[..., :1] + b[..., :1])
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (c[..., 1:] + b[..., 1:]) / total
    active: NDArray[np.bool_] = (frac >= ACTIVE[0]) & (frac <= ACTIVE[1])
    return active


def _read(series: MetricSeries) -> tuple[str, tuple[float, ...], list[int], list[int]] | str:
    """(test, bounds, canary vector, baseline vector) or why the data cannot be used.
    counts: (requests, errors); latency: (requests, requests slower than each bound)."""
    if series.has_histograms:
        ch, bh = series.canary_histogram or {}, series.baseline_histogram or {}
        if sorted(ch) != sorted(bh):
            return "canary and baseline histograms have different buckets"
        bounds = tuple(sorted(le for le in ch if math.isfinite(le)))
        if not bounds:
            return "the histogram has no finite buckets"

        def vec(h: dict[float, int]) -> list[int]:
            total = h.get(math.inf, max(h.values()))
            return [total, *(total - h[le] for le in bounds)]

        return "latency", bounds, vec(ch), vec(bh)
    if series.has_counts:
        return ("counts", (), [series.canary_requests or 0, series.canary_errors or 0],
                [series.baseline_requests or 0, series.baseline_errors or 0])
    return "the sequential judge needs cumulative request/error counters or histograms"


def _fresh(test: str, bounds: tuple[float, ...], spec: MetricSpec) -> SequentialState:
    rows = max(len(bounds), 1)
    zeros = tuple(tuple(0.0 for _ in EFFECTS) for _ in range(rows))
    return SequentialState.model_validate({
        "test": test, "bounds": bounds, "allowed_increase": spec.allowed_increase,
        "fail_llr": zeros, "pass_llr": zeros})


def evaluate(spec: MetricSpec, series: MetricSeries | None,
             state: SequentialState | None = None) -> tuple[MetricResult, SequentialState]:
    """One check: fold the counters' increase into the e-processes and decide."""
    t = spec.title

    def result(text: str) -> MetricResult:
        return MetricResult(name=spec.name, judge=JudgeKind.SEQUENTIAL,
                            verdict=Verdict.INCONCLUSIVE, explanation=text,
                            critical=spec.is_critical, weight=spec.weight)

    if state is not None and state.decided is not None:  # sticky, even without data
        return _explain(spec, state, CODE_FAIL if state.decided is Verdict.FAIL
                        else CODE_FINAL_PASS), state
    if series is None:
        st = state or SequentialState()
        return result(f"{t}: no data from the metrics provider — inconclusive"), st
    read = _read(series)
    if isinstance(read, str):
        st = state or SequentialState()
        return result(f"{t}: {read} — inconclusive"), st
    test, bounds, cur_c, cur_b = read
    if (state is None or state.test != test or state.bounds != bounds
            or state.allowed_increase != spec.allowed_increase):
        state = _fresh(test, bounds, spec)

    last_c = list(state.last_canary) or [0] * len(cur_c)
    last_b = list(state.last_baseline) or [0] * len(cur_b)
    dc = np.subtract(cur_c, last_c)
    db = np.subtract(cur_b, last_b)
    anchored = state.model_copy(update={"last_canary": tuple(cur_c),
                                        "last_baseline": tuple(cur_b),
                                        "checks": state.checks + 1})
    if (dc < 0).any() or (db < 0).any():
        st = anchored.model_copy(update={"resets": state.resets + 1})
        return result(f"{t}: counters went backwards (restart?); re-anchored, this check "
                      "adds no evidence — inconclusive"), st
    if state.checks < spec.warmup_checks:
        return result(f"{t}: warming up, check {state.checks + 1} of {spec.warmup_checks} "
                      "ignored — inconclusive"), anchored

    fail, ok = evidence_step(np.array(state.fail_llr), np.array(state.pass_llr),
                             dc[0], dc[1:], db[0], db[1:], spec.allowed_increase)
    seen_c = np.add(state.seen_canary or [0] * len(cur_c), dc)
    seen_b = np.add(state.seen_baseline or [0] * len(cur_b), db)
    st = anchored.model_copy(update={
        "fail_llr": tuple(map(tuple, fail.tolist())), "pass_llr": tuple(map(tuple, ok.tolist())),
        "seen_canary": tuple(int(x) for x in seen_c),
        "seen_baseline": tuple(int(x) for x in seen_b)})
    lf, lp = log_evalues(fail, ok, _active(st))
    code = int(decide(lf, lp, st.seen_canary[0], spec))
    if code in (CODE_FAIL, CODE_FINAL_PASS):
        decided = Verdict.FAIL if code == CODE_FAIL else Verdict.PASS
        st = st.model_copy(update={"decided": decided})
    return _explain(spec, st, code), st


def _active(st: SequentialState) -> NDArray[np.bool_]:
    if st.test == "counts":
        return np.array([True])
    return active_bounds(st.seen_canary, st.seen_baseline)


def _explain(spec: MetricSpec, st: SequentialState, code: int) -> MetricResult:
    """Numbers an on-call can check: rates, counts, the e-values and the bar they face."""
    t, u, level = spec.title, spec.unit, 1 / spec.alpha
    fail, ok = np.array(st.fail_llr), np.array(st.pass_llr)
    lf, lp = log_evalues(fail, ok, _active(st))
    e_fail, e_pass = math.exp(min(float(lf), 700.0)), math.exp(min(float(lp), 700.0))
    sc, sb = st.seen_canary, st.seen_baseline  # set by every check that reaches a verdict
    # the verdict compares log e with log(1/alpha); the rounded e-value may land either side
    bar = f"e={fmt_evalue(e_fail)} {'≥' if code == CODE_FAIL else '<'} {level:g}"
    margin = f"{1 + spec.allowed_increase:g}×"

    def rate(events: int, total: int) -> float | None:
        return events / total if total else None

    def times(a: float | None, b: float | None) -> str:
        return f"{a / b:.2g}× baseline; " if a is not None and b else ""

    if st.test == "latency":
        cum_c = [sc[0] - s for s in sc[1:]] + [sc[0]]
        cum_b = [sb[0] - s for s in sb[1:]] + [sb[0]]

        def q(p: float, cum: list[int]) -> float | None:
            return float(histogram_quantile(p, st.bounds, cum)) if cum[-1] else None

        cv, bv = q(0.99, cum_c), q(0.99, cum_b)
        head = (f"{t} p50 {fmt_value(q(0.5, cum_c), u)} vs {fmt_value(q(0.5, cum_b), u)}, "
                f"p99 {fmt_value(cv, u)} vs {fmt_value(bv, u)}")
        k = int(np.argmax(log_mean_exp(fail, axis=-1)))  # the most incriminating boundary
        rc, rb = rate(sc[k + 1], sc[0]), rate(sb[k + 1], sb[0])
        what = f"{sc[0]:,} canary vs {sb[0]:,} baseline requests"
        worse = (f"canary latency is stochastically larger ({fmt_value(rc, Unit.RATIO)} of "
                 f"canary requests slower than {fmt_value(st.bounds[k], Unit.SECONDS)} vs "
                 f"{fmt_value(rb, Unit.RATIO)} of baseline; {times(rc, rb)}")
    else:
        cv, bv = rate(sc[1], sc[0]), rate(sb[1], sb[0])
        head = f"{t} {fmt_value(cv, u)} vs {fmt_value(bv, u)}"
        what = (f"{_n(sc[1], 'error')} in {sc[0]:,} canary requests vs {sb[1]:,} in "
                f"{sb[0]:,} baseline")
        worse = f"canary error rate is higher ({what}; {times(cv, bv)}"
    size, needed, detect = size_and_pace(st, spec.alpha, spec.min_requests)
    if size is not None:  # the size of the shift, pooled over the steps so far
        d, lo, hi = size
        head += f" ({pp(d)} pp, 95% CI [{pp(lo)}, {pp(hi)}])"
    if code == CODE_FAIL:
        text = (f"{head} — fails: {worse}{bar}, anytime-valid at α={spec.alpha:g}) — safe "
                "to roll back now")
    elif code == CODE_FINAL_PASS:
        text = (f"{head} — passes (final): with {1 - spec.alpha:.0%} anytime-valid "
                f"confidence the canary is less than {margin} worse ({what}; e_pass="
                f"{fmt_evalue(e_pass)} ≥ {level:g}) — safe to promote now")
    elif code == CODE_PASS:
        text = (f"{head} — passes: no regression detected so far ({what}; {bar}); promote "
                "when the analysis window ends")
    elif sc[0] == 0:
        text = f"{t}: no canary traffic yet — inconclusive"
    else:
        pace = f"; a 5× rise would show by ~{detect:,} canary requests" if detect else ""
        text = (f"{head} — inconclusive: {sc[0]:,} of {spec.min_requests:,} canary "
                f"requests needed before a pass ({what}; {bar}{pace})")
    verdict, final = verdict_of(code)
    return MetricResult(
        name=spec.name, judge=JudgeKind.SEQUENTIAL, verdict=verdict, explanation=text,
        canary_value=cv, baseline_value=bv, critical=spec.is_critical, weight=spec.weight,
        final=final, e_value=e_fail, e_value_pass=e_pass,
        shift=size[0] if size else None, ci=(size[1], size[2]) if size else None,
        requests_needed=needed if code == CODE_INCONCLUSIVE else None,
        detect_requests=detect)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
