"""`cae reproduce` end to end (quick mode, real data subset) and `cae report`."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import QuickRun, run_cae
from helpers import hint_summary

from cae.core.device import torch_threads
from cae.core.spec import trace
from cae.core.text import duration, first_line, number
from cae.errors import CaeError
from cae.experiments.study import correlation_sentence as correlation_conclusion
from cae.report import SECTIONS, write_report
from cae.experiments.study import study_file
from cae.reproduce import HINTS_SIZES, QUICK_LIMIT, QUICK_VARIANTS, STEPS, STUDY_NAME, quick_study, reproduce

SLOW = pytest.mark.slow


def _mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- the quick run
@SLOW
def test_every_step_finished_and_recorded(quick_reproduce: QuickRun) -> None:
    out = quick_reproduce.out
    state = json.loads((out / "steps.json").read_text())
    assert state["settings"] == {"quick": True, "epochs": None, "limit": QUICK_LIMIT}
    assert [s.key for s in STEPS] == ["data", "latent", "study", "reference", "frontier", "colorize", "hints", "report"]
    for s in STEPS:
        rec = state["steps"][s.key]
        assert rec["status"] == "done", s.key
        assert rec["seconds"] >= 0
    for i, s in enumerate(STEPS, 1):  # the overall progress line of every step
        assert re.search(rf"\[step {i}/{len(STEPS)}\] {s.title} — elapsed \S+, estimated time left \S+",
                         quick_reproduce.stdout)
    for rel in ("data.json", "latent.json", "reference/test_metrics.json", "study/results.csv",
                "frontier/frontier.csv", "frontier/frontier_mse.png", "colorize/results.csv", "hints/hint_study.json",
                "hints/hint_study.png", "report.html", "report.md", "reproducibility.json"):
        assert (out / rel).is_file(), rel
    hints = json.loads((out / "hints/hint_study.json").read_text())  # the quick size, a tiny study
    assert hints["cifar_images"] == HINTS_SIZES["quick"].cifar and state["steps"]["hints"]["size"] == "quick"


@SLOW
def test_quick_run_is_small_and_consistent(quick_reproduce: QuickRun) -> None:
    out = quick_reproduce.out
    data = json.loads((out / "data.json").read_text())
    assert sum(data["sizes"].values()) == QUICK_LIMIT
    assert all(abs(sum(v) - 1) < 1e-9 for v in data["class_balance"].values())
    # the data summary describes the split the reference run actually used
    import numpy as np

    with np.load(out / "reference/split.npz") as z:
        assert {k: len(z[k]) for k in ("train", "val", "test")} == data["sizes"]
    assert json.loads((out / "latent.json").read_text())["latent_size"] == trace("reference").latent_size
    with open(out / "study/results.csv", newline="") as f:
        conv = [r for r in csv.DictReader(f) if not r["name"].startswith("pca-")]
    assert len(conv) == QUICK_VARIANTS and len({r["latent_size"] for r in conv}) == QUICK_VARIANTS
    # the reference step's run is the study's reference variant, trained once (by the study)
    ref = next(r for r in conv if r["name"] == "reference")
    reference = json.loads((out / "reference/test_metrics.json").read_text())
    assert float(ref["test_mse"]) == pytest.approx(reference["mse"], rel=1e-5)  # results.csv keeps 6 digits
    assert f"{out / 'reference'} is {out / 'study' / 'reference'} (the same run): copied" in quick_reproduce.stdout
    assert re.search(r"reference is already finished \(test MSE", quick_reproduce.stdout)
    assert not (out / "reference" / ".lock").exists()


@SLOW
def test_report_holds_every_section_and_the_results_numbers(quick_reproduce: QuickRun) -> None:
    out = quick_reproduce.out
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for _, title in SECTIONS:
        assert f"## {title}" in md
        assert f">{title}</h2>" in page
    assert "not run yet" not in md
    ref = json.loads((out / "reference/test_metrics.json").read_text())
    assert f"test MSE of {ref['mse']:.5f} (PSNR {ref['psnr']:.2f} dB, SSIM {ref['ssim']:.4f})" in md
    lat = json.loads((out / "latent.json").read_text())
    assert f"= {lat['latent_size']:,} values" in md and f"Parameters: {lat['params']:,}" in md
    for row in lat["trace"]:
        if row["formula"]:
            assert row["formula"] in md
    data = json.loads((out / "data.json").read_text())
    assert f"| train | {data['sizes']['train']:,} |" in md
    with open(out / "study/results.csv", newline="") as f:
        for r in csv.DictReader(f):
            assert f"| {r['name']} |" in md
            assert number(r["test_mse"], "test_mse") in md
    corr = json.loads((out / "study/correlation.json").read_text())
    if corr["pearson_r"] is not None:
        assert f"Pearson r = {corr['pearson_r']:.3f}" in md and f"p = {corr['pearson_p']:.3g}" in md
    with open(out / "colorize/results.csv", newline="") as f:
        for r in csv.DictReader(f):
            assert number(r["mse"], "mse") in md
    repro = json.loads((out / "reproducibility.json").read_text())
    assert repro["command"] in md and repro["versions"]["torch"] in md
    # Markdown references the figures by relative path; HTML embeds them
    for rel in ("reference/loss.png", "reference/samples.png", "study/mse_vs_latent.png", "colorize/samples.png",
                "colorize/best/tradeoff.png"):
        assert f"]({rel})" in md
        assert f'src="{rel}"' not in page
    assert not re.search(r'(src|href)="(?!data:|#)', page), "the HTML report must not load anything from outside"


@SLOW
def test_reproducibility_record(quick_reproduce: QuickRun) -> None:
    r = json.loads((quick_reproduce.out / "reproducibility.json").read_text())
    assert r["command"].startswith("cae reproduce --quick --frontier --out")
    assert {"python", "torch", "cae"} <= set(r["versions"])
    assert r["machine"]["cpu_count"] >= 1 and r["machine"]["cpu"] and r["machine"]["platform"]
    assert r["seeds"]["reference"] == {"split_seed": 0, "train_seed": 0}
    assert all(any(k.startswith(f"{step}/") for k in r["seeds"]) for step in ("study", "frontier", "colorize"))
    assert all(r["step_seconds"][s.key] is not None for s in STEPS if s.key != "report")


@SLOW
def test_rerun_skips_every_step_and_touches_nothing(quick_reproduce: QuickRun) -> None:
    out = quick_reproduce.out
    before = _mtimes(out)
    proc = run_cae("reproduce", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("skipped") == len(STEPS)
    assert "epoch" not in proc.stdout  # nothing trained
    assert _mtimes(out) == before


@SLOW
def test_other_settings_on_the_same_folder_are_refused(quick_reproduce: QuickRun) -> None:
    before = _mtimes(quick_reproduce.out)
    with pytest.raises(CaeError, match="made with settings"):
        reproduce(quick_reproduce.out, quick=False, log=lambda s: None)
    assert _mtimes(quick_reproduce.out) == before


@SLOW
def test_cae_report_regenerates_without_training(quick_reproduce: QuickRun) -> None:
    out = quick_reproduce.out
    md = (out / "report.md").read_text()
    (out / "report.md").unlink()
    (out / "report.html").unlink()
    results = {k: v for k, v in _mtimes(out).items() if not k.startswith("report.")}
    proc = run_cae("report", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").is_file()
    # sections 1-6 are the same; the header and section 7 now also count the report step as done
    new = (out / "report.md").read_text()
    assert "## 7 Reproducibility" in new and "| 8 | report | done |" in new
    body = lambda t: t[t.index("## 1 "):t.index("## 7 ")]  # noqa: E731
    assert body(new) == body(md)
    assert {k: v for k, v in _mtimes(out).items() if not k.startswith("report.")} == results


# ----------------------------------------------------------------------------- no training
def test_partial_folder_reports_not_run_yet(tmp_path: Path) -> None:
    from cae.core.runs import write_json

    write_json(tmp_path / "latent.json", {**trace("reference").to_dict(), "compression": 3.0})
    html, md = write_report(tmp_path)
    text = md.read_text()
    for _, title in SECTIONS:
        assert f"## {title}" in text
    assert f"{trace('reference').latent_size:,} values" in text
    assert text.count("not run yet") >= 4  # data, reference run, study, colorization, reproducibility
    assert "not run yet" in html.read_text()


def test_reference_table_names_the_validation_subset_its_best_epoch_was_chosen_on(tmp_path: Path) -> None:
    from cae.core.config import RunConfig, save_config
    from cae.core.runs import write_json

    metrics = {"mse": 0.0036, "psnr": 24.4, "ssim": 0.8, "best_epoch": 9, "epochs": 10, "val_mse": 0.0037}
    write_json(tmp_path / "reference" / "test_metrics.json", metrics)
    write_json(tmp_path / "data.json", {"sizes": {"train": 48000, "val": 6000, "test": 6000}})
    labels = {}
    for subset in (2000, 0, 6000):  # a subset of the split, none, or all of it
        cfg = RunConfig()
        cfg.train.val_subset = subset
        save_config(cfg, tmp_path / "reference" / "config.toml")
        md = write_report(tmp_path)[1].read_text()
        labels[subset] = re.search(r"\| (best epoch[^|]*) \| 9 of 10 \|", md).group(1)
    assert labels[2000] == "best epoch (on the first 2,000 validation images)"
    assert labels[0] == labels[6000] == "best epoch (validation)"
    assert "| validation MSE (best epoch, whole split) | 0.00370 |" in md


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaeError, match="does not exist"):
        write_report(tmp_path / "nope")


def test_corrupt_results_file_spoils_only_its_section(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text("{not json")
    _, md = write_report(tmp_path)
    text = md.read_text()
    assert "could not be read" in text and "corrupt" in text
    assert "## 7 Reproducibility" in text


@pytest.mark.parametrize("r,p,words", [
    (-0.82, 0.001, ["strong", "negative", "lower", "is significant"]),
    (0.2, 0.4, ["weak", "positive", "higher", "not significant"]),
    (0.05, 0.9, ["negligible", "not significant"]),
])
def test_correlation_conclusion_follows_the_numbers(r: float, p: float, words: list[str]) -> None:
    text = correlation_conclusion({"pearson_r": r, "pearson_p": p, "spearman_r": r, "spearman_p": p, "n": 12})
    for w in words:
        assert w in text
    assert f"r = {r:.3f}" in text and f"p = {p:.3g}" in text


@pytest.mark.parametrize("value,kind,text", [
    (0.0036612, "test_mse", "0.00366"), ("27.1234", "psnr", "27.12"), (0.91234, "ssim", "0.9123"),
    (0.000123456, "pearson_p", "0.000123"), (12345.0, "params", "12,345"), (None, "mse", "—"), ("n/a", "", "n/a"),
])
def test_numbers_are_written_by_what_they_measure(value: object, kind: str, text: str) -> None:
    assert number(value, kind) == text


@pytest.mark.parametrize("seconds,text", [(None, "—"), (0.4, "0s"), (59.6, "1m00s"), (83, "1m23s"), (7509, "2h05m09s")])
def test_durations_read_as_hours_minutes_seconds(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize("error,limit,text", [
    (ValueError("size mismatch\n  full details"), 0, "size mismatch"), (RuntimeError(), 0, "RuntimeError"),
    (OSError("x" * 150), 100, "x" * 97 + "..."), (OSError("short"), 100, "short"),
])
def test_an_error_is_written_as_one_line(error: BaseException, limit: int, text: str) -> None:
    assert first_line(error, limit) == text


def test_quick_study_keeps_the_reference_and_spreads_the_latent_sizes(tmp_path: Path) -> None:
    src = study_file(STUDY_NAME)
    dest = quick_study(src, tmp_path / "quick.toml")
    full = tomllib.loads(src.read_text())
    quick = tomllib.loads(dest.read_text())
    assert {k: v for k, v in quick.items() if k != "variant"} == {k: v for k, v in full.items() if k != "variant"}
    variants = quick["variant"]
    assert variants[0] == full["variant"][0] and len(variants) == QUICK_VARIANTS
    sizes = [trace(v["arch"]).latent_size for v in variants]
    all_sizes = [trace(v["arch"]).latent_size for v in full["variant"]]
    assert len(set(sizes)) == len(sizes) and min(sizes) == min(all_sizes) and max(sizes) == max(all_sizes)


def test_study_file_is_found_and_epochs_are_checked(tmp_path: Path) -> None:
    assert study_file("architecture") == study_file("architecture.toml") == study_file("studies/architecture.toml")
    assert study_file(STUDY_NAME).is_file()
    with pytest.raises(CaeError, match="--epochs"):
        reproduce(tmp_path, epochs=0)


def test_only_unfinished_steps_run(tmp_path: Path) -> None:
    """A folder whose training steps are done runs only the rest (here: latent size and report)."""
    from cae.core.runs import write_json

    done = {"status": "done", "seconds": 1.0}
    write_json(tmp_path / "steps.json", {
        "settings": {"quick": True, "epochs": None, "limit": QUICK_LIMIT},
        "steps": {"data": done, "reference": done, "latent": {"status": "running"}, "study": done,
                  "colorize": done, "hints": {**done, "size": "quick"}, "report": {"status": "pending"}}})
    lines: list[str] = []
    state = reproduce(tmp_path, quick=True, log=lines.append)  # loads no data, trains nothing
    assert all(v["status"] == "done" for k, v in state["steps"].items() if k != "frontier")
    assert state["steps"]["frontier"]["status"] == "skipped"  # not asked for
    assert sum("skipped" in line for line in lines) == 6
    assert json_load(tmp_path / "latent.json")["latent_size"] == trace("reference").latent_size
    assert (tmp_path / "report.html").is_file()
    # the optional step not asked for reads as that, with the command that adds it, not as a failure
    report = (tmp_path / "report.md").read_text()
    assert "Pipeline steps finished: 7 of the 7 asked for." in report
    assert "Optional and not asked for: the frontier study (--frontier)" in report
    assert re.search(r"run `[^`]+ --frontier`; finished steps are not run again", report)
    assert "not asked for (--frontier)" in report  # its row in the wall-time table
    repro = json_load(tmp_path / "reproducibility.json")
    assert repro["step_seconds"]["latent"] is not None and len(repro["invocations"]) == 1


def test_frontier_asked_later_runs_it_and_the_report_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished folder without the frontier: --frontier runs that step, then the report again,
    and nothing else."""
    from cae import reproduce as rep
    from cae.core.runs import write_json

    done = {"status": "done", "seconds": 1.0}
    write_json(tmp_path / "steps.json", {
        "settings": {"quick": True, "epochs": None, "limit": QUICK_LIMIT},
        "steps": {"data": done, "reference": done, "latent": done, "study": done, "frontier": {"status": "skipped"},
                  "colorize": done, "hints": {**done, "size": "quick"}, "report": done}})
    ran: list[str] = []
    monkeypatch.setattr(rep._Pipeline, "step_frontier", lambda self: ran.append("frontier"))
    monkeypatch.setattr(rep._Pipeline, "step_report", lambda self: ran.append("report"))
    state = reproduce(tmp_path, quick=True, log=lambda s: None, frontier=True)
    assert ran == ["frontier", "report"]
    assert all(v["status"] == "done" for v in state["steps"].values())
    ran.clear()
    reproduce(tmp_path, quick=True, log=lambda s: None, frontier=True)  # all done now: nothing runs
    assert ran == []


