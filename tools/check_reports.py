"""Open every report page in headless Chromium and check what a reader meets: math drawn (MathML present, no raw
$…$ left), every link and image resolving to a file, no script or stylesheet from the network, the index fitting a
1,280 px window. Writes a full-page screenshot of each page to build/screenshots/ (git-ignored).

    apt-get install -y chromium && pip install playwright      # once; no browser download
    python tools/check_reports.py [reports] [--chromium /usr/bin/chromium]

Exits 1 listing the problems found.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
RAW_MATH = re.compile(r"\$\$.+?\$\$|(?<![\w$])\$[^$\s](?:[^$\n]*[^$\s])?\$(?![\w$])")  # TeX left for a script to draw
WIDTH = 1280

PAGE_FACTS = """() => ({
  math: document.querySelectorAll('math').length,
  text: document.body.innerText,
  width: document.documentElement.scrollWidth,
  links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  images: [...document.querySelectorAll('img')].map(i => [i.getAttribute('src').slice(0, 64), i.naturalWidth]),
  external: [...document.querySelectorAll('script[src], link[href]')].map(e => e.getAttribute('src') || e.getAttribute('href')),
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
    if page.name == "index.html" and facts["width"] > WIDTH:
        out.append(f"index is {facts['width']} px wide (window {WIDTH} px)")
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
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": WIDTH, "height": 900}, offline=True)
        for page_path in pages(reports):
            tab = context.new_page()
            tab.goto(page_path.as_uri(), wait_until="load")
            facts = tab.evaluate(PAGE_FACTS)
            notebook = page_path.with_suffix(".ipynb")
            needs_math = notebook.is_file() and "$" in "".join(
                c.get("source", "") if isinstance(c.get("source"), str) else "".join(c["source"])
                for c in __import__("json").loads(notebook.read_text())["cells"] if c["cell_type"] == "markdown")
            name = page_path.relative_to(reports).as_posix()
            tab.screenshot(path=str(shots / (name.replace("/", "__") + ".png")), full_page=True)
            tab.close()
            found = problems_of(page_path, facts, needs_math)
            failures += bool(found)
            print(f"{'FAIL' if found else 'ok  '} {name}: {facts['math']} math elements, {len(facts['links'])} links, "
                  f"{len(facts['images'])} images, {facts['width']} px wide")
            for p in found:
                print("     -", p)
        browser.close()
    print(f"screenshots in {shots}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
