"""The HTML report opens in headless Chromium without errors and every figure decodes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from orchestrator.report import build_report
from tests.conftest import require_or_skip
from tests.test_report import make_study

pytestmark = pytest.mark.integration

# Written into the DOM after load so --dump-dom shows whether each image decoded.
PROBE = """<script>
window.addEventListener("load", () => {
  const sizes = [...document.images].map(i => i.complete ? i.naturalWidth : -1);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = "IMAGES:" + sizes.join(",") + ":END";
  document.body.appendChild(out);
});
</script>"""


def chromium(html: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        shutil.which("chromium") or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        html.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(tmp_path):
    require_or_skip(
        shutil.which("chromium"), "chromium is not installed (apt-get install chromium)"
    )
    study = make_study(tmp_path / "study")
    files = build_report(study)
    html = study / "report" / "report.html"
    n_png = sum(f.suffix == ".png" for f in files)

    shot = tmp_path / "shot.png"
    run = chromium(html, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.exists(), run.stderr[-2000:]
    for bad in ("Uncaught", "Failed to load resource", "net::ERR_"):
        assert bad not in run.stderr, run.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 128).mean() > 0.01  # text and plot lines are drawn

    probed = tmp_path / "probe.html"
    probed.write_text(html.read_text().replace("</body>", PROBE + "</body>"))
    run = chromium(probed, tmp_path, "--dump-dom", "--virtual-time-budget=10000")
    match = re.search(r"IMAGES:([-0-9,]*):END", run.stdout)
    assert match, run.stdout[-1000:] + run.stderr[-2000:]
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == n_png
    assert all(w > 100 for w in widths), widths  # every embedded PNG decoded