def json_load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_an_interrupted_step_is_recorded_and_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cae import reproduce as rep
    from cae.core.runs import write_json

    done = {"status": "done", "seconds": 1.0}
    write_json(tmp_path / "steps.json", {
        "settings": {"quick": True, "epochs": None, "limit": QUICK_LIMIT},
        "steps": {"data": done, "reference": done, "latent": {"status": "pending"}, "study": done,
                  "colorize": done, "hints": done, "report": {"status": "pending"}}})

    def interrupted(self: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rep._Pipeline, "step_latent", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce(tmp_path, quick=True, log=lambda s: None)
    state = json_load(tmp_path / "steps.json")
    assert state["steps"]["latent"]["status"] == "interrupted" and state["steps"]["report"]["status"] == "pending"
    monkeypatch.undo()
    state = reproduce(tmp_path, quick=True, log=lambda s: None)
    assert state["steps"]["latent"]["status"] == "done" and "interrupted_seconds" not in state["steps"]["latent"]
    assert not (tmp_path / ".lock").exists()


@SLOW
def test_report_shows_the_colorizer_on_real_photos(quick_reproduce: QuickRun) -> None:
    """With kodak-dev beside the data (as in CI), the best colorizer is scored on it and the
    report shows the panel and one row per photo, its figures read from photos.json."""
    out = quick_reproduce.out
    result = json.loads((out / "colorize" / "photos" / "photos.json").read_text())
    md = (out / "report.md").read_text()
    section = md[md.index("### Real photos"):md.index("### Shortcomings")]
    assert f"mean gain {result['summary']['mean_gain_db']:+.2f} dB over gray" in section
    assert f"decoded at boost {result['boost']:g} as `cae colorize` does" in section  # the shipped photo boost
    assert all(f"| {r['name']} |" in section for r in result["photos"])
    assert (out / "colorize" / "photos" / "photos.png").is_file() and "photos.png" in section
    shortcomings = md[md.index("### Shortcomings"):]  # the folder by its name, not a machine's path
    folder = Path(result["folder"])
    assert f"photos of `{folder.name}`" in shortcomings and str(folder) not in shortcomings


def _first_estimate(tmp_path: Path, epochs: int | None = None) -> float:
    from cae.reproduce import Settings, _load_state, _Pipeline

    settings = Settings(quick=False, epochs=epochs, limit=0)
    state = _load_state(tmp_path / f"e{epochs}", settings, force=False)
    return _Pipeline(tmp_path / f"e{epochs}", settings, None, False, print, state)._eta(list(STEPS))


def _machine(monkeypatch: pytest.MonkeyPatch, step: float, jobs: int) -> None:
    """A machine whose study step takes `step` seconds, with `jobs` study workers."""
    import cae.experiments.bench
    import cae.experiments.sweep

    monkeypatch.setattr(cae.experiments.bench, "train_step_seconds", lambda cfg, threads=1: step)
    monkeypatch.setattr(cae.experiments.sweep, "default_jobs", lambda: jobs)


def test_the_first_estimate_scales_with_the_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any step is timed the estimate is the steps' costs at a prior rate: `--epochs 1`
    trains a tenth of the full run, and the estimate says so (plus the study's fixed costs)."""
    from cae.reproduce import PRIOR_JOBS, PRIOR_STEP_SECONDS

    _machine(monkeypatch, PRIOR_STEP_SECONDS, PRIOR_JOBS)
    full, one = _first_estimate(tmp_path), _first_estimate(tmp_path, 1)
    assert 0.12 * full < one < 0.2 * full
    assert _first_estimate(tmp_path, 10) == pytest.approx(full)


def test_the_first_estimate_follows_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first estimate of a full run is scaled by the machine's timed study step and its number
    of study workers: a step twice as slow doubles it, twice the workers halve it."""
    from cae.reproduce import PRIOR_JOBS, PRIOR_RATE, PRIOR_STEP_SECONDS

    _machine(monkeypatch, PRIOR_STEP_SECONDS, PRIOR_JOBS)
    base = _first_estimate(tmp_path)
    assert base == pytest.approx(PRIOR_RATE[False] * sum(s.cost for s in STEPS if s.key != "frontier"))
    _machine(monkeypatch, 2 * PRIOR_STEP_SECONDS, PRIOR_JOBS)
    assert _first_estimate(tmp_path / "slow") == pytest.approx(2 * base)
    _machine(monkeypatch, PRIOR_STEP_SECONDS, 2 * PRIOR_JOBS)
    assert _first_estimate(tmp_path / "wide") == pytest.approx(base / 2)


def test_the_speed_check_times_a_study_step_and_leaves_no_trace() -> None:
    """`train_step_seconds` trains a few real steps of the study's reference: a positive time, and
    the thread count and the global random state are as they were (it must not change the runs
    that follow)."""
    import torch

    from cae.experiments.bench import train_step_seconds
    from cae.experiments.study import load_study, study_file

    reference = next(v.cfg for v in load_study(study_file("architecture.toml")).variants if v.name == "reference")
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    seconds = train_step_seconds(reference, threads=1, steps=2, rounds=2, warmup=1)
    assert 0 < seconds < 5
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), state)


# ----------------------------------------------------------------------------- the hint study
def _hints_section(md: str) -> str:
    return md[md.index("## 6 Guided colorization"):md.index("## 7 Reproducibility")]


def test_report_shows_the_hint_study_read_from_its_file(tmp_path: Path) -> None:
    """The section's table and finding come from hint_study.json: chosen numbers appear, and the
    counts where the guided model beats Levin are the ones where the file says so."""
    from cae.core.runs import write_json

    photos = {"idw": {0: 0.0, 1: 0.11, 5: 0.52, 50: 1.93}, "levin": {0: 0.0, 1: 0.17, 5: 0.93, 50: 3.37},
              "automatic": {0: -0.41}, "guided": {0: -0.29, 1: 0.83, 5: 1.21, 50: 2.64}}
    cifar = {"idw": {0: 0.0, 1: 0.07, 5: 0.44, 50: 2.08}, "levin": {0: 0.0, 1: 0.09, 5: 0.61, 50: 2.86},
             "guided": {0: 0.36, 1: 0.73, 5: 1.47, 50: 3.02}}
    write_json(tmp_path / "hints" / "hint_study.json", {
        "photos": "/data/kodak-dev", "photo_images": 12, "cifar_images": 300, "counts": [0, 1, 5, 50], "draws": 1,
        "seed": 0, "patch": 7, "summary": {"photos": hint_summary(photos), "cifar10-test": hint_summary(cifar, True)}})
    section = _hints_section(write_report(tmp_path)[1].read_text())
    assert "| hints | idw: photos, gain dB | levin: photos, gain dB | automatic: photos, gain dB |" in section
    assert "| 5 | +0.52 | +0.93 | — | +1.21 | 20.44 | 20.61 | 21.47 | 20.00 |" in section
    assert "| 0 | +0.00 | +0.00 | -0.41 | -0.29 | 20.00 | 20.00 | 20.36 | 20.00 |" in section
    assert "Each image gets 1 draw of random points" in section and "12 photos of `kodak-dev`" in section and "first 300 CIFAR-10 test images" in section
    assert ("On the photos, the guided model beats Levin at 1 and 5 hints (by up to 0.66 dB, at 1); Levin is "
            "ahead at 0 and 50 (by up to 0.73 dB, at 50). With 50 hints: the guided model +2.64 dB, Levin +3.37 dB "
            "over gray; the automatic colorizer, without hints, -0.41 dB.") in section
    assert "On CIFAR-10, the guided model beats Levin at 0, 1, 5 and 50 hints (by up to 0.86 dB, at 5)." in section
    assert "hints/hint_study.png: not run yet" in section  # the figure is the study's; none was written here


def test_report_without_a_guided_model_compares_the_baselines(tmp_path: Path) -> None:
    from cae.core.runs import write_json

    assert "hint study: not run yet" in _hints_section(write_report(tmp_path)[1].read_text())
    photos = {"idw": {0: 0.0, 2: 0.31, 10: 1.02}, "levin": {0: 0.0, 2: 0.25, 10: 1.4}}
    write_json(tmp_path / "hints" / "hint_study.json", {
        "photos": "kodak", "photo_images": 2, "cifar_images": 0, "counts": [0, 2, 10], "draws": 2, "seed": 0,
        "patch": 7, "summary": {"photos": hint_summary(photos)}})
    section = _hints_section(write_report(tmp_path)[1].read_text())
    assert "No guided model was scored" in section and "CIFAR-10 PSNR" not in section
    assert ("On the photos, Levin beats inverse distance at 10 hints (by up to 0.38 dB, at 10); inverse distance is "
            "ahead at 2 (by up to 0.06 dB, at 2); the two are even at 0. With 10 hints: Levin +1.40 dB, inverse "
            "distance +1.02 dB over gray.") in section


def test_report_names_a_method_left_out_of_a_set_and_compares_with_the_others(tmp_path: Path) -> None:
    """The default reproduce study leaves Levin out on the photos: the section says so, and the
    photos' finding sets the guided model against inverse distance."""
    from cae.core.runs import write_json

    photos = {"idw": {0: 0.0, 5: 0.61}, "guided": {0: 0.12, 5: 0.47}}
    cifar = {"idw": {0: 0.0, 5: 0.3}, "levin": {0: 0.0, 5: 0.9}, "guided": {0: 0.2, 5: 1.1}}
    write_json(tmp_path / "hints" / "hint_study.json", {
        "photos": "kodak", "photo_images": 12, "cifar_images": 200, "counts": [0, 5], "draws": 1, "seed": 0,
        "patch": 7, "summary": {"photos": hint_summary(photos), "cifar10-test": hint_summary(cifar, True)}})
    section = _hints_section(write_report(tmp_path)[1].read_text())
    assert "Not scored on the photos: `levin`" in section and "Not scored on CIFAR-10" not in section
    assert ("On the photos, the guided model beats inverse distance at 0 hints (by up to 0.12 dB, at 0); inverse "
            "distance is ahead at 5 (by up to 0.14 dB, at 5).") in section
    assert "On CIFAR-10, the guided model beats Levin at 0 and 5 hints" in section
    assert "| 5 | +0.61 | +0.47 | 20.30 | 20.90 | 21.10 | 20.00 |" in section


class _Data:
    """A stand-in for the CIFAR-10 files: 10 images of each class."""

    def __init__(self) -> None:
        import torch

        self.labels = torch.arange(100) % 10
        self.images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(0))


def test_the_hints_step_runs_its_study_then_the_report_and_is_skipped_when_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quick folder whose other steps are done: the hints step writes the study at quick mode's
    size (here 3 CIFAR-10 images), notes that no guided model is shipped, and the report shows it;
    run again, nothing runs."""
    from cae import reproduce as rep
    from cae.core.runs import write_json

    done = {"status": "done", "seconds": 1.0}
    write_json(tmp_path / "steps.json", {
        "settings": {"quick": True, "epochs": None, "limit": QUICK_LIMIT},
        "steps": {**{s.key: done for s in STEPS if s.key not in ("hints", "frontier")},
                  "frontier": {"status": "skipped"}}})
    monkeypatch.setitem(rep.HINTS_SIZES, "quick", rep.HintsSize(cifar=3, photos=1, draws=1))
    monkeypatch.setattr(rep, "GUIDED_WEIGHTS", "no-such-weights")
    monkeypatch.setattr(rep._Pipeline, "data", lambda self: _Data())
    lines: list[str] = []
    state = reproduce(tmp_path, quick=True, photos=None, log=lines.append)
    assert state["steps"]["hints"]["status"] == "done" and state["steps"]["hints"]["size"] == "quick"
    result = json_load(tmp_path / "hints" / "hint_study.json")
    assert result["cifar_images"] == 3 and result["draws"] == 1 and result["photos"] is None
    assert {s["method"] for s in result["summary"]["cifar10-test"]} == {"idw", "levin", "automatic"}
    assert any("no guided colorizer is shipped" in line for line in lines)
    assert (tmp_path / "hints" / "hint_study.png").is_file()
    assert "| 50 |" in _hints_section((tmp_path / "report.md").read_text())  # the report ran after it
    before = _mtimes(tmp_path)
    reproduce(tmp_path, quick=True, photos=None, log=lambda s: None)
    assert _mtimes(tmp_path) == before


def test_the_hints_step_runs_its_study_on_one_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its pieces are too small to split, and a second thread spins on a busy machine; the thread
    count is restored after it."""
    import torch

    import cae.experiments.hint_study as hs
    from cae import reproduce as rep

    seen: list[int] = []
    monkeypatch.setattr(hs, "run_hint_study", lambda *a, **k: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(rep._Pipeline, "data", lambda self: _Data())
    settings = rep.Settings(quick=True, epochs=None, limit=QUICK_LIMIT)
    pipe = rep._Pipeline(tmp_path, settings, None, False, lambda s: None, rep._load_state(tmp_path, settings, False),
                         photos=None, guided=None)
    before = torch.get_num_threads()
    with torch_threads(2):
        pipe.step_hints()
        assert torch.get_num_threads() == 2
    assert seen == [1] and torch.get_num_threads() == before


def test_the_full_hint_study_asked_later_runs_the_step_and_the_report_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished full-mode folder whose hints step ran the default size: --hints runs it again
    at the full size, then the report; asked again, or not asked, nothing runs."""
    from cae import reproduce as rep
    from cae.core.runs import write_json

    done = {"status": "done", "seconds": 1.0}
    write_json(tmp_path / "steps.json", {
        "settings": {"quick": False, "epochs": None, "limit": 0},
        "steps": {**{s.key: done for s in STEPS}, "frontier": {"status": "skipped"},
                  "hints": {**done, "size": "default"}}})
    ran: list[str] = []

    def hints(self: rep._Pipeline) -> None:
        ran.append(f"hints {self.hints}")
        self.state["steps"]["hints"]["size"] = self.hints

    monkeypatch.setattr(rep._Pipeline, "step_hints", hints)
    monkeypatch.setattr(rep._Pipeline, "step_report", lambda self: ran.append("report"))
    reproduce(tmp_path, log=lambda s: None)
    assert ran == []
    state = reproduce(tmp_path, hints=True, log=lambda s: None)
    assert ran == ["hints full", "report"] and state["steps"]["hints"]["size"] == "full"
    ran.clear()
    reproduce(tmp_path, hints=True, log=lambda s: None)
    reproduce(tmp_path, log=lambda s: None)  # the full study done: the default does not replace it
    assert ran == []
