"""HTML pages of a run's stage notebooks that read offline: no script or stylesheet from the network (LaTeX becomes
MathML, which browsers draw natively), code hidden, the notebook's heading as the title, and a navigation bar to the
index, the previous and next stage and the run's data files.

    python -m spot_utils.render reports/default [reports/gemma3-270m ...]   # re-render pages, no re-execution
"""
from __future__ import annotations

import copy
import html
from pathlib import Path
import re

from ..base.io import read_json, write_text
from ..experiment.stages import STAGES

# $$display$$ or $inline$ (no space just inside an inline pair, as in Markdown math), outside code spans and fences
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\$)", re.S)
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}<style>{{ resources.spot_css }}</style>{%- endblock html_head_css -%}
{%- block body_header -%}{{ super() }}{{ resources.spot_nav }}{%- endblock body_header -%}
"""
VIEWPORT = '<meta name="viewport" content="width=device-width, initial-scale=1">'
CSS = ("nav.spot{position:sticky;top:0;z-index:10;background:#f6f6f6;border-bottom:1px solid #ccc;"
       "padding:6px 16px;font:13px sans-serif;display:flex;flex-wrap:wrap;gap:4px 14px}"
       "nav.spot a{text-decoration:none}nav.spot .files{color:#555}.spot-status{color:#a00;font-weight:600}"
       "div.spot-status{background:#fff3f3;border:1px solid #e0a0a0;padding:6px 16px;font:14px sans-serif}"
       "math[display=block]{margin:0.6em 0}"
       # tables fit the page: headers wrap anywhere, cells at spaces (numbers stay whole) at 1,280 px; on a phone
       # smaller type and cells wrap anywhere too; preformatted lines wrap between words
       ".jp-RenderedHTMLCommon table{table-layout:auto;max-width:100%}"
       ".jp-RenderedHTMLCommon td,.jp-RenderedHTMLCommon th{white-space:normal;padding:2px 4px}"
       ".jp-RenderedHTMLCommon th{overflow-wrap:anywhere}"
       ".jp-OutputArea-output pre{word-break:normal;white-space:pre-wrap;overflow-wrap:break-word}"
       "@media (max-width:700px){.jp-RenderedHTMLCommon table{font-size:10px}"
       ".jp-RenderedHTMLCommon td{overflow-wrap:anywhere}}")


# latex2mathml's \setminus (U+29F5, written as an entity) is in no common font: U+2216 SET MINUS is
_FONT_SAFE = {"<mi>&#x029F5;</mi>": "<mo>&#x2216;</mo>"}


def latex_to_mathml(markdown: str) -> str:
    """Markdown with every $…$ and $$…$$ outside code replaced by MathML (inline, or a block for $$…$$)."""
    from latex2mathml.converter import convert  # deferred: latex2mathml, only when rendering pages

    def one(m: re.Match) -> str:
        if m.group(1) is not None:
            return "\n\n" + convert(m.group(1).strip(), display="block") + "\n\n"
        return convert(m.group(2))

    parts = _CODE.split(markdown)
    text = "".join(p if i % 2 else _MATH.sub(one, p) for i, p in enumerate(parts))
    for missing, drawn in _FONT_SAFE.items():
        text = text.replace(missing, drawn)
    return text


def title_of(nb) -> str:
    """The first Markdown heading of a notebook (its title), else 'Notebook'."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#+\s+(.+?)\s*$", cell.source, re.M)
            if m:
                return re.sub(r"[`*_$]", "", m.group(1))
    return "Notebook"


def data_files(run: Path) -> list[str]:
    """The run's data files, relative to its folder: metrics, manifest and tables (figures are listed by the index)."""
    return sorted(p.name for p in run.iterdir() if p.is_file() and p.suffix in (".json", ".csv"))


def stage_problems(run: Path) -> dict[str, dict]:
    """{stage: {status, error}} of the run's stages whose manifest status is not 'ok' (failed or stale)."""
    path = Path(run) / "manifest.json"
    records = read_json(path).get("stages", {}) if path.is_file() else {}
    return {s: dict(status=r.get("status"), error=r.get("error")) for s, r in records.items()
            if isinstance(r, dict) and r.get("status", "ok") != "ok"}


def _marked(stage: str, problems: dict) -> str:
    """A stage name with its status after it when that is not ok."""
    status = problems.get(stage, {}).get("status")
    return html.escape(stage) + (f' <span class="spot-status">({html.escape(status)})</span>' if status else "")


def nav_bar(notebook: Path) -> str:
    """Links from a stage page to the index, the neighbouring stages that exist and the run's data files; each
    stage marked failed or stale as the run's manifest records it, with a note under the bar for this page's stage."""
    run, stage = notebook.parent, notebook.stem
    problems = stage_problems(run)
    present = [s for s in STAGES if (run / f"{s}.ipynb").is_file() or s == stage]
    i = present.index(stage) if stage in present else None
    links = ['<a href="../index.html">↑ all runs</a>', f"<b>{html.escape(run.name)}</b>"]
    if i is not None and i > 0:
        links.append(f'<a href="{present[i - 1]}.html">← {_marked(present[i - 1], problems)}</a>')
    if i is not None and i + 1 < len(present):
        links.append(f'<a href="{present[i + 1]}.html">{_marked(present[i + 1], problems)} →</a>')
    files = [f'<a href="{html.escape(notebook.name)}">executed notebook</a>']
    files += [f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in data_files(run)]
    bar = f'<nav class="spot">{" ".join(links)}<span class="files">files: {" · ".join(files)}</span></nav>'
    problem = problems.get(stage, {})
    error = f" (<code>{html.escape(problem['error'])}</code>)" if problem.get("error") else ""
    if problem.get("status") == "failed":
        bar += (f'<div class="spot-status">{html.escape(stage)} failed in its last run{error}; this page shows its '
                "output as far as it got.</div>")
    elif problem.get("status") == "stale":
        bar += (f'<div class="spot-status">{html.escape(stage)} is stale: an earlier stage ran again after it, so its '
                f"inputs have changed since this page was made; rerun {html.escape(stage)}.</div>")
    return bar


def page(nb, nav: str = "") -> str:
    """Self-contained HTML of an executed notebook node: code hidden, math as MathML, `nav` above the content."""

    from jinja2 import DictLoader  # deferred: nbconvert, only when rendering pages
    from nbconvert import HTMLExporter  # deferred: nbconvert, only when rendering pages
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = latex_to_mathml(cell.source)
        if "outputs" in cell:  # live widgets need a kernel: the page shows the static view beside them
            cell.outputs = [o for o in cell.outputs if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    exporter = HTMLExporter(extra_loaders=[DictLoader({"spot.html.j2": _TEMPLATE})], template_file="spot.html.j2",
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title_of(nb)}, "spot_nav": nav,
                                                         "spot_css": CSS})
    return body


def render_html(notebook: str | Path) -> Path:
    """Write <notebook>.html beside an executed notebook (no re-execution) and return its path."""
    import nbformat  # deferred: nbformat, only when running or rendering notebooks
    notebook = Path(notebook)
    out = notebook.with_suffix(".html")
    write_text(out, page(nbformat.read(notebook, as_version=4), nav_bar(notebook)))
    return out


def render_run(run: str | Path) -> list[Path]:
    """Re-render the page of every executed stage notebook in a report folder."""
    return [render_html(Path(run) / f"{s}.ipynb") for s in STAGES if (Path(run) / f"{s}.ipynb").is_file()]

