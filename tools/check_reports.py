"""Open every report page in headless Chromium and check what a reader meets: math drawn (MathML present, no raw
$…$ left), every link and image resolving to a file, no script or stylesheet from the network, every page and
every table fitting a 1,280 px window and a 390 px phone (viewport tag, no table wider than its box), every
character of the text in some installed font (no empty boxes), and each run's damage-matched figures not crowding
their comparable points (the axes spot_utils.report.plots.damage_view gives them). Writes a screenshot of each page
at each width to build/screenshots/ (git-ignored).

    apt-get install -y chromium && pip install playwright      # once; no browser download
    python tools/check_reports.py [reports] [--chromium /usr/bin/chromium]

Exits 1 listing the problems found.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
RAW_MATH = re.compile(r"\$\$.+?\$\$|(?<![\w$])\$[^$\s](?:[^$\n]*[^$\s])?\$(?![\w$])")  # TeX left for a script to draw
WIDTH = 1280
VIEWPORTS = {"desktop": (WIDTH, 800), "phone": (390, 844)}

PAGE_FACTS = r"""() => ({
  math: document.querySelectorAll('math').length,
  text: document.body.innerText,
  width: document.documentElement.scrollWidth,
  links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  images: [...document.querySelectorAll('img')].map(i => [i.getAttribute('src').slice(0, 64), i.naturalWidth]),
  external: [...document.querySelectorAll('script[src], link[href]')].map(e => e.getAttribute('src') || e.getAttribute('href')),
  viewport: !!document.querySelector('meta[name=viewport]'),
  window: window.innerWidth,
  tables: [...document.querySelectorAll('table')].map(t => {
    let box = t.parentElement;
    while (box && box !== document.body && getComputedStyle(box).overflowX === 'visible') box = box.parentElement;
    const right = Math.min(box ? box.getBoundingClientRect().right : innerWidth, innerWidth);
    return [t.rows.length ? t.rows[0].innerText.slice(0, 48).replace(/\s+/g, ' ') : '',
            Math.round(t.getBoundingClientRect().right - right)];
  }),
})"""


def pages(reports: Path) -> list[Path]:
    return [p for p in [reports / "index.html", *sorted(reports.glob("*/*.html"))] if p.is_file()]


def problems_of(page: Path, facts: dict, needs_math: bool) -> list[str]:
    out = []
    if needs_math and facts["math"] == 0:
        out.append("no MathML element although the notebook has math")
    for raw in RAW_MATH.findall(facts["text"])[:3]:
        out.append(f"raw TeX in the text: {raw[:60]!r}")
    for url in facts["external"]:
        if urlparse(url).scheme in ("http", "https") or url.startswith("//"):
            out.append(f"external script or stylesheet {url}")
    for href in facts["links"]:
        parsed = urlparse(href)
        if parsed.scheme in ("http", "https", "mailto") or href.startswith("#"):
            continue
        target = (page.parent / unquote(parsed.path)).resolve()
        if not target.exists():
            out.append(f"broken link {href}")
    for src, width in facts["images"]:
        if not width:
            out.append(f"image not drawn: {src}")
    if not facts["viewport"]:
        out.append("no <meta name=viewport>: a phone lays the page out at desktop width")
    if facts["width"] > facts["window"]:
        out.append(f"page is {facts['width']} px wide (window {facts['window']} px)")
    for head, over in facts["tables"]:
        if over > 1:
            out.append(f"table {head!r} runs {over} px past its box (window {facts['window']} px)")
    return out


def missing_glyphs(text: str) -> list[str]:
    """Characters of the text that no installed font has (fontconfig, which Chromium's fallback uses): drawn as
    empty boxes."""
    out = []
    for ch in sorted({c for c in text if ord(c) > 0x7F and c.isprintable() and not c.isspace()}):
        found = subprocess.run(["fc-list", f":charset={ord(ch):x}", "family"], capture_output=True, text=True)
        if not found.stdout.strip():
            out.append(f"U+{ord(ch):04X} {ch!r}")
    return out


def crowded_figures(reports: Path) -> list[str]:
    """Each run's damage-matched figures (every configuration and reference) whose comparable points, with the
    origin, span less than plots.MIN_COVERAGE of an axis."""
    sys.path.insert(0, str(ROOT))
    from spot_utils.analysis.rows import to_frame
    from spot_utils.report.plots import MIN_COVERAGE, damage_view
    from spot_utils.report.tables import damage_frame
    out = []
    for metrics in sorted(reports.glob("*/metrics.json")):
        df = to_frame(json.loads(metrics.read_text()))
        if not (df.metric == "matched_excess").any():
            continue
        for c in dict.fromkeys(df.configuration.dropna()):
            for r in dict.fromkeys(df.reference.dropna()):
                view = damage_view(damage_frame(df, c, r))
                if view["coverage"] is not None and min(view["coverage"]) < MIN_COVERAGE:
                    out.append(f"{metrics.parent.name} {c} vs {r}: comparable points span "
                               f"{view['coverage'][0]:.0%} x {view['coverage'][1]:.0%} of the axes")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="?", default=str(ROOT / "reports"))
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="a local Chromium (never downloaded)")
    parser.add_argument("--screenshots", default=str(ROOT / "build" / "screenshots"))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright
    reports, shots = Path(args.reports).resolve(), Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    failures = 0
    glyph_text = ""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        for label, (width, height) in VIEWPORTS.items():
            context = browser.new_context(viewport={"width": width, "height": height}, offline=True)
            for page_path in pages(reports):
                tab = context.new_page()
                tab.goto(page_path.as_uri(), wait_until="load")
                facts = tab.evaluate(PAGE_FACTS)
                glyph_text += facts["text"]
                notebook = page_path.with_suffix(".ipynb")
                needs_math = notebook.is_file() and "$" in "".join(
                    c.get("source", "") if isinstance(c.get("source"), str) else "".join(c["source"])
                    for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "markdown")
                name = page_path.relative_to(reports).as_posix()
                tab.screenshot(path=str(shots / f"{name.replace('/', '__')}.{label}.png"))
                tab.close()
                found = problems_of(page_path, facts, needs_math)
                failures += bool(found)
                print(f"{'FAIL' if found else 'ok  '} {name} ({label} {width} px): {facts['math']} math elements, "
                      f"{len(facts['links'])} links, {len(facts['images'])} images, {facts['width']} px wide")
                for p in found:
                    print("     -", p)
            context.close()
        browser.close()
    for what, found in (("characters no font draws", missing_glyphs(glyph_text)),
                        ("crowded damage-matched figures", crowded_figures(reports))):
        failures += bool(found)
        print(f"{'FAIL' if found else 'ok  '} {what}: {len(found)}")
        for p in found:
            print("     -", p)
    print(f"screenshots in {shots}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
