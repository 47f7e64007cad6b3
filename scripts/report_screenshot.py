"""A screenshot of an evaluation report's operating points: the verdict, the "Operating points"
table and the two threshold plots with the points marked, cut out of report.html as rendered by
headless Chromium (the page's own markup and stylesheet, nothing redrawn).

    python3 scripts/report_screenshot.py [REPORT_DIR] [OUT_PNG]

Defaults: data/demo/reports → docs/img/report-operating-points.png.
"""
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
report = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "data/demo/reports")
out = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / "docs/img/report-operating-points.png")
html = (report / "report.html").read_text()


def cut(start, end):
    i = html.index(start)
    return html[i:html.index(end, i) + len(end)]


head = html[:html.index("<body")]
verdict = cut('<section id="verdict"', "</section>")
table = cut('<table class="operating">', "</table>")
plots = "".join(re.findall(r'<figure class="plot" data-plot="threshold-[a-z0-9]+">.*?</figure>', html, re.S))
page = f'{head}<body><main>{verdict}<h2>Operating points</h2>{table}<div class="plots">{plots}</div></main></body></html>'
with tempfile.TemporaryDirectory() as d:
    p = pathlib.Path(d) / "page.html"
    p.write_text(page)
    css = report / "report.css"
    if css.exists():
        shutil.copy(css, pathlib.Path(d) / "report.css")
    chromium = shutil.which("chromium") or shutil.which("google-chrome") or "chromium"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--hide-scrollbars", "--disable-gpu",
                    "--window-size=1280,1180", f"--screenshot={out}", p.as_uri()],
                   check=True, stderr=subprocess.DEVNULL)
print(out)
