"""The comparison's report: results.md rendered from results.json alone (never from numbers in memory).

    render_markdown(results)  the tables (headline, every sampled model, training cost) as markdown text
    write_markdown(out_dir)   reads OUT/results.json, writes OUT/results.md
    write_page(page, runs)    a results page: its hand-written text, then every run's tables (from copies of
                              their results.json next to the page)

    python -m bezier_distill.comparison.report docs/results.md runs/results/8gaussians runs/results/digits ...
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..files import atomic_write, read_json
from .layout import RESULTS_JSON, RESULTS_MD
from .verdict import HIGHER_IS_BETTER, SECONDARY, verdicts

# metric key in results.json -> column title
METRICS = {"energy_distance": "energy dist.", "mmd": "MMD²", "sliced_w2": "sliced W2", "w2": "W2",
           "frechet": "FD (classifier)", "log_density": "log p", "in_support": "in support",
           "mode_coverage": "modes covered", "mode_tv": "mode TV", "precision": "precision", "recall": "recall",
           "teacher_gap": "gap to teacher", "straightness": "straightness",
           "log_density_gap": "log p gap to the target's"}
SAMPLERS = {"-": "-", "one step": "one step", "euler": "Euler", "heun": "Heun", "bezier": "Bezier re-entry",
            "caf": "CAF", "meanflow": "MeanFlow jumps"}
# the sampler of a method's headline row, in order of preference: each model's own path
HEADLINE_SAMPLERS = ("one step", "bezier", "caf", "meanflow", "euler")


def classifier_text(classifier: dict) -> str:
    """"a Fashion-MNIST classifier (14x14) with held-out accuracy 86.7%" from results.json's "classifier"
    (older files, digits only, lack "data" and "size")."""
    data, size = classifier.get("data", "digits"), classifier.get("size", 8)
    name = {"digits": "digits", "fashion": "Fashion-MNIST", "mnist": "MNIST"}.get(data, data)
    return (f"{'an' if name == 'MNIST' else 'a'} {name} classifier ({size}x{size}) with held-out accuracy "
            f"{100 * classifier['accuracy']:.1f}%")


def number(stat: dict | None, digits: int = 3) -> str:
    """"mean ± std" with `digits` significant digits (the std with 2); "–" when absent."""
    if stat is None:
        return "–"
    return f"{stat['mean']:.{digits}g} ± {stat['std']:.2g}"


def count(stat: dict) -> str:
    """A count's mean (and std when it varies over seeds), with thousands separators."""
    return f"{stat['mean']:,.0f}" + (f" ± {stat['std']:,.0f}" if stat["std"] else "")


def sampler_name(row: dict) -> str:
    if row["kind"] in ("reflow", "bezier") and row["sampler"] == "euler":
        return "Euler (line re-entry)"
    return SAMPLERS.get(row["sampler"], row["sampler"])


def table(header: list[str], lines: list[list[str]]) -> str:
    rule = ["---"] * len(header)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *lines])


def headline_row(results: dict, method: str, steps: int) -> dict | None:
    """The student row of `method` at `steps`: its own path's sampler (Bezier re-entry for Bezier students)."""
    rows = [r for r in results["rows"] if r["model"] == method and r["steps"] == steps]
    for sampler in HEADLINE_SAMPLERS:
        for row in rows:
            if row["sampler"] == sampler:
                return row
    return None


def sampler_phrase(row: dict) -> str:
    """How a row was sampled, for the verdict: "one step", "Euler x2", "Bezier re-entry x2", "CAF x1", ..."""
    return "one step" if row["sampler"] == "one step" else f"{sampler_name(row)} x{row['steps']}"


def verdict_lines(results: dict) -> list[str]:
    """One line per comparison of the best Bezier student with another method, per number of network
    evaluations: on the primary metric, then (when that is another) on energy distance."""
    found = verdicts(results, describe=sampler_phrase)
    if not found:
        return ["No verdict: the comparison has no Bezier student, or no student carries a primary metric."]
    lines = []
    second = verdicts(results, SECONDARY, sampler_phrase) if found[0].metric != SECONDARY else []
    for group, lead in ((found, "Verdict on"), (second, "Also on")):
        if group:
            label = METRICS[group[0].metric]
            lines += [f"{lead} {label} ({'higher' if group[0].metric in HIGHER_IS_BETTER else 'lower'} is better), "
                      "best Bezier student per number of network evaluations against each other method's best "
                      "sampler with as many:"]
            lines += [f"- {v.sentence(label)}" for v in group]
    return lines


