"""The study report: report.html (self-contained) and report.md, generated from the result files.

Nothing in the text is typed in: every number is read from the files the pipeline wrote
(data.json, latent.json, reference/, study/, colorize/, reproducibility.json, steps.json).
A part whose files do not exist yet renders as "not run yet", so `cae report` works on a
partial folder at any time.

The report is built once as a list of blocks (headings, paragraphs, tables, figures,
included Markdown) and rendered twice: to Markdown (images referenced by relative path)
and to HTML (images embedded as base64 data URIs, inline CSS, no external resources).
"""

from __future__ import annotations

import base64
import csv
import html
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import markdown as md_lib

from cae import runs
from cae.errors import CaeError

SECTIONS = (
    ("data", "1 Data and split"),
    ("reference", "2 Reference CAE"),
    ("study", "3 Architecture study"),
    ("colorize", "4 Colorization"),
    ("reproducibility", "5 Reproducibility"),
)
NOT_RUN = "not run yet"
TITLE = "Convolutional autoencoders on CIFAR-10"


# ----------------------------------------------------------------------------- blocks
@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    """Plain text (escaped in HTML); `code` spans in backticks are kept as code."""

    text: str


@dataclass
class Fragment:
    """Markdown written by another step (a conclusion, shortcomings.md), included as is."""

    text: str
    source: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: list[bool] = field(default_factory=list)  # right-align these columns


@dataclass
class Figure:
    path: Path  # absolute, for embedding
    rel: str  # relative to the report folder, for Markdown
    caption: str


@dataclass
class Missing:
    text: str


@dataclass
class Code:
    text: str


Block = Heading | Para | Fragment | Table | Figure | Missing | Code


# ----------------------------------------------------------------------------- formatting
def fmt(value: Any, kind: str = "") -> str:
    """Format a number for the report by what it measures (`kind`: a column or key name)."""
    if value is None or value == "" or value == "-":
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    k = kind.lower()
    if not math.isfinite(value):
        return str(value)
    if "mse" in k and "ratio" not in k:
        return f"{value:.5f}"
    if "psnr" in k:
        return f"{value:.2f}"
    if "ssim" in k:
        return f"{value:.4f}"
    if k.endswith("_p") or k == "p":
        return f"{value:.3g}"
    if "second" in k:
        return f"{value:.1f}"
    if "ratio" in k or "compression" in k or "gain" in k or k.endswith("_r"):
        return f"{value:.2f}"
    if "colorfulness" in k:
        return f"{value:.1f}"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"


def seconds(value: Any) -> str:
    """Wall time as '1m23s' (or '—')."""
    if value is None:
        return "—"
    s = max(0, round(float(value)))
    m, sec = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def shape(s: Iterable[int]) -> str:
    return "×".join(str(int(x)) for x in s)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def strength(r: float) -> str:
    """A correlation's strength in words (|r| >= 0.7 strong, 0.4 moderate, 0.1 weak; as cae.study says it)."""
    a = abs(r)
    for limit, word in ((0.7, "strong"), (0.4, "moderate"), (0.1, "weak")):
        if a >= limit:
            return word
    return "negligible"


def correlation_conclusion(c: dict[str, Any], x: str = "latent size", y: str = "test MSE",
                           alpha: float = 0.05) -> str:
    """One paragraph on a correlation: its sign, strength and significance, from the numbers."""
    r, p, rho, q, n = c["pearson_r"], c["pearson_p"], c["spearman_r"], c["spearman_p"], c["n"]
    if not math.isfinite(r):
        return f"The correlation between {x} and {y} is undefined over these {n} variants (a constant column)."
    scale = ""
    if x.startswith("log ") and y.startswith("log "):  # the study correlates logarithms
        x, y, scale = x[4:], y[4:], "on log scales "
    sign = "negative" if r < 0 else "positive"
    trend = (f"larger {x} goes with lower {y}" if r < 0 else f"larger {x} goes with higher {y}")
    sig = (f"significant at the {alpha:.0%} level (p = {p:.3g})" if p < alpha
           else f"not significant at the {alpha:.0%} level (p = {p:.3g})")
    text = (f"Over {n} variants, {x} and {y} have a {strength(r)} {sign} linear correlation "
            f"{scale}(Pearson r = {r:.3f}): {trend}. It is {sig}. ")
    rank_sig = "significant" if q < alpha else "not significant"
    text += (f"The rank correlation agrees in sign (Spearman ρ = {rho:.3f}, p = {q:.3g}, {rank_sig})."
             if (rho < 0) == (r < 0) else
             f"The rank correlation has the opposite sign (Spearman ρ = {rho:.3f}, p = {q:.3g}, {rank_sig}), "
             "so the relation is not monotonic.")
    if n < 8:
        text += f" With only {n} points the p-values are rough."
    return text


