"""Tables over several runs, written from the runs' JSONs, never typed:

    python tools/report.py results results/step*.json      results.md (+ --readme README.md)
    python tools/report.py seeds results/experiments/step3/seeds/*.json   one step's seeds table
    python tools/report.py experiments                     EXPERIMENTS.md from results/experiments/

`make results`, `make seeds` and `make experiments` call it.
"""
import argparse
import importlib
import json
import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
from common import (TARGET_ACC, UserError, format_summary, main_guard, provenance,  # noqa: E402
                    summarize, write_atomically)
from figures import save_figure  # noqa: E402

LAST = 5  # the target must hold in each of the last LAST epochs


def read_runs(paths):
    """The JSON records at `paths`; a missing or broken file is a clear error."""
    runs = []
    for path in paths:
        try:
            runs.append(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise UserError(f"{path} does not exist: run that step first (make all)") from None
        except json.JSONDecodeError as error:
            raise UserError(f"{path} is not valid JSON ({error}): rerun that step") from None
    return runs


def accuracies(run):
    """Per epoch, the accuracy on the set the run was measured on (test, or validation with --validation)."""
    return [e[f"{evaluated_on(run)}_acc"] for e in run["epochs"]]


def evaluated_on(run):
    return run.get("evaluated_on", "test")  # runs recorded before --validation were all measured on test


def ranges(numbers):
    """[1, 2, 3, 7] -> '1-3, 7'."""
    starts = [n for n in numbers if n - 1 not in numbers]
    ends = [n for n in numbers if n + 1 not in numbers]
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends))


def epochs_at_target(accs, target=TARGET_ACC):
    """'3: 9, 13-14' style: how many epochs (1-based) reach the target, and which."""
    hits = [i + 1 for i, a in enumerate(accs) if a >= target]
    return f"{len(hits)}: {ranges(hits)}" if hits else "0"


def holds_from(accs, target=TARGET_ACC):
    """The first epoch from which accuracy stays at or above the target to the end."""
    first = None
    for i, a in enumerate(accs):
        first = None if a < target else first or i + 1
    return first


def seeds_summary(runs):
    """Mean and sample std of the final accuracies, the worst of the last epochs, passes."""
    finals = [accuracies(r)[-1] for r in runs]
    tails = [accuracies(r)[-LAST:] for r in runs]
    return dict(n=len(runs), mean=statistics.mean(finals), std=statistics.stdev(finals) if len(finals) > 1 else 0.0,
                worst=min(min(t) for t in tails), passing=sum(min(t) >= TARGET_ACC for t in tails))


def seeds_table(runs):
    """Markdown: the last test accuracies per seed, the epoch from which the target holds,
    the final accuracy, whether the seed passes, and a summary."""
    n_epochs = len(runs[0]["epochs"])
    last = min(LAST, n_epochs)
    head = [f"ep {e}" for e in range(n_epochs - last + 1, n_epochs + 1)]
    lines = [f"| seed | {' | '.join(head)} | ≥ {TARGET_ACC}% from epoch | final | passes |",
             "|" + "---|" * (len(head) + 4)]
    for run in runs:
        accs = accuracies(run)
        ok = len(accs) == n_epochs and min(accs[-last:]) >= TARGET_ACC
        lines.append(f"| {run['seed']} | {' | '.join(f'{a:.2f}' for a in accs[-last:])} | "
                     f"{holds_from(accs) or 'never'} | {accs[-1]:.2f} | {'yes' if ok else 'NO'} |")
    s = seeds_summary(runs)
    lines += ["", f"- final {evaluated_on(runs[0])} accuracy: mean {s['mean']:.2f}% ± {s['std']:.2f} (sample std) over {s['n']} seeds",
              f"- worst of the last {last} epochs, all seeds: {s['worst']:.2f}%",
              f"- seeds at ≥ {TARGET_ACC}% in each of their last {last} epochs: {s['passing']} of {s['n']}"]
    return "\n".join(lines)