def render_markdown(results: dict) -> str:
    """The report of a results.json mapping: headline table, every sampled model, training costs, figures."""
    data, seeds = results["data"], results["seeds"]
    evaluate = results["config"]["evaluate"]
    shown = [m for m in METRICS if any(m in r["metrics"] for r in results["rows"])]
    steps = sorted(set(evaluate["steps"]))
    lines = [f"# Bezier distillation vs k-RF distillation and baselines: {data['source']} -> {data['target']} "
             f"({data['dim']}-D)", "",
             f"Mean ± standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))}). Every model is "
             f"sampled from the same {evaluate['num_samples']} source points per seed and measured against "
             f"{evaluate['num_samples']} fresh target samples (exact W2 on the first {evaluate['w2_samples']}; "
             f"sliced W2 over {evaluate['projections']} directions). Energy distance and MMD² (Gaussian kernel, "
             "median-heuristic bandwidth) are unbiased estimates: about 0 for a perfect sampler, see the `target` "
             "row for the noise floor of each metric. Precision and recall: the fraction of samples inside the "
             "target sample's 3-nearest-neighbour balls, and of target points inside the samples' (Kynkäänniemi et "
             "al. 2019), in the classifier's features for images."]
    if any("mode_tv" in r["metrics"] for r in results["rows"]):
        lines += ["", "Known target structure: log p is the mean exact log-density of the samples under the target "
                      "mixture; in support the fraction of samples within a mode's 99.9% ball (mixtures) or on the "
                      "board's squares (checkerboard); modes covered the fraction of modes with a sample in their "
                      "support; mode TV the total-variation error of the modes' sample fractions."]
    lines += ["", "## Verdict", "", *verdict_lines(results), "",
              "Paired over seeds: every method of a seed shares its teacher, data and source points. A tie is a "
              "mean difference within the 95% interval of the per-seed differences (Student's t); the best Bezier "
              "student is picked first, which favours Bezier a little."]
    if results.get("classifier"):
        lines += ["", f"FD: Frechet distance in the features of {classifier_text(results['classifier'])}."]
    headline_metrics = [m for m in ("energy_distance", "w2", "frechet", "log_density", "in_support", "recall",
                                    "teacher_gap") if m in shown]
    header = ["method", "reflows", "path degree"] + [f"{METRICS[m]}, {s} step{'s' if s > 1 else ''}"
                                                      for m in headline_metrics for s in steps]
    body = []
    costs = {c["method"]: c for c in results["costs"]}
    for method, cost in costs.items():
        cells = [method, str(cost["reflows"]), str(cost["degree"])]
        for m in headline_metrics:
            for s in steps:
                row = headline_row(results, method, s)
                cells.append(number(row["metrics"].get(m)) if row else "–")
        body.append(cells)
    lines += ["", "## Students at one and two steps", "",
              "Each student sampled on the path it was trained on: the line for k-RF students, the Bezier path "
              "(re-entered with its guide map) for Bezier students; the baselines by their own samplers (2-RF++: "
              "Euler steps; CAF: its initial velocity, then constant-acceleration steps, N + 1 evaluations; "
              "MeanFlow: jumps by the average velocity over each step).", "", table(header, body)]

    header = ["model", "sampler", "steps", "NFE"] + [METRICS[m] for m in shown]
    body = [[r["model"], sampler_name(r), str(r["steps"]), str(r["nfe"])] +
            [number(r["metrics"].get(m)) for m in shown] for r in results["rows"]]
    lines += ["", "## Every sampled model", "",
              "NFE: network evaluations per sample (Bezier re-entry: the student's N plus one of its guide map). "
              "Euler (line re-entry) is the pipeline's N-step sampler of an endpoint student; for a Bezier student "
              "it leaves the curve it was trained on. Gap to teacher: mean over the shared source points of "
              "|x - x_teacher|², x_teacher from the teacher whose ODE made the student's targets (for a teacher, its "
              "own many-step sample): how well the one map is distilled. Straightness (Rectified Flow) along the "
              "sampler's own path (0 for one step by definition, so not shown).", "", table(header, body)]

    header = ["method", "reflows", "teacher evaluations", "teacher steps", "student steps", "guide-map steps",
              "wall time (s)"]
    body = [[c["method"], str(c["reflows"]), count(c["teacher_evaluations"]), count(c["teacher_steps"]),
             count(c["student_steps"]), count(c["guide_map_steps"]), number(c["wall_s"], 3)]
            for c in results["costs"]]
    env = results["environment"]
    lines += ["", "## Training cost per method", "",
              "Everything the method's student (and its guide map) needs: teacher network evaluations spent "
              "generating couplings and guides, training steps of its teachers, student and guide map, and the "
              f"wall time of those stages (device {env['device']}, {env['threads']} threads, torch {env['torch']}; "
              "stages shared by several methods are counted in full for each).", "", table(header, body)]
    if results.get("figures"):
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({file})" for name, file in results["figures"].items()]
    return "\n".join(lines) + "\n"


def write_markdown(out_dir: str | Path) -> Path:
    """Renders OUT/results.json into OUT/results.md; returns its path."""
    out_dir = Path(out_dir)
    path = out_dir / RESULTS_MD
    atomic_write(path, render_markdown(read_json(out_dir / RESULTS_JSON)))
    return path


PAGE_MARKER = "<!-- generated by `python -m bezier_distill.comparison.report`: edit above this line -->"


def _sections(markdown: str) -> tuple[str, dict[str, str]]:
    """(title line, {"## heading": its text}) of a rendered report."""
    head, *parts = markdown.split("\n## ")
    return head.splitlines()[0], {part.splitlines()[0]: part.split("\n", 1)[1].strip() for part in parts}


