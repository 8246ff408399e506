"""The comparison's verdict: paired comparisons over seeds on constructed results with known answers."""
from __future__ import annotations

import pytest

from bezier_distill.comparison.report import render_markdown, verdict_lines
from bezier_distill.comparison.verdict import paired_outcome, verdicts


def test_a_consistent_gain_beats_and_a_noisy_one_ties():
    # lower is better: Bezier 1.0 below the other on every seed, spread 0.1 -> beats
    mean, sd, outcome = paired_outcome([1.0, 1.1, 0.9], [2.0, 2.2, 1.8], higher_is_better=False)
    assert outcome == "beats" and mean == pytest.approx(1.0) and sd == pytest.approx(0.1)
    # the same mean gain with per-seed differences +3, -1, +1: t = 1 / (2 / sqrt 3) = 0.87 < 4.30 -> tie
    assert paired_outcome([0.0, 2.0, 1.0], [3.0, 1.0, 2.0], higher_is_better=False)[2] == "ties with"
    # higher is better (log-density): a consistent deficit loses
    assert paired_outcome([-3.0, -3.1, -2.9], [-1.0, -1.05, -0.95], higher_is_better=True)[2] == "loses to"
    # one seed never decides
    assert paired_outcome([0.0], [5.0], higher_is_better=False)[2] == "ties with"


def test_the_threshold_is_the_two_sided_95_percent_t_quantile():
    """n = 3: |mean| > 4.303 sd / sqrt(3). Differences 1 + e, 1 - e, 1 have sd e: decided iff 1 > 2.484 e."""
    for e, expected in ((0.40, "beats"), (0.41, "ties with")):
        assert paired_outcome([0.0, 0.0, 0.0], [1 + e, 1 - e, 1.0], higher_is_better=False)[2] == expected


def stat(values):
    return {"mean": sum(values) / len(values), "std": 0.0, "values": values}


def results_with(metric: str, bezier: dict[str, list[float]], others: dict[str, list[float]]) -> dict:
    rows, costs = [], []
    for kind, group in (("bezier", bezier), ("reflow", others)):
        for name, values in group.items():
            rows.append({"model": name, "kind": kind, "sampler": "one step", "steps": 1, "nfe": 1,
                         "metrics": {metric: stat(values)}})
            costs.append({"method": name, "kind": kind, "degree": 2 if kind == "bezier" else 1, "reflows": 0,
                          "teacher_evaluations": stat([0.0]), "teacher_steps": stat([0.0]),
                          "student_steps": stat([0.0]), "guide_map_steps": stat([0.0]), "wall_s": stat([1.0])})
    return {"rows": rows, "costs": costs, "seeds": [0, 1, 2], "config": {"evaluate": {"steps": [1]}}}


def test_verdicts_pick_the_best_bezier_student_and_compare_it_with_every_other_method():
    results = results_with("energy_distance", {"Bezier a": [0.5, 0.6, 0.4], "Bezier b": [0.1, 0.12, 0.08]},
                           {"1-RF": [0.3, 0.33, 0.27], "2-RF": [0.1, 0.13, 0.07], "CAF": [0.0, 0.01, -0.01]})
    found = {v.other: v for v in verdicts(results)}
    assert {v.bezier for v in found.values()} == {"Bezier b"} and set(found) == {"1-RF", "2-RF", "CAF"}
    assert found["1-RF"].outcome == "beats" and found["1-RF"].advantage == pytest.approx(0.2)
    assert found["2-RF"].outcome == "ties with"
    assert found["CAF"].outcome == "loses to" and found["CAF"].advantage == pytest.approx(-0.1)


def test_log_density_is_preferred_over_energy_distance_and_higher_is_better():
    results = results_with("log_density", {"Bezier": [-1.0, -1.1, -0.9]}, {"1-RF": [-2.0, -2.2, -1.8]})
    (verdict,) = verdicts(results)
    assert verdict.metric == "log_density" and verdict.outcome == "beats"
    lines = verdict_lines(results)
    assert lines[0].startswith("Verdict on log p (higher is better)")
    assert lines[1] == ("- 1 evaluation: Bezier (one step) beats 1-RF (one step) on log p by 1 ± 0.1 "
                        "(paired over 3 seeds)")


