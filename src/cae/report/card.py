"""Model cards: one short Markdown page per shipped model, generated, never typed by hand.

A card is built from the model's own folder (config.toml, test_metrics.json, decoding.json)
and the recorded results of the latest full `cae reproduce` (the snapshot in docs/results/,
for the kodak-dev figures). It is written beside the weights as MODEL_CARD.md, so it ships
with the package: `cae info --model NAME` prints it and the web page shows it. A test
regenerates every card and compares, so a card cannot drift from its files; `cae report DIR
--readme README.md` rewrites them with the README's table, and `python -m cae.report.card`
(in the checkout) from the committed snapshot, after the weights alone have changed.
"""

from __future__ import annotations

from pathlib import Path

from cae.core import runs
from cae.core.config import SHIPPED_CONFIGS, RunConfig, load_config
from cae.core.data import SPLIT_FRACTIONS
from cae.core.text import duration, number
from cae.errors import CaeError

CARD = "MODEL_CARD.md"
SHIPPED_MODELS = ("reference", "colorizer", "guided")  # the folders under cae/weights/
PHOTOS = Path("colorize") / "photos" / "photos.json"  # in a results folder: the colorizer on kodak-dev
RESULTS = Path("docs") / "results"  # relative to the checkout: the recorded results
WEIGHTS = Path("src") / "cae" / "weights"  # relative to the checkout: where the cards are written
WRONG_HUE = 1.0  # a photo losing to gray while given at least its own colorfulness: a confident wrong hue


def model_card(model_dir: Path, results: Path) -> str:
    """The card of the shipped model in `model_dir`, its photo figures read from the results
    folder (or snapshot) `results`."""
    model_dir = Path(model_dir)
    for name in ("config.toml", runs.TEST_METRICS):
        if not (model_dir / name).is_file():
            raise CaeError(f"{model_dir / name} not found: a model card needs a shipped model's folder "
                           f"(one of {', '.join(SHIPPED_MODELS)} under cae/weights/)")
    cfg = load_config(model_dir / "config.toml")
    t = runs.read_json(model_dir / runs.TEST_METRICS, ("mse", "psnr", "ssim"))
    colour = cfg.task == "colorize"
    # the recorded kodak-dev figures are the automatic colorizer's: a guided one's are in docs/guided.md
    own = colour and not cfg.color.hints and (Path(results) / PHOTOS).is_file()
    photos = runs.read_json(Path(results) / PHOTOS) if own else None
    parts = [f"# Model card: {model_dir.name}",
             f"_Generated from this folder's config.toml and {runs.TEST_METRICS}"
             + (" and the recorded kodak-dev results" if photos else "")
             + "; regenerated with the README's results table, not edited by hand._",
             _purpose(cfg, t), _training(cfg, t, model_dir), _metrics(cfg, t, photos),
             _failures(cfg, t, photos), _licence()]
    return "\n\n".join(p.strip() for p in parts if p) + "\n"


def shipped_config_name(cfg: RunConfig) -> str | None:
    """The shipped config (`cae train --config NAME`) equal to `cfg`, if any."""
    for path in sorted(SHIPPED_CONFIGS.glob("*.toml")):
        if load_config(path) == cfg:
            return path.stem
    return None


def _purpose(cfg: RunConfig, t: dict) -> str:
    if cfg.color.hints:
        what = (f"Colours a gray image from hints: colours a person gives at a few points. The network sees the "
                f"luma and the hints (a chroma map and a mask) and predicts the chrominance everywhere; the image's "
                f"own luma is kept. Without hints it colours the image by itself. Architecture `{cfg.arch}`, "
                f"{number(t.get('params'))} parameters.")
        use = ("`cae colorize PHOTO --hints FILE`, `cae.Colorizer.load(guided=True)` and the web page's Guide mode "
               "use it: a person fixes the colours they know. Without hints, the automatic colorizer (`colorizer`) "
               "is the better one and the default. Its figures with hints on photos are in docs/guided.md.")
        return f"## What it does\n\n{what}\n\nIntended use: {use}"
    if cfg.task == "colorize":
        what = (f"Colours a gray image: the network sees only the luma and predicts the chrominance "
                f"({cfg.target}), which is merged with the image's own luma, so no brightness is lost. "
                f"Architecture `{cfg.arch}`, {number(t.get('params'))} parameters.")
        use = ("`cae colorize PHOTO`, `cae.Colorizer.load()` and the web page (`cae serve`) use it by default: "
               "a plausible, muted colouring of ordinary photos, and a baseline for colorization experiments. "
               "Not for recovering the true colours of a scene, for evidence, or wherever a wrong colour matters.")
    else:
        what = (f"Compresses a 32x32 colour image into a code of {number(t.get('latent_size'))} values and rebuilds "
                f"the image from it. Architecture `{cfg.arch}`, {number(t.get('params'))} parameters.")
        use = ("The reference convolutional autoencoder of the architecture study, and the web page's "
               "reconstruction view: teaching and comparing autoencoders on CIFAR-10-sized images. "
               "Not an image codec: it was neither built nor measured for compressing photos.")
    return f"## What it does\n\n{what}\n\nIntended use: {use}"


