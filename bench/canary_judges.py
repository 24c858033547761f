"""Benchmark the canary judges on simulated canaries (run by hand; not a test).

    .venv/bin/python bench/canary_judges.py [--seeds 500] [--check-seeds 3] [--plan]

``--plan`` adds the engine's query path over the whole step plan (bench/canary_plan.py).

Each scenario (bench/canary_sim.py) is a fixed 10-minute analysis checked every 10 s.
Every judge sees every check; the canary is rolled back at its first FAIL and promoted
early on a final PASS; otherwise the last verdict stands when the window ends (a
non-final pass would promote, inconclusive would pause for a human = "undecided").

Judges, each on an error-rate metric and a latency metric (latency data of the first
minute is ignored by all three, like Argo's ``initialDelay``):

* threshold (Argo-like): error rate over the last minute <= baseline + 0.5 pp OR <= 1 %;
  p99 over the last minute <= 1.2x baseline; failureLimit 3, consecutiveErrorLimit 4.
* threshold-fl0: the same with Argo's default failureLimit 0 (for contrast).
* mann-whitney (Kayenta): per-interval error rates and p99s since the start, 98 %
  confidence, 10 % allowed increase, equal weights, score bands 95 / 75.
* sequential: count test on the error counters, histogram test on latency, alpha 0.01
  per metric, 1000 canary requests before a pass.

The judges run vectorised over seeds through the same kernels ``judge()`` uses
(threshold.measure/step, mann_whitney.classify, sequential.evidence_step/decide), and
the first ``--check-seeds`` seeds of every scenario are replayed through ``judge()``
itself with real MetricSeries to prove the two paths agree check by check.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from canary_sim import (
    BOUNDS,
    DURATION,
    INTERVAL,
    SCENARIOS,
    WARMUP,
    Scenario,
    Traffic,
    simulate,
)

from bot.engine.analysis import (
    AnalysisState,
    MetricSeries,
    MetricSpec,
    judge,
    mann_whitney,
    sequential,
    threshold,
)
from bot.engine.analysis.model import (
    CODE_FAIL,
    CODE_FINAL_PASS,
    CODE_INCONCLUSIVE,
    CODE_PASS,
    Verdict,
    histogram_quantile,
)

Codes = NDArray[np.int8]
WINDOW = 6  # threshold queries look at the last minute (six intervals)
WARM = int(WARMUP / INTERVAL)

SPECS: dict[str, list[MetricSpec]] = {
    "threshold": [
        MetricSpec(name="errors", label="error rate", unit="ratio", judge="threshold",
                   max=0.01, max_increase=0.005, combine="any", failure_limit=3),
        MetricSpec(name="latency", label="p99 latency", unit="seconds", judge="threshold",
                   max_relative=1.2, failure_limit=3),
    ],
    "threshold-fl0": [  # Argo's default failureLimit 0: one failed measurement fails
        MetricSpec(name="errors", label="error rate", unit="ratio", judge="threshold",
                   max=0.01, max_increase=0.005, combine="any"),
        MetricSpec(name="latency", label="p99 latency", unit="seconds", judge="threshold",
                   max_relative=1.2),
    ],
    "mann-whitney": [
        MetricSpec(name="errors", label="error rate", unit="ratio", judge="mann-whitney"),
        MetricSpec(name="latency", label="p99 latency", unit="seconds",
                   judge="mann-whitney"),
    ],
    "sequential": [
        MetricSpec(name="errors", label="error rate", unit="ratio", judge="sequential"),
        MetricSpec(name="latency", label="latency", unit="seconds", judge="sequential",
                   warmup_checks=WARM),
    ],
}


def combine(codes: list[Codes]) -> Codes:
    """``aggregate`` for two equally weighted metrics that are both critical (threshold,
    sequential) or both scored (Mann-Whitney: one failure gives 50 < 75): any fail fails,
    all final passes promote now, all passes pass, anything else is inconclusive."""
    c = np.stack(codes)
    return np.where((c == CODE_FAIL).any(0), CODE_FAIL,
                    np.where((c == CODE_FINAL_PASS).all(0), CODE_FINAL_PASS,
                             np.where((c >= CODE_PASS).all(0), CODE_PASS,
                                      CODE_INCONCLUSIVE))).astype(np.int8)


def window_sum(x: NDArray[np.int64], i: int, start: int = 0) -> NDArray[np.int64]:
    """Sum over the threshold query window ending at interval i (inclusive)."""
    return x[:, max(start, i - WINDOW + 1): i + 1].sum(axis=1)


def p99(buckets: NDArray[np.int64]) -> NDArray[np.float64]:
    return histogram_quantile(0.99, BOUNDS, np.cumsum(buckets, axis=-1))


def rate(errors: NDArray[np.int64], requests: NDArray[np.int64]) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(requests > 0, errors / np.maximum(requests, 1), np.nan)


def run_threshold(tr: Traffic, name: str = "threshold") -> Codes:
    err, lat = SPECS[name]
    s = tr.canary_requests.shape[0]
    state = {m: [np.zeros(s, np.int64)] * 3 for m in ("errors", "latency")}
    out = []
    for i in range(tr.canary_requests.shape[1]):
        c = rate(window_sum(tr.canary_errors, i), window_sum(tr.canary_requests, i))
        b = rate(window_sum(tr.baseline_errors, i), window_sum(tr.baseline_requests, i))
        *state["errors"], code_e = threshold.step(*state["errors"],
                                                  threshold.measure(c, b, err), err)
        codes = [code_e]
        if i >= WARM:
            c = p99(window_sum(tr.canary_buckets, i, WARM))
            b = p99(window_sum(tr.baseline_buckets, i, WARM))
            *state["latency"], code_l = threshold.step(*state["latency"],
                                                       threshold.measure(c, b, lat), lat)
            codes.append(code_l)
        out.append(combine(codes))
    return np.stack(out, axis=1)


def run_mann_whitney(tr: Traffic) -> Codes:
    err, lat = SPECS["mann-whitney"]
    ce = rate(tr.canary_errors, tr.canary_requests)
    be = rate(tr.baseline_errors, tr.baseline_requests)
    cl, bl = p99(tr.canary_buckets), p99(tr.baseline_buckets)
    out = []
    for i in range(tr.canary_requests.shape[1]):
        code_e, _, _ = mann_whitney.classify(ce[:, : i + 1], be[:, : i + 1], err)
        code_l, _, _ = mann_whitney.classify(cl[:, WARM: i + 1], bl[:, WARM: i + 1], lat)
        out.append(combine([code_e, code_l]))
    return np.stack(out, axis=1)


def run_sequential(tr: Traffic) -> Codes:
    err, lat = SPECS["sequential"]
    s, n_t = tr.canary_requests.shape
    j, nb = sequential.EFFECTS.size, BOUNDS.size
    e_fail = e_pass = np.zeros((s, 1, j))
    l_fail = l_pass = np.zeros((s, nb, j))
    seen_e = np.zeros(s)
    seen_lc, seen_lb = np.zeros((s, nb + 1)), np.zeros((s, nb + 1))
    sticky_e = sticky_l = np.zeros(s, np.int8)
    # requests slower than each bound, per interval: (S, T, B)
    slow_c = tr.canary_buckets[..., ::-1].cumsum(-1)[..., ::-1][..., 1:]
    slow_b = tr.baseline_buckets[..., ::-1].cumsum(-1)[..., ::-1][..., 1:]
    out = []
    for i in range(n_t):
        cr, br = tr.canary_requests[:, i], tr.baseline_requests[:, i]
        e_fail, e_pass = sequential.evidence_step(
            e_fail, e_pass, cr, tr.canary_errors[:, i, None], br,
            tr.baseline_errors[:, i, None], err.allowed_increase)
        seen_e = seen_e + cr
        lf, lp = sequential.log_evalues(e_fail, e_pass, np.ones((s, 1), bool))
        code_e = sequential.decide(lf, lp, seen_e, err)
        if i >= lat.warmup_checks:
            l_fail, l_pass = sequential.evidence_step(
                l_fail, l_pass, cr, slow_c[:, i], br, slow_b[:, i], lat.allowed_increase)
            seen_lc += np.concatenate([cr[:, None], slow_c[:, i]], axis=1)
            seen_lb += np.concatenate([br[:, None], slow_b[:, i]], axis=1)
        active = sequential.active_bounds(seen_lc, seen_lb)
        lf, lp = sequential.log_evalues(l_fail, l_pass, active)
        code_l = sequential.decide(lf, lp, seen_lc[:, 0], lat)
        # FAIL and a final PASS are sticky, as in SequentialState.decided
        code_e = np.where(sticky_e > 0, sticky_e, code_e).astype(np.int8)
        code_l = np.where(sticky_l > 0, sticky_l, code_l).astype(np.int8)
        sticky_e = np.where(code_e >= CODE_FINAL_PASS, code_e, 0).astype(np.int8)
        sticky_l = np.where(code_l >= CODE_FINAL_PASS, code_l, 0).astype(np.int8)
        out.append(combine([code_e, code_l]))
    return np.stack(out, axis=1)


RUNNERS = {"threshold": run_threshold,
           "threshold-fl0": lambda tr: run_threshold(tr, "threshold-fl0"),
           "mann-whitney": run_mann_whitney, "sequential": run_sequential}


def _hist(buckets: NDArray[np.int64]) -> dict[float, int]:
    cum = np.cumsum(buckets)
    return {**{float(b): int(c) for b, c in zip(BOUNDS, cum[:-1], strict=True)},
            math.inf: int(cum[-1])}


def _opt(xs: NDArray[np.float64]) -> list[float | None]:
    return [None if not math.isfinite(x) else float(x) for x in xs]


def replay(name: str, tr: Traffic, row: int) -> list[int]:
    """One seed through ``judge()`` with MetricSeries built the way the engine would."""
    specs, state = SPECS[name], AnalysisState()
    tr1 = Traffic(*(getattr(tr, f)[row: row + 1] for f in Traffic.__dataclass_fields__))
    codes = []
    for i in range(tr.canary_requests.shape[1]):
        series: dict[str, MetricSeries | None] = {}
        active = specs
        if name.startswith("threshold"):
            c = rate(window_sum(tr1.canary_errors, i), window_sum(tr1.canary_requests, i))
            b = rate(window_sum(tr1.baseline_errors, i), window_sum(tr1.baseline_requests, i))
            series["errors"] = MetricSeries(name="errors", canary=_opt(c), baseline=_opt(b))
            if i < WARM:
                active = specs[:1]  # the latency query's initialDelay has not passed
            else:
                c = p99(window_sum(tr1.canary_buckets, i, WARM))
                b = p99(window_sum(tr1.baseline_buckets, i, WARM))
                series["latency"] = MetricSeries(name="latency", canary=_opt(c),
                                                 baseline=_opt(b))
        elif name == "mann-whitney":
            ce = rate(tr1.canary_errors, tr1.canary_requests)[0, : i + 1]
            be = rate(tr1.baseline_errors, tr1.baseline_requests)[0, : i + 1]
            series["errors"] = MetricSeries(name="errors", canary=_opt(ce), baseline=_opt(be))
            cl = p99(tr1.canary_buckets)[0, WARM: i + 1]
            bl = p99(tr1.baseline_buckets)[0, WARM: i + 1]
            series["latency"] = MetricSeries(name="latency", canary=_opt(cl), baseline=_opt(bl))
        else:
            cum = {f: int(getattr(tr1, f)[0, : i + 1].sum()) for f in (
                "canary_requests", "canary_errors", "baseline_requests", "baseline_errors")}
            series["errors"] = MetricSeries(name="errors", **cum)
            series["latency"] = MetricSeries(
                name="latency", canary_histogram=_hist(tr1.canary_buckets[0, : i + 1].sum(0)),
                baseline_histogram=_hist(tr1.baseline_buckets[0, : i + 1].sum(0)))
        j, state = judge(active, series, state)
        codes.append(CODE_FAIL if j.verdict is Verdict.FAIL else
                     (CODE_FINAL_PASS if j.final else CODE_PASS) if j.verdict is Verdict.PASS
                     else CODE_INCONCLUSIVE)
    return codes


@dataclass
class Row:
    scenario: Scenario
    judge: str
    rolled_back: float
    undecided: float
    early_promote: float
    ttd_median: float
    ttd_p90: float
    bad_requests: float


def summarise(sc: Scenario, name: str, tr: Traffic, codes: Codes) -> Row:
    s, n_t = codes.shape
    t = INTERVAL * np.arange(1, n_t + 1)
    fail = codes == CODE_FAIL
    promote = codes == CODE_FINAL_PASS
    first_fail = np.where(fail.any(1), fail.argmax(1), n_t)
    first_promote = np.where(promote.any(1), promote.argmax(1), n_t)
    rolled = first_fail < first_promote
    early = first_promote < first_fail
    undecided = ~rolled & ~early & (codes[:, -1] == CODE_INCONCLUSIVE)
    harm = np.cumsum(tr.harm, axis=1)  # a promoted or undecided regression hurts all window
    bad = np.where(rolled, harm[np.arange(s), np.minimum(first_fail, n_t - 1)], harm[:, -1])
    ttd = t[first_fail[rolled]] if rolled.any() else np.array([np.nan])
    return Row(sc, name, rolled.mean(), undecided.mean(), early.mean(),
               float(np.median(ttd)), float(np.percentile(ttd, 90)), float(bad.mean()))


def fmt_s(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.0f}s"


def print_tables(rows: list[Row]) -> None:
    print("\nHealthy canaries (any rollback is a false rollback)")
    print(f"{'scenario':38} {'judge':13} {'false rollback':>14} {'undecided':>10} "
          f"{'early promote':>13}")
    for r in rows:
        if r.scenario.healthy:
            print(f"{r.scenario.name:38} {r.judge:13} {r.rolled_back:>14.1%} "
                  f"{r.undecided:>10.1%} {r.early_promote:>13.1%}")
    print("\nRegressions (time to detect among detected; bad = canary requests hurt before "
          "the decision, or in the whole window if missed)")
    print(f"{'scenario':38} {'judge':13} {'missed':>7} {'TTD p50':>8} {'TTD p90':>8} "
          f"{'bad reqs':>9}")
    for r in rows:
        if not r.scenario.healthy:
            print(f"{r.scenario.name:38} {r.judge:13} {1 - r.rolled_back:>7.1%} "
                  f"{fmt_s(r.ttd_median):>8} {fmt_s(r.ttd_p90):>8} {r.bad_requests:>9.1f}")


def goal(rows: list[Row]) -> bool:
    seq_healthy = [r for r in rows if r.judge == "sequential" and r.scenario.healthy]
    worst = max(r.rolled_back for r in seq_healthy)
    big = {r.judge: r for r in rows if r.scenario.name == "errors 0.1% -> 5%"}
    seq, thr = big["sequential"].ttd_median, big["threshold"].ttd_median
    ok = worst <= 0.01 and seq <= thr / 3 and big["sequential"].rolled_back >= 0.99
    print(f"\nGoal: sequential false rollbacks <= 1% on every healthy scenario (worst "
          f"{worst:.1%}) and detects 0.1% -> 5% in <= 1/3 of the threshold judge's time "
          f"(median {fmt_s(seq)} vs {fmt_s(thr)}, ratio {seq / thr:.2f}, detected "
          f"{big['sequential'].rolled_back:.1%}): {'MET' if ok else 'NOT MET'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=500)
    ap.add_argument("--check-seeds", type=int, default=3,
                    help="seeds per scenario replayed through judge() as a cross-check")
    ap.add_argument("--only", default="", help="run scenarios whose name contains this")
    ap.add_argument("--plan", action="store_true",
                    help="also run the engine's query path over the whole step plan")
    ap.add_argument("--plan-seeds", type=int, default=200)
    args = ap.parse_args()
    start = time.perf_counter()
    rows: list[Row] = []
    mismatches = 0
    print(f"{args.seeds} seeds per scenario, {DURATION / 60:.0f} min analysis, a check "
          f"every {INTERVAL:.0f} s, canary weight 5-25 %")
    for k, sc in enumerate(SCENARIOS):
        if args.only not in sc.name:
            continue
        tr = simulate(sc, args.seeds, seed=1000 + k)
        for name, run in RUNNERS.items():
            codes = run(tr)
            rows.append(summarise(sc, name, tr, codes))
            for row in range(min(args.check_seeds, args.seeds)):
                if replay(name, tr, row) != codes[row].tolist():
                    mismatches += 1
                    print(f"MISMATCH {sc.name} / {name} / seed row {row}")
        print(f"  simulated and judged: {sc.name} ({time.perf_counter() - start:.0f}s)",
              file=sys.stderr)
    print_tables(rows)
    if args.check_seeds:
        print(f"\nCross-check against judge(): {mismatches} mismatching replays")
    met = goal(rows) if not args.only else True
    if args.plan:
        from canary_plan import print_plan, run_plan

        print_plan(run_plan(args.plan_seeds, args.only), args.plan_seeds)
    print(f"({time.perf_counter() - start:.0f}s)")
    return 0 if met and not mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