def _prose(md_text: str, demote: int = 2) -> str:
    """The text of a Markdown file without its tables and title, headings demoted by `demote`."""
    out, fence = [], False
    for line in md_text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and line.lstrip().startswith(("|", "![")):
            continue  # tables are rendered from the CSV, figures embedded by the report itself
        m = re.match(r"^(#{1,6})\s", line) if not fence else None
        if m:
            if len(m.group(1)) == 1:
                continue  # the file's title; the report section has its own
            line = "#" * min(6, len(m.group(1)) + demote) + line[len(m.group(1)):]
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


# ----------------------------------------------------------------------------- the content
class _Builder:
    """Collects the report's blocks from the files under `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.blocks: list[Block] = []

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figure(self, rel: str, caption: str) -> None:
        path = self.root / rel
        if path.is_file():
            self.add(Figure(path, rel, caption))
        else:
            self.add(Missing(f"{rel}: {NOT_RUN}"))

    def section(self, key: str, title: str, body: Callable[[], None]) -> None:
        self.add(Heading(2, title, key))
        try:
            body()
        except CaeError as e:  # a corrupt file spoils its section, not the report
            self.add(Missing(f"this section could not be read: {e}"))
        except (KeyError, ValueError, TypeError, IndexError) as e:
            self.add(Missing(f"this section could not be read: unexpected content ({type(e).__name__}: {e})"))

    def json(self, rel: str) -> dict | None:
        path = self.root / rel
        return runs.read_json(path) if path.is_file() else None

    def csv_table(self, rel: str, columns: list[str] | None, caption: str,
                  keep: Callable[[dict], bool] = lambda r: True) -> list[dict[str, str]]:
        rows = [r for r in read_csv(self.root / rel) if keep(r)]
        if not rows:
            return rows
        cols = [c for c in columns if c in rows[0]] if columns else list(rows[0])
        cells = [[fmt(r.get(c, ""), c) for c in cols] for r in rows]
        numeric = [all(_is_number(row[i]) or row[i] == "—" for row in cells) for i in range(len(cols))]
        self.add(Table([HEADERS.get(c, c.replace("_", " ")) for c in cols], cells, caption, numeric))
        return rows


def build(root: Path) -> list[Block]:
    """All blocks of the report for the results folder `root`."""
    b = _Builder(root)
    steps = b.json("steps.json") or {}
    settings = steps.get("settings", {})
    b.add(Heading(1, TITLE))
    intro = f"Results folder `{root.name}`, report generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    if settings.get("quick"):
        intro += (f" Quick mode: a stratified subset of {fmt(settings.get('limit'))} images and few epochs, "
                  "so the figures show that the pipeline works, not what the models can do.")
    b.add(Para(intro))
    done = [k for k, v in steps.get("steps", {}).items() if v.get("status") == "done"]
    if steps:
        b.add(Para(f"Pipeline steps finished: {len(done)} of {len(steps.get('steps', {}))}."))
    sections = {"data": _data, "reference": _reference, "study": _study, "colorize": _colorize,
                "reproducibility": _reproducibility}
    for key, title in SECTIONS:
        b.section(key, title, lambda f=sections[key]: f(b))
    return b.blocks


def _data(b: _Builder) -> None:
    d = b.json("data.json")
    if d is None:
        b.add(Missing(f"data summary: {NOT_RUN} (step 1 writes data.json)"))
        return
    sizes = {k: d["sizes"][k] for k in ("train", "val", "test") if k in d["sizes"]}
    total = sum(sizes.values())
    subset = (f"a stratified subset of {fmt(d['limit'])} of them is used (quick mode), "
              if d.get("limit") else "")
    fr = d.get("fractions", [0.8, 0.1, 0.1])
    b.add(Para(f"CIFAR-10 holds {fmt(d['total_images'])} colour images of 32×32 pixels in "
               f"{len(d['classes'])} classes (read from `{d['source']}`). The official training and test "
               f"batches are pooled; {subset}each class is shuffled with split seed {d['split_seed']} and cut "
               f"{fr[0]:.0%}/{fr[1]:.0%}/{fr[2]:.0%} into training, validation and test sets, so every split "
               "holds each class in proportion. The test split is used only for the final figures; "
               "the best epoch is chosen on validation."))
    b.add(Table(["split", "images", "share"],
                [[k, fmt(v), f"{v / total:.1%}"] for k, v in sizes.items()] + [["total", fmt(total), "100.0%"]],
                "Split sizes", [False, True, True]))
    bal, counts = d["class_balance"], d.get("class_counts", {})
    splits = list(sizes)
    rows = []
    for i, name in enumerate(d["classes"]):
        row = [name]
        for s in splits:
            n = f"{fmt(counts[s][i])} " if s in counts else ""
            row.append(f"{n}({bal[s][i]:.1%})")
        rows.append(row)
    spread = {s: (min(bal[s]), max(bal[s])) for s in splits}
    b.add(Table(["class", *splits], rows, "Class balance: images per class and split (fraction of the split)",
                [False] + [True] * len(splits)))
    b.add(Para("Class fractions range " + "; ".join(f"{s} {lo:.1%}–{hi:.1%}" for s, (lo, hi) in spread.items())
               + "."))
    mean = ", ".join(f"{x:.3f}" for x in d["train_channel_mean"])
    std = ", ".join(f"{x:.3f}" for x in d["train_channel_std"])
    norm = ("pixel values are divided by 255, so inputs and targets lie in [0, 1] and the MSE is in those units"
            if d["normalize"] == "unit" else
            "inputs are standardized per channel with the training split's mean and standard deviation "
            "(targets stay in [0, 1])")
    b.add(Para(f"Normalization (`normalize = \"{d['normalize']}\"`): {norm}. "
               f"Training split channel means (R, G, B) {mean}; standard deviations {std}."))


def _reference(b: _Builder) -> None:
    lat = b.json("latent.json")
    if lat is None:
        b.add(Missing(f"latent-size computation: {NOT_RUN} (step 3 writes latent.json)"))
    else:
        b.add(Para(f"Architecture `{lat['spec']}`. The size of a convolution's output follows "
                   "C·((W−K+2P)/S+1)² for C filters of size K, stride S and padding P on a W×W input; "
                   "the formula column applies it layer by layer."))
        rows = [[r["stage"], f"`{r['layer']}`", shape(r["shape"]), fmt(r["size"]), fmt(r["params"]),
                 r["formula"] or "—"] for r in lat["trace"]]
        b.add(Table(["stage", "layer", "output C×H×W", "size", "params", "size formula"], rows,
                    "Layer table of the reference CAE", [False, False, True, True, True, False]))
        comp = lat.get("compression", 3072 / lat["latent_size"])
        b.add(Para(f"Latent code: {shape(lat['latent_shape'])} = {fmt(lat['latent_size'])} values, "
                   f"a compression of {comp:.2f}× of the {fmt(3 * 32 * 32)} input values. "
                   f"Parameters: {fmt(lat['params'])}; multiply-adds per image: {fmt(lat['macs'])}."))
    t = b.json("reference/test_metrics.json")
    if t is None:
        b.add(Missing(f"reference training run: {NOT_RUN} (step 2 trains reference/)"))
        return
    b.add(Table(["metric", "value"], [
        ["test MSE", fmt(t["mse"], "mse")], ["test PSNR (dB)", fmt(t["psnr"], "psnr")],
        ["test SSIM", fmt(t["ssim"], "ssim")], ["best epoch (validation)", f"{t['best_epoch']} of {t['epochs']}"],
        ["validation MSE (best epoch)", fmt(t.get("val_mse"), "mse")],
        ["training time", seconds(t.get("train_seconds"))], ["parameters", fmt(t.get("params"))],
        ["device / precision", f"{t.get('device', '—')} / {t.get('precision', '—')}"],
    ], "Reference CAE on the test split", [False, True]))
    b.add(Para(f"The reference CAE reaches a test MSE of {fmt(t['mse'], 'mse')} "
               f"(PSNR {fmt(t['psnr'], 'psnr')} dB, SSIM {fmt(t['ssim'], 'ssim')}) after {t['epochs']} epochs."))
    b.figure("reference/loss.png", "Reference CAE: training and validation MSE per epoch (log scale).")
    b.figure("reference/samples.png", "Reference CAE: test images (top) and their reconstructions (bottom).")


HEADERS = {"latent_shape": "latent C×H×W", "latent_size": "latent size", "params": "params", "macs": "MACs",
           "train_seconds": "train s", "val_mse": "val MSE", "test_mse": "test MSE", "psnr": "PSNR dB",
           "ssim": "SSIM", "pca_mse": "PCA MSE", "ratio_to_pca": "CAE/PCA", "mse": "MSE", "chroma_mse": "chroma MSE",
           "colorfulness_truth": "colorfulness (truth)", "colorfulness_ratio": "colorfulness ratio",
}
STUDY_COLUMNS = ["name", "axis", "latent_shape", "latent_size", "compression", "params", "macs", "epochs",
                 "test_mse", "psnr", "ssim", "pca_mse", "ratio_to_pca", "train_seconds"]


def _is_pca(r: dict) -> bool:
    return r.get("kind") == "pca" if r.get("kind") else r.get("name", "").startswith("pca-")


def _study(b: _Builder) -> None:
    if not (b.root / "study/results.csv").is_file():
        b.add(Missing(f"architecture study: {NOT_RUN} (step 4 writes study/results.csv)"))
        return
    rows = b.csv_table("study/results.csv", STUDY_COLUMNS,
                       "Architecture study: one row per variant (MSE, PSNR and SSIM on the test split; "
                       "pca_mse: PCA with as many components as the latent size)",
                       keep=lambda r: not _is_pca(r))
    if rows and "arch" in rows[0]:
        b.add(Table(["name", "architecture"], [[r["name"], f"`{r['arch']}`"] for r in rows],
                    "The variants' architecture specs"))
    b.csv_table("study/results.csv", ["name", "latent_size", "test_mse", "psnr", "ssim"],
                "PCA baseline: the best linear code of the same size", keep=_is_pca)
    b.figure("study/mse_vs_latent.png", "Test MSE against latent size; the line is PCA with the same number "
             "of components (the linear baseline).")
    b.figure("study/mse_vs_params.png", "Test MSE against the number of parameters.")
    c = b.json("study/correlation.json")
    if c is None:
        b.add(Missing(f"study/correlation.json: {NOT_RUN}"))
    else:
        _correlation(b, c)
    res = b.root / "study/results.md"
    if res.is_file():
        text = _subsection(res.read_text(), "conclusion") or _prose(res.read_text())
        if text:
            b.add(Fragment(text, "study/results.md (conclusion)"))


def _label(name: str) -> str:
    name = name.replace("_", " ").replace("mse", "MSE")
    return re.sub(r"\bparams\b", "parameter count", name)


def _correlation(b: _Builder, c: dict) -> None:
    """The correlation table (latent size, and parameters if given) and the generated conclusion."""
    pairs = [(c, _label(c.get("x", "latent size")), _label(c.get("y", "test MSE")))]
    if isinstance(c.get("params"), dict):
        p = c["params"]
        pairs.append((p, _label(p.get("x", "params")), _label(p.get("y", c.get("y", "test MSE")))))
    rows = []
    for cc, x, y in pairs:
        if cc.get("pearson_r") is None:
            rows.append([f"{x} vs {y}", "—", "—", "—", "—", fmt(cc.get("n"), "n")])
            continue
        rows.append([f"{x} vs {y}", f"{cc['pearson_r']:.3f}", f"{cc['pearson_p']:.3g}",
                     f"{cc['spearman_r']:.3f}", f"{cc['spearman_p']:.3g}", fmt(cc["n"])])
    b.add(Table(["pair", "Pearson r", "p-value", "Spearman ρ", "p-value", "n"], rows,
                "Correlation over the conv variants", [False] + [True] * 5))
    for cc, x, y in pairs:
        if cc.get("pearson_r") is None:
            b.add(Para(f"{x} vs {y}: no correlation was computed over these {cc.get('n')} variants (it needs "
                       "at least 3 variants whose values differ)."))
        else:
            b.add(Para(correlation_conclusion(cc, x, y)))


def _subsection(md_text: str, word: str) -> str:
    """The body of the first heading containing `word` (up to the next heading of its level or above)."""
    lines = md_text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#{1,6})\s+(.*)", line)
        if m and word in m.group(2).lower():
            level, body = len(m.group(1)), []
            for nxt in lines[i + 1:]:
                m2 = re.match(r"^(#{1,6})\s", nxt)
                if m2 and len(m2.group(1)) <= level:
                    break
                body.append(nxt)
            return _prose("\n".join(body))
    return ""


def _colorize(b: _Builder) -> None:
    root = b.root / "colorize"
    if not (root / "results.csv").is_file():
        b.add(Missing(f"colorization study: {NOT_RUN} (step 5 writes colorize/results.csv)"))
        return
    b.add(Para("The network sees only the luma Y = 0.299 R + 0.587 G + 0.114 B of a test image and predicts "
               "its colours, either RGB directly or the chrominance merged with the given luma; the baselines "
               "need no training."))
    b.csv_table("colorize/results.csv", None, "Colorization runs against the baselines (test split)")
    base = b.json("colorize/baselines.json")
    if base:
        _baselines_table(b, base)
    runs_ = sorted(p.parent for p in root.glob(f"*/{runs.TEST_METRICS}"))
    colour_rows = []
    for run in runs_:
        t = runs.read_json(run / runs.TEST_METRICS)
        if "colorfulness" in t:
            truth = t.get("colorfulness_truth")
            ratio = f"{t['colorfulness'] / truth:.0%}" if truth else "—"
            colour_rows.append([run.name, str(t.get("target", "—")), fmt(t["mse"], "mse"),
                                fmt(t.get("chroma_mse"), "mse"), fmt(t["colorfulness"], "colorfulness"),
                                fmt(truth, "colorfulness"), ratio])
    if colour_rows:
        b.add(Table(["run", "target", "test MSE", "chroma MSE", "colorfulness", "truth", "ratio"], colour_rows,
                    "Colorfulness (Hasler and Süsstrunk, 0–255 scale) of the predictions against the ground "
                    "truth: a ratio well below 100% means washed-out colours", [False, False] + [True] * 5))
    res = root / "results.md"
    if res.is_file():
        text = _prose(res.read_text())
        if text:
            b.add(Fragment(text, "colorize/results.md"))
    b.figure("colorize/samples.png", "Colorization samples: gray input, the runs' predictions and the truth.")
    for run in runs_:
        if (run / "samples.png").is_file():
            b.figure(f"colorize/{run.name}/samples.png", f"Run `{run.name}`: gray input, prediction, ground truth.")
    b.add(Heading(3, "Shortcomings"))
    sc = root / "shortcomings.md"
    if sc.is_file():
        b.add(Fragment(_prose(sc.read_text(), demote=2), "colorize/shortcomings.md"))
    else:
        b.add(Missing(f"colorize/shortcomings.md: {NOT_RUN}"))


def _baselines_table(b: _Builder, base: dict) -> None:
    """baselines.json as a table: one row per baseline, one column per metric."""
    items = base.get("baselines", base) if isinstance(base.get("baselines"), dict) else base
    if all(isinstance(v, dict) for v in items.values()):
        cols = list(dict.fromkeys(k for v in items.values() for k, x in v.items() if not isinstance(x, (dict, list))))
        rows = [[name, *(fmt(v.get(c), c) for c in cols)] for name, v in items.items()]
        b.add(Table(["baseline", *(HEADERS.get(c, c.replace("_", " ")) for c in cols)], rows, "Baselines (colorize/baselines.json)",
                    [False] + [True] * len(cols)))
    else:
        rows = [[k, fmt(v, k)] for k, v in items.items() if not isinstance(v, (dict, list))]
        b.add(Table(["baseline", "value"], rows, "Baselines (colorize/baselines.json)", [False, True]))


def _reproducibility(b: _Builder) -> None:
    r = b.json("reproducibility.json")
    steps = (b.json("steps.json") or {}).get("steps", {})
    if r is None:
        b.add(Missing(f"reproducibility record: {NOT_RUN} (cae reproduce writes reproducibility.json)"))
    else:
        b.add(Para("The command that produced these results (run it again in the same folder to resume; "
                   "finished steps are skipped):"))
        b.add(Code(r["command"]))
        if len(r.get("invocations", [])) > 1:
            b.add(Table(["started (UTC)", "command"], [[i["started"], f"`{i['command']}`"]
                                                       for i in r["invocations"]], "Every invocation"))
        b.add(Table(["package", "version"], [[k, v] for k, v in r["versions"].items()], "Versions"))
        m = r["machine"]
        b.add(Table(["property", "value"], [[k.replace("_", " "), "—" if v is None else str(v)] for k, v in m.items()],
                    "Machine"))
        seeds = r.get("seeds", {})
        if seeds:
            b.add(Table(["run folder", "split seed", "training seed"],
                        [[k, str(v["split_seed"]), str(v["train_seed"])] for k, v in seeds.items()],
                        "Seeds of every run (from each run's config.toml)", [False, True, True]))
    if steps:
        from cae.reproduce import STEPS

        order = [s.key for s in STEPS if s.key in steps] + [k for k in steps if k not in {s.key for s in STEPS}]
        titles = {s.key: s.title for s in STEPS}
        rows = []
        for i, k in enumerate(order, 1):
            v = steps[k]
            status = v.get("status", "pending")
            if k == "report" and status == "running":
                status = "writing this report"
            rows.append([f"{i}", titles.get(k, k), status, seconds(v.get("seconds")), v.get("finished", "—")])
        total = sum(v.get("seconds") or 0 for v in steps.values())
        rows.append(["", "total", "", seconds(total), ""])
        b.add(Table(["#", "step", "status", "wall time", "finished (UTC)"], rows, "Wall time per step",
                    [True, False, False, True, False]))


# ----------------------------------------------------------------------------- Markdown
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    """Markdown with images referenced by relative path."""
    out: list[str] = []
    n_fig = 0
    for blk in blocks:
        if isinstance(blk, Heading):
            out.append(f"{'#' * blk.level} {blk.text}")
        elif isinstance(blk, Para):
            out.append(blk.text)
        elif isinstance(blk, Fragment):
            out.append(blk.text)
        elif isinstance(blk, Missing):
            out.append(f"> **{blk.text}**" if NOT_RUN in blk.text else f"> {blk.text}")
        elif isinstance(blk, Code):
            out.append(f"```\n{blk.text}\n```")
        elif isinstance(blk, Table):
            lines = [f"*{blk.caption}*", ""] if blk.caption else []
            align = [("---:" if (blk.numeric[i] if i < len(blk.numeric) else False) else "---")
                     for i in range(len(blk.headers))]
            lines.append("| " + " | ".join(_md_cell(h) for h in blk.headers) + " |")
            lines.append("|" + "|".join(align) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in blk.rows]
            out.append("\n".join(lines))
        elif isinstance(blk, Figure):
            n_fig += 1
            out.append(f"![Figure {n_fig}]({blk.rel})\n\n*Figure {n_fig}: {blk.caption}*")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML
CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --soft:#f6f8fa; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; color:var(--ink); background:#fff;
  font:16px/1.55 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 2rem 1.5rem 4rem; }
h1 { font-size: 2rem; margin: 0 0 .5rem; }
h2 { font-size: 1.45rem; margin-top: 2.6rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.15rem; margin-top: 1.8rem; }
h4, h5, h6 { font-size: 1rem; margin-top: 1.3rem; }
p { margin: .7rem 0; }
code { font: .88em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft);
  padding: .1em .35em; border-radius: 4px; }
pre { background: var(--soft); padding: .9rem 1rem; border-radius: 6px; overflow-x: auto; }
pre code { background: none; padding: 0; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: .6rem 1.2rem;
  margin: 1.2rem 0; }
nav.toc ul { margin: .3rem 0; padding-left: 0; list-style: none; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
.table-wrap { overflow-x: auto; margin: 1rem 0 1.4rem; }
table { border-collapse: collapse; font-size: .9rem; min-width: 40%; }
caption { caption-side: top; text-align: left; color: var(--muted); font-style: italic; padding: 0 0 .4rem; }
th, td { border: 1px solid var(--line); padding: .35rem .65rem; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4fb; }
td:first-child { white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1.4rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .45rem; }
.missing { border-left: 4px solid #d4a72c; background: #fff8c5; padding: .55rem .9rem; border-radius: 4px;
  margin: .8rem 0; }
.fragment { border-left: 4px solid var(--line); padding: .1rem 1rem; margin: 1rem 0; }
.fragment .source { color: var(--muted); font-size: .8rem; margin: .3rem 0; }
footer { color: var(--muted); font-size: .85rem; margin-top: 3rem; border-top: 1px solid var(--line);
  padding-top: .8rem; }
"""

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