def test_the_report_opens_with_the_verdict_and_a_comparison_without_bezier_says_so():
    results = results_with("energy_distance", {"Bezier": [0.1, 0.1, 0.1]}, {"1-RF": [0.3, 0.31, 0.29]})
    results.update(data={"source": "normal", "target": "moons", "dim": 2}, environment={
        "device": "cpu", "threads": 1, "torch": "x"})
    results["config"]["evaluate"].update(num_samples=10, w2_samples=10, projections=4)
    text = render_markdown(results)
    assert text.index("## Verdict") < text.index("## Students at one and two steps")
    assert "- 1 evaluation: Bezier (one step) beats 1-RF (one step) on energy dist. by 0.2" in text
    no_bezier = results_with("energy_distance", {}, {"1-RF": [0.3, 0.31, 0.29]})
    assert verdict_lines(no_bezier)[0].startswith("No verdict")


def test_a_pair_judged_on_its_structure_is_also_judged_on_energy_distance():
    """Primary metric in support (higher is better), and energy distance as the second view: a student can be in
    the support as often as another and still place its mass worse."""
    results = results_with("in_support", {"Bezier": [0.80, 0.81, 0.79]}, {"MeanFlow": [0.80, 0.82, 0.79]})
    for row, energy in zip(results["rows"], ([0.001, 0.0011, 0.0009], [0.014, 0.015, 0.013])):
        row["metrics"]["energy_distance"] = stat(energy)
    lines = verdict_lines(results)
    assert lines[0].startswith("Verdict on in support (higher is better)") and "ties with MeanFlow" in lines[1]
    assert lines[2].startswith("Also on energy dist. (lower is better)")
    assert lines[3] == ("- 1 evaluation: Bezier (one step) beats MeanFlow (one step) on energy dist. by 0.013 ± 0.0009 "
                        "(paired over 3 seeds)")
    assert len(verdict_lines(results_with("energy_distance", {"Bezier": [0.1] * 3}, {"1-RF": [0.2] * 3}))) == 2


def test_log_density_is_judged_by_its_gap_to_the_target_so_a_collapse_onto_the_modes_does_not_win():
    """A sampler that puts its samples at the modes' centres has a log p above the target's own (-entropy): judged
    by |log p - target's| per seed, the Bezier student slightly below the target beats it."""
    results = results_with("log_density", {"Bezier": [-1.80, -1.85, -1.75]}, {"MeanFlow": [-1.30, -1.25, -1.35],
                                                                              "1-RF": [-2.2, -2.3, -2.1]})
    results["rows"].append({"model": "target", "kind": "-", "sampler": "-", "steps": 0, "nfe": 0,
                            "metrics": {"log_density": stat([-1.70, -1.69, -1.71])}})
    found = {v.other: v for v in verdicts(results)}
    assert found["MeanFlow"].metric == "log_density_gap" and found["MeanFlow"].outcome == "beats"
    assert found["MeanFlow"].advantage == pytest.approx(((0.4 - 0.1) + (0.44 - 0.16) + (0.36 - 0.04)) / 3)
    assert found["1-RF"].outcome == "beats"
    assert verdict_lines(results)[0].startswith("Verdict on log p gap to the target's (lower is better)")


def test_methods_are_compared_at_equal_network_evaluations_each_by_its_best_sampler_there():
    """CAF's one step costs 2 evaluations: it meets the Bezier student's two line steps (2), not its one step; the
    Bezier re-entry (2 steps + the guide map: 3) meets CAF's two steps (3)."""
    def row(model, kind, sampler, steps, nfe, values):
        return {"model": model, "kind": kind, "sampler": sampler, "steps": steps, "nfe": nfe,
                "metrics": {"frechet": stat(values)}}

    results = results_with("frechet", {"Bezier": [6.0, 6.1, 5.9]}, {"CAF": [9.0, 9.1, 8.9]})
    results["rows"] = [row("Bezier", "bezier", "one step", 1, 1, [6.0, 6.1, 5.9]),
                       row("Bezier", "bezier", "euler", 2, 2, [3.0, 3.2, 2.8]),
                       row("Bezier", "bezier", "bezier", 2, 3, [8.0, 8.1, 7.9]),
                       row("CAF", "caf", "caf", 1, 2, [6.5, 6.6, 6.4]),
                       row("CAF", "caf", "caf", 2, 3, [6.4, 6.5, 6.3])]
    found = {(v.nfe, v.other): v for v in verdicts(results)}
    assert set(found) == {(2, "CAF"), (3, "CAF")}  # nothing of CAF's at 1 evaluation
    assert found[(2, "CAF")].outcome == "beats" and found[(2, "CAF")].advantage == pytest.approx(3.5)
    assert found[(3, "CAF")].outcome == "loses to" and found[(3, "CAF")].advantage == pytest.approx(-1.6)
    lines = verdict_lines(results)
    assert "- 2 evaluations: Bezier (Euler (line re-entry) x2) beats CAF (CAF x1) on FD (classifier) by 3.5" in lines[1]