def _training(cfg: RunConfig, t: dict, model_dir: Path) -> str:
    tr = cfg.train
    split = "/".join(f"{f:.0%}" for f in SPLIT_FRACTIONS)
    name = shipped_config_name(cfg)
    command = (f"`cae train --config {name} --out runs/{model_dir.name}`" if name else
               f"`cae train --config {model_dir.name}/config.toml --out runs/{model_dir.name}` (its config.toml)")
    extras = ["flips" if getattr(tr, "flip", False) else "",
              f"shifts of up to {tr.shift} px" if getattr(tr, "shift", 0) else ""]
    augment = " and ".join(x for x in extras if x)
    return "\n".join([
        "## Training data", "",
        f"- CIFAR-10 (Krizhevsky, 2009): its 60,000 images pooled and cut {split} into training, validation "
        f"and test sets per class with split seed {cfg.data.seed}; the test split ({number(t.get('images'))} "
        "images) was used only for the figures below.",
        "- The copy used was decoded from a public copy of CIFAR-10 that stores every image as a JPEG: the "
        "pixels carry mild JPEG artefacts, so figures on it are close to, not the same as, figures on the "
        "official data (image count and class balance are exact).",
        f"- Training: {tr.epochs} epochs, batch {tr.batch_size}, learning rate {tr.lr:g} ({tr.schedule}), "
        + (f"gradient norm clipped at {tr.clip:g}, " if tr.clip else "")
        + f"{t.get('precision', tr.precision)}, seed {tr.seed}"
        + (f", augmented with {augment}" if augment else "")
        + f"; {duration(t.get('train_seconds'))} on {t.get('device', '?')} (torch {t.get('torch', '?')}).",
        f"- Reproduce: {command}.",
    ])


