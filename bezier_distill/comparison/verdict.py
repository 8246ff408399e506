"""The verdict of a comparison: does Bezier distillation beat, tie with or lose to each other method?

For each number of network evaluations per sample (NFE), the best Bezier student at that NFE (by the
pair's primary metric, mean over seeds; any of its samplers with that NFE: one step, two steps along
the line, or two steps re-entered on its Bezier path with its guide map, 3 NFE) is compared with
every other method at the same NFE (its best sampler with that NFE: CAF's one step costs 2) by a
paired comparison over the seeds: every method
of a seed shares that seed's teacher, data and source points, so the per-seed differences
d_s = (Bezier - other), signed so that d > 0 means Bezier is better, remove the spread that the
seed's teacher puts into both. The difference is outside noise when |mean d| > t * sd(d) / sqrt(n)
with t the two-sided 95% Student quantile for n - 1 degrees of freedom; otherwise it is a tie.
Picking the best of several Bezier students first favours Bezier a little (a selection effect the
text states). Reads only a results.json mapping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# the primary metric of a pair, in order of preference (the first one the rows carry: the classifier FD for images,
# the exact log-density for mixtures, the fraction in the support for the checkerboard), and its direction
PRIMARY = ("frechet", "log_density", "in_support", "energy_distance")
# the second view of every pair whose primary metric is another: a distance between the whole distributions (a
# sampler can put its mass inside the support, or near the modes, in the wrong proportions)
SECONDARY = "energy_distance"
HIGHER_IS_BETTER = {"log_density", "in_support", "mode_coverage", "precision", "recall"}
# The mean log-density of the samples, E_q[log p] = -H(q) - KL(q || p), is largest for a sampler that collapses onto
# the modes' centres, above the target's own value (-H(p), the `target` row): the verdict judges instead its distance
# to the target sample's value on the same seed, |E_q[log p] - E_p[log p]| (lower is better), named metric + "_gap".
GAP_TO_TARGET = {"log_density"}
# two-sided 95% quantiles of Student's t for 1..10 degrees of freedom (more: the normal's 1.96)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
BEZIER_KINDS = ("bezier",)


@dataclass
class Verdict:
    """Bezier's best student against one other method at `nfe` network evaluations per sample, on `metric`."""

    nfe: int
    metric: str
    bezier: str                # the best Bezier student's method name
    other: str
    advantage: float           # mean over seeds of the signed difference (> 0: Bezier better)
    spread: float              # its standard deviation over seeds (n - 1)
    seeds: int
    outcome: str               # "beats", "ties with", "loses to"
    bezier_how: str = ""       # how each was sampled (describe(row) of its row)
    other_how: str = ""

    def sentence(self, label: str) -> str:
        evaluations = f"{self.nfe} evaluation{'s' if self.nfe > 1 else ''}"
        gap = f"{abs(self.advantage):.3g} ± {self.spread:.2g}"
        ours = f"{self.bezier} ({self.bezier_how})" if self.bezier_how else self.bezier
        theirs = f"{self.other} ({self.other_how})" if self.other_how else self.other
        head = f"{evaluations}: {ours} {self.outcome} {theirs} on {label}"
        if self.outcome == "ties with":
            return f"{head}: difference {gap}, within noise (paired over {self.seeds} seeds)"
        return f"{head} by {gap} (paired over {self.seeds} seeds)"


def primary_metric(results: dict) -> str | None:
    """The first metric of PRIMARY that the student rows carry."""
    carried = {m for r in results["rows"] for m in r["metrics"]}
    return next((m for m in PRIMARY if m in carried), None)


def paired_outcome(ours: list[float], theirs: list[float], higher_is_better: bool) -> tuple[float, float, str]:
    """(mean, sd, outcome) of the per-seed signed differences ours - theirs (> 0: ours better)."""
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (a - b) for a, b in zip(ours, theirs)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    if n < 2:
        return mean, sd, "ties with"  # one seed cannot tell a difference from noise
    bound = T95.get(n - 1, 1.96) * sd / math.sqrt(n)
    if abs(mean) <= bound:
        return mean, sd, "ties with"
    return mean, sd, "beats" if mean > 0 else "loses to"


def verdicts(results: dict, metric: str | None = None, describe=lambda row: "") -> list[Verdict]:
    """Every Verdict of a results.json mapping on `metric` (default: the primary one; GAP_TO_TARGET metrics as
    their gap to the target row), per NFE; describe(row) says how a compared row was sampled."""
    metric = metric or primary_metric(results)
    if metric is None:
        return []
    target = next((r for r in results["rows"] if r["model"] == "target" and metric in r["metrics"]), None)
    gap = metric in GAP_TO_TARGET and target is not None
    higher = metric in HIGHER_IS_BETTER and not gap
    pick = max if higher else min

    def values(row: dict) -> list[float]:
        found = row["metrics"][metric]["values"]
        return [abs(v - ref) for v, ref in zip(found, target["metrics"][metric]["values"])] if gap else found

    def mean(row: dict) -> float:
        return sum(values(row)) / len(values(row))

    methods = [(c["method"], c["kind"]) for c in results["costs"]]
    names = {name for name, _ in methods}
    students = [r for r in results["rows"] if r["model"] in names and r["nfe"] >= 1 and metric in r["metrics"]]
    found = []
    for nfe in sorted({r["nfe"] for r in students}):
        rows = {}
        for name, _ in methods:  # each method's best sampler at this NFE
            candidates = [r for r in students if r["model"] == name and r["nfe"] == nfe]
            if candidates:
                rows[name] = pick(candidates, key=mean)
        bezier = [name for name, kind in methods if kind in BEZIER_KINDS and name in rows]
        if not bezier:
            continue
        best = pick(bezier, key=lambda name: mean(rows[name]))
        ours = values(rows[best])
        for name, kind in methods:
            if kind in BEZIER_KINDS or name not in rows:
                continue
            diff, sd, outcome = paired_outcome(ours, values(rows[name]), higher)
            found.append(Verdict(nfe, metric + "_gap" if gap else metric, best, name, diff, sd, len(ours), outcome,
                                 describe(rows[best]), describe(rows[name])))
    return found
