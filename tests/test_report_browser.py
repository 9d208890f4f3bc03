"""report.html in a real browser (headless Chromium): every picture loads, nothing overflows."""

import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from fbjax import predict
from tests import classify_util
from tests.test_predict import _circle_segmenter, _draw_skull

pytestmark = pytest.mark.xdist_group("report_browser")

# Run once the page and its pictures have loaded; the result goes into the DOM for --dump-dom.
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'),
                                               ok: i.complete && i.naturalWidth > 0}));
  const overflow = [];
  for (const el of document.querySelectorAll('td, th, .card')) {
    if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1)
      overflow.push(el.tagName + ' ' + el.textContent.slice(0, 80));
  }
  const cards = [...document.querySelectorAll('.card')].map(e => e.getBoundingClientRect());
  let overlaps = 0;
  for (let i = 0; i < cards.length; i++) for (let j = i + 1; j < cards.length; j++) {
    const a = cards[i], b = cards[j];
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 &&
        b.top < a.bottom - 1) overlaps++;
  }
  const pre = document.createElement('pre');
  pre.id = 'fbjax-check';
  pre.textContent = JSON.stringify({imgs, overflow, overlaps, cards: cards.length,
      page_overflow: document.documentElement.scrollWidth > window.innerWidth + 1});
  document.body.appendChild(pre);
});
</script>"""


def find_chromium():
  for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
    if path := shutil.which(name):
      return path
  return None


def chromium(args, tmp_path, timeout=120):
  exe = find_chromium()
  flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--window-size=1280,2400"]
  return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=timeout,
                        check=False)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("long names")
  rng = np.random.default_rng(0)
  for i in range(16):
    name = (f"Patient_{i:04d}_" + "TransThalamicPlaneAcquiredOnTheSecondVisit" * (1 + i % 3)
            + ("" if i % 2 else " with spaces é") + ".png")
    img = rng.integers(0, 200, (80 + 7 * i, 120), dtype=np.uint8)
    _draw_skull(img)
    cv2.imwrite(str(d / name), img)
  (d / ("Unreadable_" + "x" * 150 + ".png")).write_bytes(b"")
  # A classifier of the aligned head: the cards show the crop beside the overlay.
  workdir = classify_util.fake_workdir(tmp_path_factory.mktemp("cls"),
                                       classify_util.aligned_config((24, 32)))
  out = tmp_path_factory.mktemp("report out")
  predict.run(workdir, None, d, out, batch_size=4, segmenter=_circle_segmenter(),
              pixel_spacing_mm=1.0, num_overlays=2, num_report_images=6, num_saliency=2,
              progress=False, log=lambda s: None)
  return out


def test_report_pictures_load_and_nothing_overflows(report_dir, tmp_path):
  if find_chromium() is None:
    from tests.conftest import skip_or_fail

    skip_or_fail("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
  html = (report_dir / "report.html").read_text(encoding="utf-8")
  check = report_dir / "_browser_check.html"      # beside report.html: same relative links
  check.write_text(html.replace("</body>", CHECK + "</body>"), encoding="utf-8")
  try:
    r = chromium(["--virtual-time-budget=20000", "--dump-dom", check.as_uri()], tmp_path)
  finally:
    check.unlink()
  m = re.search(r'<pre id="fbjax-check">(.*?)</pre>', r.stdout, re.S)
  assert m, f"no result from chromium (rc {r.returncode}): {r.stderr[-2000:]}"
  got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")
                   .replace("&lt;", "<").replace("&gt;", ">"))
  srcs = [i["src"] for i in got["imgs"]]
  assert sum(s.startswith("overlays/") for s in srcs) == 12       # 6 most abnormal + 6 unsure
  assert sum(s.startswith("crops/") for s in srcs) == 12          # each beside its overlay
  assert sum(s.startswith("report_files/occlusion_") for s in srcs) == 2
  assert [i for i in got["imgs"] if not i["ok"]] == []            # every picture loaded
  assert got["overflow"] == [] and got["overlaps"] == 0 and not got["page_overflow"]
  assert got["cards"] == 14