def _metrics(cfg: RunConfig, t: dict, photos: dict | None) -> str:
    rows = [("test MSE (pixels in [0, 1])", number(t["mse"], "mse")), ("test PSNR, dB", number(t["psnr"], "psnr")),
            ("test SSIM", number(t["ssim"], "ssim"))]
    if "colorfulness" in t and t.get("colorfulness_truth"):
        rows += [("test chroma MSE", number(t.get("chroma_mse"), "mse")),
                 ("test colorfulness / truth's", f"{t['colorfulness'] / t['colorfulness_truth']:.0%}")]
    if "boost" in t:  # how the figures above were decoded (docs/colorization.md)
        rows.append(("decoding (calibrated on the validation split)", f"boost {t['boost']:g}"
                     + (f", spread {cfg.color.spread:g}" if cfg.color.spread != 1 else "")))
    if "default_mse" in t:
        rows.append(("test MSE without the calibrated decoding (boost 0)", number(t["default_mse"], "mse")))
    lines = ["## Metrics", "", "| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    if photos is not None:
        s = photos["summary"]
        sizes = " or ".join(sorted({f"{r['width']}x{r['height']}" for r in photos["photos"]}))
        lines += ["", f"On the {s['photos']} kodak-dev photos (real photographs, {sizes}; working short side "
                      f"{photos['working_size']} px, photo boost {photos['boost']:g}, as `cae colorize` runs): PSNR "
                      f"{s['mean_gain_db']:+.2f} dB over the gray copy on average, worst {s['worst_gain_db']:+.2f} "
                      f"dB ({s['worst']}), best {s['best_gain_db']:+.2f} dB ({s['best']}); colorfulness "
                      f"{s['colorfulness_ratio']:.0%} of the photos' own."]
    elif "colorfulness" not in t:
        lines += ["", "kodak-dev: not measured for this model; the recorded results hold kodak-dev figures for "
                      "the colorizer only."]
    else:
        lines += ["", "The test figures are without hints (its automatic mode). With hints, on CIFAR-10 and on "
                      "kodak-dev photos: `cae hint-study`, figures in docs/guided.md."]
    return "\n".join(lines)


def _failures(cfg: RunConfig, t: dict, photos: dict | None) -> str:
    """Known failure modes, each with the figure that shows it."""
    lines = ["## Known failure modes", ""]
    if cfg.task == "colorize":
        truth = t.get("colorfulness_truth")
        if truth:
            lines.append(f"- Muted colour: it predicts an average of the colours it finds likely, so even with the "
                         f"decoding calibrated to restore colour it gives {t['colorfulness'] / truth:.0%} of the "
                         "true colorfulness on the test split"
                         + (f" and {photos['summary']['colorfulness_ratio']:.0%} on kodak-dev" if photos else "")
                         + ".")
        lines += _hint_failures(cfg) if cfg.color.hints else _photo_failures(photos)
    else:
        lines += [f"- Blur: the {number(t.get('latent_size'))}-value code keeps shapes rather than texture; test SSIM "
                  f"{number(t['ssim'], 'ssim')} (1 is a perfect copy), PSNR {number(t['psnr'], 'psnr')} dB.",
                  "- Out-of-distribution images: trained and measured on 32x32 CIFAR-10 images only; how it does "
                  "on other images (larger photos, drawings, text) has not been measured."]
    return "\n".join(lines)


def _hint_failures(cfg: RunConfig) -> list[str]:
    """What a guided colorizer cannot do, from how it works."""
    return [f"- Small regions: the chroma is predicted on a copy with a short side of {cfg.color.working_size} "
            "pixels and the hints are drawn there, so a region narrower than one pixel of that copy cannot get "
            "a colour of its own; colour also bleeds a little across edges where the gray image shows none.",
            "- A hint says what colour, not where a region ends: where the gray image gives no edge, a hint's "
            "colour may spread into a neighbouring object until another hint stops it."]


def _photo_failures(photos: dict | None) -> list[str]:
    """Out-of-distribution scenes and confident wrong hues, from the kodak-dev figures."""
    if photos is None:
        return ["- Real photos: not measured in the recorded results."]
    rows = photos["photos"]
    lost = sorted((r for r in rows if r["gain_db"] < 0), key=lambda r: r["gain_db"])
    wrong = [r for r in lost if r["colorfulness_ratio"] >= WRONG_HUE]

    lost_text = ", ".join(f"{r['name']} {r['gain_db']:+.2f} dB" for r in lost)
    wrong_text = ", ".join(f"{r['name']} {r['colorfulness_ratio']:.0%}" for r in wrong)
    out = [f"- Out-of-distribution scenes: it learnt colour from 32x32 objects, so a large scene is coloured by "
           f"its gray shapes; {len(lost)} of {len(rows)} kodak-dev photos come out worse than their gray copy"
           + (f" ({lost_text})." if lost else ".")]
    if wrong:
        out.append(f"- Confident wrong hues: {len(wrong)} of these are given at least as much colour as they "
                   f"really have, in the wrong hues (colorfulness against the photo's own: {wrong_text}): colour "
                   "a scene does not have costs more than gray would.")
    else:
        out.append("- Confident wrong hues: none of the photos that lose to gray was given as much colour as it "
                   "has; their losses are muted colours in the wrong place.")
    out.append("- The report of `cae reproduce` shows these photos (its figure of the real photos with the lowest "
               "and highest gain, colorize/photos/photos.png).")
    return out


def _licence() -> str:
    return "\n".join([
        "## Licence", "",
        "- Code: MIT (the package's licence, pyproject.toml).",
        "- Weights: no licence of their own has been declared; they ship inside the package under its MIT "
        "licence. They were trained on CIFAR-10, whose authors publish no formal licence and ask users to cite "
        "Krizhevsky (2009), \"Learning Multiple Layers of Features from Tiny Images\"; judge whether that fits "
        "your use.",
        "- kodak-dev (evaluation only): the Kodak Lossless True Color Image Suite, released by the Eastman Kodak "
        "Company for unrestricted use.",
    ])


# ----------------------------------------------------------------------------- files
def read_card(name: str) -> str:
    """The committed card of the shipped model `name` ('reference', 'colorizer')."""
    path = runs.shipped_run(name) / CARD
    if not path.is_file():
        raise CaeError(f"{path} is missing; regenerate it with `cae report DIR --readme README.md` in a checkout")
    return path.read_text()


def write_model_cards(results: Path, weights: Path) -> list[Path]:
    """Write MODEL_CARD.md into every shipped model's folder under `weights` from `results`."""
    written = []
    for name in SHIPPED_MODELS:
        path = Path(weights) / name / CARD
        runs.atomic_write_text(path, model_card(Path(weights) / name, results))
        written.append(path)
    return written


def write_checkout_cards(checkout: Path) -> list[Path]:
    """The cards of a source checkout (`checkout/src/cae/weights/*`) from its snapshot
    (`checkout/docs/results`)."""
    checkout = Path(checkout)
    if not (checkout / WEIGHTS).is_dir() or not (checkout / RESULTS).is_dir():
        raise CaeError(f"{checkout} is not a cae checkout (no {WEIGHTS} and {RESULTS}); run this in the "
                       "repository's root folder")
    return write_model_cards(checkout / RESULTS, checkout / WEIGHTS)


if __name__ == "__main__":  # python -m cae.report.card: the checkout's cards from its snapshot
    for card in write_checkout_cards(Path.cwd()):
        print(f"wrote {card}")
