#!/usr/bin/env bash
# The wheel, installed as a user would install it, has everything its commands read (the study
# file, the shipped weights): the tests run from the source tree and cannot see a missing
# package-data entry. Builds the wheel, installs it after the CPU torch into a fresh venv, and
# from an empty folder outside the checkout runs `cae info --config colorize-best`, `cae reproduce
# --quick` and `cae colorize` (with and without hints).
#
#   CAE_DATA_DIR  the CIFAR-10 binary folder (default: ../shared/datasets/cifar-10-batches-bin)
#   PYTHON        the interpreter for the venv (default: python3)
#   TORCH         the torch requirement (default: torch==2.13.0, the CPU wheel on the machines'
#                 disk; a looser pin lets pip resolve a multi-GB CUDA build)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
export CAE_DATA_DIR="${CAE_DATA_DIR:-$(cd "$REPO/.." && pwd)/shared/datasets/cifar-10-batches-bin}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cae-wheel-smoke.XXXXXX")"
VENV="$WORK/venv"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH  # the checkout's src/ must not stand in for the installed package

say() { echo "wheel smoke: $*"; }
fail() { echo "wheel smoke: FAILED: $*" >&2; exit 1; }

# Only the files git knows (tracked, or new and not ignored): a stale build/ or egg-info left in
# the checkout would otherwise slip old modules into the wheel.
copy_sources() {
  mkdir -p "$WORK/src"
  git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | tar -C "$REPO" --null --files-from=- --ignore-failed-read -cf - \
    | tar -C "$WORK/src" -xf -
}

build_wheel() {
  "$VENV/bin/python" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$WORK/src"
  WHEEL="$(ls "$WORK"/dist/cae-*.whl)"
  say "built $(basename "$WHEEL")"
}

# A clear message naming the missing file beats a failure deep inside a command.
check_wheel_contents() {
  "$VENV/bin/python" - "$WHEEL" <<'EOF'
import fnmatch, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
needed = ["cae/studies/*.toml", "cae/configs/colorize-best.toml", "cae/weights/colorizer/best.pt",
          "cae/weights/colorizer/config.toml", "cae/weights/reference/best.pt", "cae/weights/reference/config.toml"]
missing = [p for p in needed if not fnmatch.filter(names, p)]
if missing:
    sys.exit(f"wheel smoke: FAILED: the wheel lacks {', '.join(missing)} (pyproject.toml package-data)")
EOF
}

install() {
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "$TORCH"  # first, so the wheel's torch>=2.2 is already met
  build_wheel
  check_wheel_contents
  "$VENV/bin/python" -m pip install --quiet "$WHEEL" "$TORCH"
}

# From an empty folder outside the checkout, and the package must be the installed one.
enter_empty_folder() {
  mkdir "$WORK/run"
  cd "$WORK/run"
  local where
  where="$("$VENV/bin/python" -c 'import cae; print(cae.__file__)')"
  [[ "$where" == "$VENV"/* ]] || fail "cae imports from $where, not from the fresh venv"
}

run_quick() {
  local t0=$SECONDS
  "$VENV/bin/cae" reproduce --quick --out q || fail "cae reproduce --quick exited $?"
  [[ -s q/report.html ]] || fail "cae reproduce --quick wrote no q/report.html"
  say "cae reproduce --quick took $((SECONDS - t0)) s (wall time, installed wheel)"
}

# The docs' commands name shipped configs (`--config colorize-best`): they must load from the wheel.
run_shipped_config() {
  "$VENV/bin/cae" info --config colorize-best | grep -q "architecture: unet32" \
    || fail "cae info --config colorize-best did not load the shipped config"
  say "cae info --config colorize-best loaded the shipped config"
  "$VENV/bin/cae" info --model colorizer | grep -q "^## Known failure modes" \
    || fail "cae info --model colorizer did not print the shipped model card (MODEL_CARD.md not in the wheel?)"
  say "cae info --model colorizer printed the shipped model card"
}

run_colorize() {
  "$VENV/bin/python" -c '
import numpy as np
from PIL import Image
y, x = np.mgrid[0:48, 0:80]
gray = (128 + 60 * np.sin(x / 7.0) * np.cos(y / 5.0)).astype(np.uint8)
Image.fromarray(np.stack([gray] * 3, axis=-1)).save("photo.png")'
  "$VENV/bin/cae" colorize photo.png --out colored/ || fail "cae colorize exited $?"
  [[ -s colored/photo.png ]] || fail "cae colorize wrote no colored/photo.png"
  say "cae colorize with the shipped weights wrote colored/photo.png"
  echo '{"version": 1, "hints": [{"x": 20, "y": 24, "color": "#c02020"}]}' > hints.json
  "$VENV/bin/cae" colorize photo.png --hints hints.json --out guided/ || fail "cae colorize --hints exited $?"
  "$VENV/bin/python" -c '
import numpy as np
from PIL import Image
r, g, b = np.asarray(Image.open("guided/photo.png")).astype(int)[24, 20]
assert r > b + 20, (r, g, b)' || fail "cae colorize --hints did not turn the hinted point red (guided weights missing?)"
  say "cae colorize --hints with the shipped guided colorizer turned the hinted point red"
}

[[ -f "$CAE_DATA_DIR/data_batch_1.bin" ]] || fail "CIFAR-10 not found: no $CAE_DATA_DIR/data_batch_1.bin"
copy_sources
install
enter_empty_folder
run_shipped_config
run_colorize  # seconds; the quick pipeline takes minutes
run_quick
say "passed"
