"""A fresh clone stays clean after every notebook is opened and saved in JupyterLab: clone a branch, give the clone
a venv (a copy of this checkout's .venv with the clone's spot_utils installed over it), install the nbstripout
filter the way the README's install routes do (`make venv`, which runs `make git-filter`), start JupyterLab in the
clone and drive Debian's Chromium with playwright: open each notebooks/*.ipynb, edit nothing and press Ctrl+S; in
one notebook (06_explore: it needs no model, only the committed reports/) run every cell first, so that what
JupyterLab saves holds outputs, execution counts, widget state and the kernel's language_info. Then `git status
--porcelain` must be empty (the pre-save hook of spot_utils.base.notebook_store writes each as git stores it).

    apt-get install -y chromium && .venv/bin/pip install playwright      # once; no browser download
    .venv/bin/python tools/check_notebook_saves.py [--branch main] [--into /tmp/nbcheck] [--keep]

Exits 1 when a save was not seen, the run notebook has no outputs in its tab (the check would prove nothing) or
`git status --porcelain` is not empty (printed, with `git diff --stat`).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = Path(__file__).resolve().parents[1]
RUN_NOTEBOOK = "06_explore.ipynb"
KERNEL_IDLE = """() => { const w = window.__nb;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && w.context.isReady); }"""
TAB_OUTPUTS = """() => { const cells = window.__nb.content.model.cells; let n = 0;
  for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type === 'code') n += c.outputs.length; }
  return n; }"""


def _sh(*cmd, cwd=None, check=True) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


def make_clone(source: Path, branch: str, into: Path, venv: Path) -> Path:
    """Clone `branch` of `source` into `into` with its own copy of `venv` and the notebooks' filter installed."""
    if into.exists():
        shutil.rmtree(into)
    _sh("git", "clone", "-q", "--branch", branch, source, into)
    print(f"cloned {source} ({branch}) into {into}; copying {venv} ...", flush=True)
    shutil.copytree(venv, into / ".venv", symlinks=True)
    python = into / ".venv" / "bin" / "python"
    _sh(python, "-m", "pip", "install", "-q", "--no-deps", "-e", ".", cwd=into)
    (into / ".venv" / ".installed").touch()  # the venv is built: `make venv` only installs the filter
    print(_sh("make", "venv", cwd=into).strip(), flush=True)
    return into


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


