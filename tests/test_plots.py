"""cae's figures leave the caller's matplotlib alone: a run trained from a Jupyter notebook (the
inline backend) or a GUI session keeps its backend, so the user's own plots still show."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import matplotlib
    import torch
    from cae.core.plots import plot_loss, save_grid
    out = Path(sys.argv[1])
    plot_loss([{"epoch": 1, "train_loss": 0.02, "val_mse": 0.03}, {"epoch": 2, "train_loss": 0.01, "val_mse": 0.02}],
              out / "loss.png", title="t")
    save_grid([torch.rand(3, 3, 8, 8), torch.rand(3, 1, 8, 8)], ["a", "b"], out / "grid.png")
    print(matplotlib.get_backend())
""")


def test_figures_are_written_without_switching_the_backend(tmp_path: Path) -> None:
    """With the SVG backend chosen (as a notebook chooses its inline one), writing a run's PNGs
    leaves it chosen; the old module-level matplotlib.use("Agg") switched it on import."""
    env = {**os.environ, "MPLBACKEND": "svg"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "svg"
    for name in ("loss.png", "grid.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