def write_seeds_md(path, runs):
    """The seeds table of `runs` (per-seed records, put in seed order) to `path`; returns it."""
    runs = sorted(runs, key=lambda r: r["seed"])
    if len({r["step"] for r in runs}) != 1:
        raise UserError("these JSONs come from different steps; a seeds table needs one step")
    table, first = seeds_table(runs), runs[0]
    threads = {r.get("threads") for r in runs}
    how = f", {threads.pop()} thread(s) per run" if len(threads) == 1 and None not in threads else ""
    dates = sorted({r["date"] for r in runs})
    when = dates[0] if len(dates) == 1 else f"runs started {dates[0]} to {dates[-1]}"
    write_atomically(path, f"# {first['step']} over {len(runs)} seeds\n\n{len(first['epochs'])} epochs each, "
                     f"{first['params']:,} parameters, device {first['device']}{how}, {when}.\n\n{table}\n")
    return table


def results_table(runs, seeds_runs=None):
    """Markdown, one row per step; the last step also gets its seeds table's summary."""
    lines = ["| step | params | RF | multiply-adds | final test acc | best | epochs ≥ "
             f"{TARGET_ACC}% | over seeds: mean final, worst of last {LAST}, passing | minutes |",
             "|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for run in runs:
        accs = accuracies(run)
        over_seeds = "–"
        if seeds_runs and run is runs[-1]:
            s = seeds_summary(seeds_runs)
            over_seeds = f"{s['mean']:.2f}, {s['worst']:.2f}, {s['passing']} of {s['n']}"
        lines.append(f"| {run['step']} | {run['params']:,} | {run['receptive_field']} | {run['macs'] / 1e6:.2f} M | "
                     f"**{accs[-1]:.2f}** | {max(accs):.2f} | {epochs_at_target(accs)} | {over_seeds} | "
                     f"{run['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def made_by(run):
    """'2026-12-01 21:40, commit 1a2b3c4' (with '+' when the tree had uncommitted changes)."""
    commit = run["commit"][:7] + ("+" if run.get("uncommitted_changes") else "") if run.get("commit") else "unknown"
    return f"{run['date']}, commit {commit}"


def timing(runs, seeds_runs=None):
    """How long the runs took, from their own records: the README's and results.md's times."""
    first = runs[0]
    text = (f"Measured: the three steps trained and tested in {sum(r['seconds'] for r in runs) / 60:.0f} minutes "
            f"(device {first['device']}, {first['threads']} threads)")
    if seeds_runs:
        minutes = statistics.median(r["seconds"] for r in seeds_runs) / 60
        threads = "/".join(map(str, sorted({r.get("threads") for r in seeds_runs}, key=str)))
        text += (f"; each of the {len(seeds_runs)} seeds of `make seeds` in {minutes:.0f} minutes (median, "
                 f"{threads} thread per run)")
    return text + "."


def plot_seeds(runs, path):
    """Test accuracy per epoch, one line per seed, and the target: consistency at a glance."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in sorted(runs, key=lambda r: r["seed"]):
        ax.plot(range(1, len(run["epochs"]) + 1), accuracies(run), "o-", markersize=3, lw=1,
                label=f"seed {run['seed']}")
    ax.axhline(TARGET_ACC, color="gray", linestyle="--", label=f"{TARGET_ACC}%")
    late = [a for r in runs for a in accuracies(r)[len(r["epochs"]) // 3:]]
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(min(min(late), TARGET_ACC) - 0.1, max(late) + 0.05),
           title=f"{runs[0]['step']}: test accuracy per epoch, {len(runs)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    save_figure(fig, path)


def write_results_md(json_paths, out_path, seeds_folder=None, seeds=None, robustness_md=None, readme=None):
    """results.md from the steps' JSONs, with the last step's runs on `seeds` (in <seeds_folder>/seeds/; no other
    run of that folder) and the robustness table when they exist. All live at the project's top, so image links
    work from either file."""
    runs = read_runs(json_paths)
    seeds_runs = (read_runs([Path(seeds_folder, "seeds", f"{runs[-1]['step']}_seed{seed}.json") for seed in seeds])
                  if seeds_folder and seeds else None)
    first = runs[0]
    same = all((r["seed"], r["device"]) == (first["seed"], first["device"]) for r in runs)
    setting = (f"seed {first['seed']}, device {first['device']}" if same else
               "; ".join(f"{r['step']}: seed {r['seed']}, {r['device']}" for r in runs))
    text = ["# Results", "",
            f"Written by `make all` from {', '.join(f'`{Path(p).as_posix()}`' for p in json_paths)}; "
            f"{setting}; torch {first['torch']}. Runs: "
            + "; ".join(f"{r['step']} {made_by(r)}" for r in runs) + ".", "",
            results_table(runs, seeds_runs), "",
            "Accuracies in percent on the 10,000 MNIST test images; epochs counted from 1; multiply-adds per image; "
            "minutes of training and testing (a run's `seconds`: not loading, the summary or the plots). "
            + timing(runs, seeds_runs)]
    incomplete = [r["step"] for r in runs if r["status"] != "complete"]
    if incomplete:
        text += ["", f"**Not complete:** {', '.join(incomplete)} (see their JSON `status`)."]
    if seeds_runs:
        figure = Path(seeds_folder, "seeds.png")
        plot_seeds(seeds_runs, figure)
        threads = "/".join(map(str, sorted({r.get("threads") for r in seeds_runs}, key=str)))
        text += ["", f"## {runs[-1]['step']} over seeds {seed_ranges(seeds_runs)}", "",
                 f"From `{Path(seeds_folder).as_posix()}/seeds/` (`make seeds`): {len(seeds_runs[0]['epochs'])} "
                 f"epochs each, {threads} thread per run, commits {commits(seeds_runs)}, device "
                 f"{seeds_runs[0]['device']}.", "", seeds_table(seeds_runs), "",
                 f"![test accuracy per epoch, every seed]({figure.as_posix()})"]
    if robustness_md and Path(robustness_md).exists():
        figure = Path(robustness_md).with_suffix(".png").as_posix()
        text += ["", Path(robustness_md).read_text().strip().replace("# ", "## ", 1), "", f"![robustness]({figure})"]
    plots = Path(json_paths[-1]).parent.as_posix()
    text += ["", "## What each network sees", "",
             "Per step, the receptive-field table (from the model, as the run printed it): per layer with a kernel, "
             "the input and output sizes (channels x height x width), kernel, padding, stride, the jump (input pixels "
             "between neighbouring units) and the receptive field before and after it, with the parameters and "
             "multiply-adds of the layers that follow it at that size. Then the centre unit of the last map with a "
             "size (what the global average or the output layer reads): its theoretical field over a test digit, "
             "and its effective field, the mean gradient magnitude of that unit over 100 test digits "
             "(`tools/figures.py`)."]
    for run in runs:
        step = run["step"]
        layers = run.get("layers") or summarize(importlib.import_module(step).Net())  # older runs: from the model
        figure = f"{plots}/{step}_receptive_field.png"
        text += ["", f"### {step}", "", format_summary(layers), "",
                 f"![receptive field]({figure})" if Path(figure).exists() else
                 "(No receptive-field figure yet: `make all` draws it from the step's trained weights.)", "",
                 f"[curves]({plots}/{step}_curves.png), [misclassified test digits]({plots}/{step}_misclassified.png)"]
    write_atomically(out_path, "\n".join(text) + "\n")
    if readme is not None:  # the README quotes the main table, between two markers
        start, end = "<!-- results:start -->", "<!-- results:end -->"
        before, _, rest = Path(readme).read_text().partition(start)
        _, found, after = rest.partition(end)
        if not found:
            raise UserError(f"{readme} has no {start} ... {end} section to update")
        write_atomically(readme, f"{before}{start}\n{results_table(runs, seeds_runs)}\n\n"
                                 f"{timing(runs, seeds_runs)}\n{end}{after}")


def paired_difference(runs, baseline, measure=lambda accuracies: accuracies[-1]):
    """Mean and standard error of (measure - baseline's) over the seeds both have, the measure a run's final
    accuracy unless given, or why they are not paired: only runs of one code baseline (the same
    `code_fingerprint`), set and thread count are."""
    base = {r["seed"]: r for r in baseline}
    pairs = [(r, base[r["seed"]]) for r in runs if r["seed"] in base]
    if len(pairs) < 2:
        return None
    if any(a.get("code_fingerprint") is None or b.get("code_fingerprint") is None for a, b in pairs):
        return "not paired: no code fingerprint recorded (runs made before runs kept one)"
    if any(a["code_fingerprint"] != b["code_fingerprint"] for a, b in pairs):
        return "not paired: the runs were made by other code (their fingerprints differ)"
    if any(evaluated_on(a) != evaluated_on(b) for a, b in pairs):
        return "not paired: measured on different sets"
    if any(a.get("threads") is None or a.get("threads") != b.get("threads") for a, b in pairs):
        return "not paired: thread counts differ or were not recorded"
    diffs = [measure(accuracies(a)) - measure(accuracies(b)) for a, b in pairs]
    return len(diffs), statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


def commits(runs):
    """The commits that made `runs`, short, '+' where the tree had uncommitted changes,
    'unknown' for runs recorded before commits were."""
    made = {(r["commit"][:7] + ("+" if r.get("uncommitted_changes") else "")) if r.get("commit") else "unknown"
            for r in runs}
    return ", ".join(sorted(made))


def seed_ranges(runs):
    return ranges(sorted(r["seed"] for r in runs))


def seconds_per_epoch(runs):
    """'30.5 (1)': the median epoch's training seconds and the runs' thread counts ('?': not recorded)."""
    threads = {r.get("threads") or "?" for r in runs}
    seconds = statistics.median(e["train_seconds"] for r in runs for e in r["epochs"])
    return f"{seconds:.1f} ({'/'.join(map(str, sorted(threads, key=str)))})"


def failure_bound(failures, n, confidence=0.95):
    """The largest failure rate that `failures` in `n` seeds leave plausible (one-sided Clopper-Pearson upper
    bound, found by bisection): 0 of 10 failing still allows about 26%."""
    if failures >= n:
        return 1.0
    low, high = failures / n, 1.0
    for _ in range(60):  # P(at most `failures` failures | rate) falls as the rate grows
        rate = (low + high) / 2
        tail = sum(math.comb(n, k) * rate ** k * (1 - rate) ** (n - k) for k in range(failures + 1))
        low, high = (rate, high) if tail > 1 - confidence else (low, rate)
    return high


def passing(runs):
    """'9 of 10 (failure rate < 39%)': the seeds that pass, and the failure rate the count still allows."""
    s = seeds_summary(runs)
    return f"{s['passing']} of {s['n']} (fails < {100 * failure_bound(s['n'] - s['passing'], s['n']):.0f}%)"


def groups(runs):
    """A variant's runs split by what made them: the set measured on, the code fingerprint and the recipe's
    (runs from before fingerprints: one group per set). Only runs within a group are like for like."""
    split = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        key = (evaluated_on(run), run.get("code_fingerprint"), run.get("recipe_fingerprint"))
        split.setdefault(key, []).append(run)
    return list(split.values())


def command(name, runs, variants):
    """The command that reproduces `runs` of variant `name`: with a checkout first where their code or recipe is not
    this tree's (the fingerprints a run would record now, in `variants`); none for a variant that is retired."""
    if name not in variants:
        return "none: retired"
    seeds = ",".join(str(seed) for seed in sorted(r["seed"] for r in runs))
    line = (f"python tools/ablations.py {name} --seeds {seeds} --jobs 2"
            + (" --validation" if evaluated_on(runs[0]) == "validation" else ""))
    first, now = runs[0], variants[name]
    if now.get("code_fingerprint") and (first.get("code_fingerprint"), first.get("recipe_fingerprint")) == (
            now["code_fingerprint"], now.get("recipe_fingerprint")):
        return f"`{line}`"
    clean = sorted({r["commit"][:7] for r in runs if r.get("commit") and not r.get("uncommitted_changes")})
    return (f"at {', '.join(clean)}: `git checkout {clean[0]}`, then `{line}`" if len(clean) == 1
            else f"not reproducible here (made by {commits(runs)}): `{line}` runs this tree's code")


def paired_text(name, runs, rows, variants, reference):
    """The paired column for `runs` of variant `name`: against the variant it is paired with (else
    `reference`), on the same set, by runs of the same code where there are such."""
    against, split = variants.get(name, {}).get("paired_with", reference), evaluated_on(runs[0])
    candidates = [group for other, group in rows if other == against and evaluated_on(group[0]) == split]
    like = [g for g in candidates if g[0].get("code_fingerprint") == runs[0].get("code_fingerprint")
            and runs[0].get("code_fingerprint")]
    baseline = (like or candidates or [[]])[0]
    paired = (None if name == reference else paired_difference(runs, baseline) if candidates else
              f"not paired: no {against} runs on the {split} set")
    if isinstance(paired, str) or not paired:
        return paired or "–"
    _, worst, error = paired_difference(runs, baseline, lambda accuracies: min(accuracies[-LAST:]))
    vs = "" if against == reference else f", vs {against}"
    return (f"{paired[1]:+.3f} ± {paired[2]:.3f}; worst of last {LAST}: {worst:+.3f} ± {error:.3f} "
            f"({paired[0]} seeds{vs})")


def designs_section(rows, variants, reference):
    """Each network designed for a small size, with the chain of variants it is judged along (each paired
    with the next): its paired validation result and what that decided, then its test runs."""
    designs = [name for name in variants if variants[name].get("group") == "design"
               and any(other == name for other, _ in rows)]
    if not designs:
        return []
    lines = ["", "## The designs: from the validation comparisons to the test", "",
             "Each design is paired with the variant before it in its chain; a link is chosen only on the "
             "validation split, and the test set then reports the design.", ""]
    for name in designs:
        chain = [name]
        while variants.get(chain[-1], {}).get("paired_with") not in (None, reference, *chain):
            chain.append(variants[chain[-1]]["paired_with"])
        tested = [runs for other, runs in rows if other == name and evaluated_on(runs[0]) == "test"]
        checked = [runs for other, runs in rows if other == name and evaluated_on(runs[0]) == "validation"]
        params = (tested or checked)[0][0]["params"]
        lines.append(f"- **{name}** ({params:,} parameters), judged along {' -> '.join(reversed(chain))}.")
        lines += [f"  - Validation: {paired_text(name, runs, rows, variants, reference)}; decided: "
                  f"{variants[name].get('decided') or '–'}." for runs in checked] or ["  - No validation runs."]
        lines += [f"  - Test, seeds {seed_ranges(runs)}: mean final {seeds_summary(runs)['mean']:.2f}%, "
                  f"{passing(runs)} passing." for runs in tested] or ["  - No test runs."]
    return lines


def frontier_section(rows, variants, figure, page_folder):
    """EXPERIMENTS.md's frontier of sizes: the test-set rows of the variants of group "frontier" (step 3 at
    several widths) and "design" (smaller networks designed for their size), smallest first, their figure,
    and the pass counts with the failure rate each still allows."""
    shown = [(name, runs) for name, runs in rows if variants.get(name, {}).get("group")
             and evaluated_on(runs[0]) == "test"]
    if not shown:
        return []
    shown.sort(key=lambda item: (item[1][0]["params"], item[1][0]["seed"]))
    lines = ["", "## The frontier of sizes", "",
             "Step 3's design with every width scaled (group *frontier*), and networks designed for a small size "
             "(*design*), each trained like step 3, on the test set; *band* is the final accuracy of the worst and "
             "the best seed. Ten passes of ten still allow a failure rate of about a quarter: a network whose seeds "
             f"end near {TARGET_ACC}% will fail on some next seed.", "",
             f"![final accuracy against parameters]({Path(os.path.relpath(figure, page_folder)).as_posix()})", "",
             "| variant | group | parameters | multiply-adds | seeds | mean final | band | worst of last 5 | passing "
             "| s / epoch, median (threads) | command |", "|---|---|---:|---:|---|---:|---|---:|---:|---:|---|"]
    for name, runs in shown:
        s, finals = seeds_summary(runs), [accuracies(r)[-1] for r in runs]
        lines.append(f"| {name} | {variants[name]['group']} | {runs[0]['params']:,} | {runs[0]['macs']:,} | "
                     f"{seed_ranges(runs)} | {s['mean']:.2f} ± {s['std']:.2f} | {min(finals):.2f}-{max(finals):.2f} | "
                     f"{s['worst']:.2f} | {passing(runs)} | {seconds_per_epoch(runs)} | "
                     f"{command(name, runs, variants)} |")
    plot_frontier(shown, variants, figure)
    return lines


def plot_frontier(shown, variants, path):
    """Mean final accuracy against parameters (log scale), the band from the worst to the best
    seed, the target and the parameter budget."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, style in (("frontier", "o-"), ("design", "s")):
        points = [(runs[0]["params"], [accuracies(r)[-1] for r in runs], f"{name} ({seed_ranges(runs)})")
                  for name, runs in shown if variants[name]["group"] == group]
        if not points:
            continue
        params = [p for p, _, _ in points]
        line, = ax.plot(params, [statistics.mean(f) for _, f, _ in points], style,
                        label="step 3, widths scaled" if group == "frontier" else "designed for the size")
        worst, best = [min(f) for _, f, _ in points], [max(f) for _, f, _ in points]
        if group == "frontier":
            ax.fill_between(params, worst, best, alpha=0.2, color=line.get_color())
        else:
            ax.vlines(params, worst, best, color=line.get_color())
        for p, f, name in points:
            ax.annotate(name, (p, statistics.mean(f)), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.axhline(TARGET_ACC, color="gray", linestyle="--", label=f"{TARGET_ACC}%")
    ax.axvline(8000, color="gray", linestyle=":", label="8,000 parameters")
    ax.set_xscale("log")
    ticks = [1000, 1500, 2000, 3000, 4000, 6000, 8000]
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks], minor=False)
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlim(min(runs[0]["params"] for _, runs in shown) / 1.15, 9500)
    ax.set(xlabel="parameters (log scale)", ylabel="final test accuracy (%)",
           title="Final accuracy against size: mean, and the worst to the best seed")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def write_experiments_md(folder, out_path, variants, reference="step3"):
    """EXPERIMENTS.md: the recorded runs in <folder>/<variant>/seeds/, a row per variant and what made its runs
    (set, code), validation rows (which decide) apart from test rows (which report); each paired against the
    row of the variant it names (`variants[name]["paired_with"]`) with its set and code, or told why not."""
    folder = Path(folder)
    recorded = {d.name: read_runs(sorted(d.glob("seeds/*.json"))) for d in sorted(folder.iterdir())
                if d.is_dir() and list(d.glob("seeds/*.json"))} if folder.exists() else {}
    recorded = dict(sorted(recorded.items(), key=lambda item: item[0] != reference))  # the reference first
    rows = [(name, group) for name, runs in recorded.items() for group in groups(runs)]
    lines = ["# Experiments: step 3 with one change", "",
             f"Written by `make experiments` (`tools/report.py experiments`) from the per-seed JSONs in "
             f"`{folder.as_posix()}/<variant>/seeds/`; nothing here is typed. Each variant is step 3 with one "
             "change, or the variant its description names with one more (`tools/ablations.py --list`), "
             f"trained 15 epochs per seed; *passing* means at or above {TARGET_ACC}% in each of the last {LAST} "
             "epochs, with the failure rate that count still allows (95%). A row holds the runs of one variant "
             "made by one code on one set: the runs' `code_fingerprint` (step 3 and common.py, docstrings left out) "
             "and `recipe_fingerprint` (what trains the variant: the source of the functions its recipe names, the "
             "values they close over, its resolved settings; editing or adding another variant changes none). Runs "
             "recorded before recipes were fingerprinted so carry the hash of the whole of tools/ablations.py at "
             "their commit: no current recipe matches it, and their command checks that commit out. *Paired* is the "
             f"mean difference in final accuracy against `{reference}` (or the variant named) on the seeds both "
             f"ran, ± its standard error, then the same for the worst of the last {LAST} epochs (the measure the "
             "goal is stated in), and only between runs of the same code baseline, set and thread count; "
             "otherwise it says why not. At about 0.05 point of seed-to-seed noise, only a difference of two "
             "standard errors or more says anything. Seconds per epoch: the median of the runs' own timings "
             "(rough: other runs shared the CPU). *Commits* made the runs ('+': with uncommitted changes; "
             "'unknown': recorded before runs kept their commit).", "",
             "**What decides.** Choices are made on the validation split (`--validation`: trained on the first "
             "50,000 training images, measured on the last 10,000), paired, on 10 seeds or more; the test set "
             "only reports what was chosen. Seeds 1-5 and 21-30 carried the choices made on the test set before "
             "the split existed (the *decided* column). Seeds 31-40 are step 3's report seeds, but spent for the "
             "designs under 4,000 parameters (three of them were run on them on the test set); 41-50 were those "
             "designs' report seeds and hold one design's run (x0.7-no-dropout-cosine-to-end): the next design "
             "is reported on seeds from 51 on."]
    for split, title in (("validation", "Validation runs: the comparisons that decide"),
                         ("test", "Test-set runs: what was chosen, and the earlier choices")):
        chosen = [(name, runs) for name, runs in rows if evaluated_on(runs[0]) == split]
        lines += ["", f"## {title}", ""]
        if not chosen:
            lines.append("None recorded yet: run a variant and its baseline with `--validation` on the same seeds.")
            continue
        lines += ["| variant | what changes | decided | seeds | mean final | worst of last 5 | passing | paired vs "
                  f"{reference} | s / epoch, median (threads) | commits | command |",
                  "|---|---|---|---|---:|---:|---:|---|---:|---|---|"]
        for name, runs in chosen:
            s, entry = seeds_summary(runs), variants.get(name, {})
            paired = paired_text(name, runs, rows, variants, reference)
            lines.append(f"| {name} | {entry.get('what', '(retired: no recipe in tools/ablations.py)')} | "
                         f"{entry.get('decided') or '–'} | {seed_ranges(runs)} | {s['mean']:.2f} ± {s['std']:.2f} | "
                         f"{s['worst']:.2f} | {passing(runs)} | {paired} | {seconds_per_epoch(runs)} | "
                         f"{commits(runs)} | {command(name, runs, variants)} |")
    lines += frontier_section(rows, variants, folder / "frontier.png", Path(out_path).parent)
    lines += designs_section(rows, variants, reference)
    untried = [name for name in variants if name not in recorded]
    if untried:
        lines += ["", "Variants with no recorded runs yet:", ""] + [f"- `{n}`: {variants[n]['what']}" for n in untried]
    for name, runs in rows:
        lines += ["", f"## {name}, seeds {seed_ranges(runs)}, {evaluated_on(runs[0])} set, {commits(runs)}", "",
                  seeds_table(runs)]
    write_atomically(out_path, "\n".join(lines) + "\n")


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("command", choices=["results", "seeds", "experiments"], help="what to build")
    cli.add_argument("jsons", nargs="*", help="results: the steps' JSONs in step order; seeds: per-seed JSONs")
    cli.add_argument("--output", help="file to write (default: results.md, seeds.md, EXPERIMENTS.md)")
    cli.add_argument("--seeds-folder", help="results: the folder of the last step's runs over several seeds")
    cli.add_argument("--seeds", help="results: which of them, e.g. 31,32,33")
    cli.add_argument("--robustness-md", help="results: the robustness table to include, if it exists")
    cli.add_argument("--readme", help="results: also update the results section of this README")
    cli.add_argument("--folder", default="results/experiments", help="experiments: where the runs are")
    cli.add_argument("--variants", default="results/experiments/variants.json",
                     help="experiments: the variants' descriptions (tools/ablations.py --variants-json)")
    args = cli.parse_args(argv)
    if args.command != "experiments" and not args.jsons:
        cli.error(f"{args.command} needs JSON files")
    if args.command == "seeds":
        print(write_seeds_md(args.output or "seeds.md", read_runs(args.jsons)))
    elif args.command == "results":
        seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else None
        write_results_md(args.jsons, args.output or "results.md", args.seeds_folder, seeds, args.robustness_md,
                         args.readme)
        print(Path(args.output or "results.md").read_text())
    else:
        write_experiments_md(args.folder, args.output or "EXPERIMENTS.md", json.loads(Path(args.variants).read_text()))
        print(f"wrote {args.output or 'EXPERIMENTS.md'}")


if __name__ == "__main__":
    main_guard(main)