def start_lab(clone: Path, scratch: Path) -> tuple[subprocess.Popen, str, str]:
    """JupyterLab in the clone (its venv's python, settings and runtime files in `scratch`, not the user's)."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(scratch / "config"), JUPYTER_DATA_DIR=str(scratch / "data"),
               JUPYTER_RUNTIME_DIR=str(scratch / "runtime"), IPYTHONDIR=str(scratch / "ipython"),
               MPLCONFIGDIR=str(scratch / "mpl"), JUPYTER_PLATFORM_DIRS="1")
    log = open(scratch / "jupyterlab.log", "w")
    proc = subprocess.Popen([clone / ".venv" / "bin" / "python", "-m", "jupyterlab", "--no-browser",
                             "--expose-app-in-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={clone}",
                             "--LabApp.news_url=", "--allow-root"],
                            cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            _api(base, token, "/api/status")
            return proc, base, token
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"JupyterLab did not start; its log:\n{(scratch / 'jupyterlab.log').read_text()[-3000:]}")


def save_in_lab(page, api: tuple[str, str], clone: Path, rel: str, run_all: bool) -> dict:
    """Open `rel` in JupyterLab, optionally run every cell, press Ctrl+S, wait for the file to change on disk and
    close it (its kernel shut down)."""
    path = clone / rel
    before = path.stat().st_mtime_ns
    page.evaluate("async p => { window.__nb = await window.jupyterapp.commands.execute('docmanager:open', {path: p}); }",
                  rel)
    page.wait_for_function(KERNEL_IDLE, timeout=180_000)
    ran = None
    if run_all:
        ran = page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(KERNEL_IDLE, timeout=300_000)
    in_tab = page.evaluate(TAB_OUTPUTS)
    page.evaluate("() => window.jupyterapp.shell.activateById(window.__nb.id)")
    page.keyboard.press("Escape")  # command mode, nothing edited; then the shortcut
    page.keyboard.press("Control+s")
    deadline = time.time() + 60
    while path.stat().st_mtime_ns == before and time.time() < deadline:
        time.sleep(0.25)
    saved = path.stat().st_mtime_ns != before
    page.evaluate("() => window.__nb.dispose()")
    for session in _api(*api, "/api/sessions"):  # one kernel at a time
        _api(*api, f"/api/sessions/{session['id']}", method="DELETE")
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return dict(saved=saved, ran=ran, in_tab=in_tab, outputs=sum(len(c.get("outputs", [])) for c in code),
                counted=sum(c.get("execution_count") is not None for c in code),
                metadata=sorted(nb["metadata"]))


def check(clone: Path, chromium: str, run_notebook: str = RUN_NOTEBOOK) -> int:
    from playwright.sync_api import sync_playwright

    scratch = Path(tempfile.mkdtemp(prefix="nbsave-"))
    notebooks = sorted(p.relative_to(clone).as_posix() for p in (clone / "notebooks").glob("*.ipynb"))
    proc, base, token = start_lab(clone, scratch)
    problems, results = [], {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/lab?reset&token={token}")
            page.wait_for_function("() => !!(window.jupyterapp && window.jupyterapp.shell)", timeout=180_000)
            page.wait_for_selector("#jp-main-dock-panel", timeout=180_000)
            for rel in notebooks:
                run_all = Path(rel).name == run_notebook
                results[rel] = r = save_in_lab(page, (base, token), clone, rel, run_all)
                ran = f"ran every cell (all without error: {r['ran']}), " if run_all else ""
                print(f"{rel}: {ran}outputs in the tab {r['in_tab']}, saved={r['saved']}; on disk: outputs "
                      f"{r['outputs']}, execution counts {r['counted']}, metadata keys {r['metadata']}", flush=True)
                if not r["saved"]:
                    problems.append(f"{rel}: no save seen on disk after Ctrl+S")
                if run_all and not r["in_tab"]:
                    problems.append(f"{rel}: every cell run, but the notebook has no outputs to save")
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if not any(Path(rel).name == run_notebook for rel in results):
        problems.append(f"no notebook {run_notebook} to run")
    status = _sh("git", "status", "--porcelain", cwd=clone)
    print(f"git status --porcelain in {clone}: {'(empty)' if not status else chr(10) + status}", flush=True)
    if status:
        problems.append("git status is not clean after the saves:\n" + status + _sh("git", "diff", "--stat", cwd=clone))
    shutil.rmtree(scratch, ignore_errors=True)
    for p in problems:
        print("PROBLEM:", p)
    print("notebook saves: OK" if not problems else f"notebook saves: {len(problems)} problem(s)")
    return 1 if problems else 0


def _branch(source: Path) -> str:
    return _sh("git", "rev-parse", "--abbrev-ref", "HEAD", cwd=source).strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the repository to clone (this checkout)")
    parser.add_argument("--branch", help="the branch to clone (default: the source's current branch)")
    parser.add_argument("--into", type=Path, help="where to clone (default: a new temporary folder)")
    parser.add_argument("--venv", type=Path, help="a venv with the project's packages to copy (default: the "
                                                   "source's .venv)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="a local Chromium (never downloaded)")
    parser.add_argument("--run", default=RUN_NOTEBOOK, help="the notebook whose cells are all run before saving")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args(argv)
    source = args.source.resolve()
    into = args.into or Path(tempfile.mkdtemp(prefix="nbcheck-")) / "clone"
    clone = make_clone(source, args.branch or _branch(source), into, args.venv or source / ".venv")
    try:
        return check(clone, args.chromium, args.run)
    finally:
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