def _inline(text: str) -> str:
    """Escape plain text for HTML, turning `code` spans into <code>."""
    parts = re.split(r"`([^`]+)`", text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def data_uri(path: Path) -> str:
    """The file as a base64 data URI (the HTML report loads nothing from outside itself)."""
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _fragment_html(text: str) -> str:
    body = md_lib.markdown(text, extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    # a fragment must not load anything from outside: drop remote images, embed local ones
    return re.sub(r'<img[^>]*src="(?!data:)[^"]*"[^>]*>', "", body)


def to_html(blocks: list[Block]) -> str:
    """A self-contained HTML page: inline CSS, images as data URIs, no external resources."""
    body: list[str] = []
    n_fig = 0
    title = next((b.text for b in blocks if isinstance(b, Heading) and b.level == 1), TITLE)
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    for blk in blocks:
        if isinstance(blk, Heading):
            anchor = f' id="{html.escape(blk.anchor)}"' if blk.anchor else ""
            body.append(f"<h{blk.level}{anchor}>{_inline(blk.text)}</h{blk.level}>")
            if blk.level == 1 and toc:
                items = "".join(f'<li><a href="#{html.escape(h.anchor)}">{_inline(h.text)}</a></li>' for h in toc)
                body.append(f'<nav class="toc"><strong>Contents</strong><ul>{items}</ul></nav>')
        elif isinstance(blk, Para):
            body.append(f"<p>{_inline(blk.text)}</p>")
        elif isinstance(blk, Fragment):
            body.append(f'<div class="fragment"><p class="source">from {html.escape(blk.source)}</p>'
                        f"{_fragment_html(blk.text)}</div>")
        elif isinstance(blk, Missing):
            body.append(f'<p class="missing">{_inline(blk.text)}</p>')
        elif isinstance(blk, Code):
            body.append(f"<pre><code>{html.escape(blk.text)}</code></pre>")
        elif isinstance(blk, Table):
            def cls(i: int) -> str:
                return ' class="num"' if i < len(blk.numeric) and blk.numeric[i] else ""
            head = "".join(f"<th{cls(i)}>{_inline(h)}</th>" for i, h in enumerate(blk.headers))
            rows = "".join("<tr>" + "".join(f"<td{cls(i)}>{_inline(c)}</td>" for i, c in enumerate(r)) + "</tr>"
                           for r in blk.rows)
            cap = f"<caption>{_inline(blk.caption)}</caption>" if blk.caption else ""
            body.append(f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
                        f"<tbody>{rows}</tbody></table></div>")
        elif isinstance(blk, Figure):
            n_fig += 1
            body.append(f'<figure><img src="{data_uri(blk.path)}" alt="Figure {n_fig}: {html.escape(blk.caption)}">'
                        f"<figcaption><strong>Figure {n_fig}.</strong> {_inline(blk.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body)
            + "\n<footer>Generated by <code>cae report</code> from the result files in this folder; "
              "regenerate with <code>cae report DIR</code>.</footer>\n</main>\n</body>\n</html>\n")


# ----------------------------------------------------------------------------- public API
def write_report(dir: str | Path) -> tuple[Path, Path]:
    """Write DIR/report.html and DIR/report.md from the results under DIR; return their paths.

    Works on a partial folder: parts not run yet say so. Nothing is trained or recomputed.
    """
    root = Path(dir)
    if not root.is_dir():
        raise CaeError(f"results folder {root} does not exist; run `cae reproduce --out {root}` first")
    blocks = build(root)
    html_path, md_path = root / "report.html", root / "report.md"
    runs.atomic_write_text(md_path, to_markdown(blocks))
    runs.atomic_write_text(html_path, to_html(blocks))
    return html_path, md_path