def _deeper(text: str) -> str:
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def glance_table(results: dict[str, dict]) -> str:
    """One row per run: its primary metric and, per number of network evaluations, how many methods the best
    Bezier student beats, ties with and loses to (naming those it loses to)."""
    found = {name: verdicts(result) for name, result in results.items()}
    counts = sorted({v.nfe for group in found.values() for v in group})
    body = []
    for name, group in found.items():
        cells = [name, METRICS[group[0].metric] if group else "–"]
        for nfe in counts:
            at = [v for v in group if v.nfe == nfe]
            if not at:
                cells.append("–")
                continue
            tally = {o: [v.other for v in at if v.outcome == o] for o in ("beats", "ties with", "loses to")}
            text = f"beats {len(tally['beats'])}, ties {len(tally['ties with'])}, loses {len(tally['loses to'])}"
            cells.append(text + (f" (to {', '.join(tally['loses to'])})" if tally["loses to"] else ""))
        body.append(cells)
    return table(["pair", "metric"] + [f"{n} evaluation{'s' if n > 1 else ''}" for n in counts], body)


def render_page(text: str, results: dict[str, dict], figures: dict[str, list[str]], folder: str) -> str:
    """A results page: `text` (everything above PAGE_MARKER is kept), then, generated from the runs' JSON:
    the verdict of every run (pair), the tables and the figures given for each run, and each run's training
    costs last. `folder` holds the runs' JSON copies (paths relative to the page)."""
    lines = [text.split(PAGE_MARKER)[0].rstrip(), "", PAGE_MARKER]
    rendered = {name: _sections(render_markdown(result)) for name, result in results.items()}

    def title(name: str) -> str:
        data = results[name]["data"]
        return f"{name}: {data['source']} -> {data['target']} ({data['dim']}-D, {len(results[name]['seeds'])} seeds)"

    lines += ["", "## Verdicts at a glance", "",
              "The best Bezier student against each other method at 1, 2 and 3 network evaluations per sample, on each "
              "pair's primary metric (the lines below give every comparison, and the energy distance too):", "",
              glance_table(results)]
    lines += ["", "## Verdicts", "", "Paired over seeds: every method of a seed shares its teacher, data and source "
              "points. A tie is a mean difference within the 95% interval of the per-seed differences (Student's t); "
              "the best Bezier student is picked first, which favours Bezier a little."]
    for name in results:
        lines += ["", f"### {title(name)}", "", *verdict_lines(results[name])]
    lines += ["", "## Tables and figures"]
    for name, (_, sections) in rendered.items():
        intro = render_markdown(results[name]).split("\n## ")[0].split("\n", 1)[1].strip()
        lines += ["", f"### {title(name)}", "", f"Every number and the full config: `{folder}/{name}.json`.", "",
                  intro]
        if results[name].get("classifier"):
            lines += ["", f"FD: Frechet distance in the features of {classifier_text(results[name]['classifier'])}."]
        for heading in ("Students at one and two steps", "Every sampled model"):
            lines += ["", f"#### {heading}", "", _deeper(_deeper(sections[heading]))]
        lines += [f"\n![{Path(file).stem}]({file})" for file in figures.get(name, [])]
    lines += ["", "## Training costs"]
    for name, (_, sections) in rendered.items():
        lines += ["", f"### {title(name)}", "", sections["Training cost per method"]]
    return "\n".join(lines) + "\n"


def small_copy(source: Path, target: Path, colours: int = 16) -> None:
    """A copy of a PNG figure with its colours reduced to a palette, small enough to commit."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colours).save(target, optimize=True)


def write_page(page: str | Path, runs: list[str | Path],
               figures: tuple[str, ...] = ("trajectories", "samples")) -> Path:
    """Copies each run's results.json and the first of `figures` it made (2-D runs: the trajectories; digits:
    the samples; a 16-colour copy) into the folder named like `page` without .md, as <run name>.json and
    <run name>-<figure>.png, then rewrites the generated part of `page` from those copies."""
    page = Path(page)
    folder = page.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    results, copied = {}, {}
    for run in map(Path, runs):
        shutil.copyfile(run / RESULTS_JSON, folder / f"{run.name}.json")
        results[run.name] = read_json(folder / f"{run.name}.json")
        copied[run.name] = []
        made = [figure for figure in figures if figure in results[run.name].get("figures", {})]
        if made:
            small_copy(run / results[run.name]["figures"][made[0]], folder / f"{run.name}-{made[0]}.png")
            copied[run.name].append(f"{folder.name}/{run.name}-{made[0]}.png")
    text = page.read_text() if page.exists() else "# Results\n"
    atomic_write(page, render_page(text, results, copied, folder.name))
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bezier_distill.comparison.report", description=write_page.__doc__)
    parser.add_argument("page", help="the markdown page (its text above the marker is kept)")
    parser.add_argument("runs", nargs="+", help="comparison output directories (bezier-distill compare --out)")
    parser.add_argument("--figures", nargs="*", default=["trajectories", "samples"],
                        help="per run, the first of these figures it made is copied and shown")
    args = parser.parse_args(argv)
    print(write_page(args.page, args.runs, tuple(args.figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
