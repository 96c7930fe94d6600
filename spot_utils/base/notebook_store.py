"""The stored form of a notebook git filters (notebooks/*.ipynb in .gitattributes): what the clean filter that `make
git-filter` installs writes. Saving a notebook in JupyterLab adds outputs, execution counts and the kernel's
language_info; the filter strips them, but `git status` compares a file's size with the index before it runs a
filter, so a saved file of another size shows as modified although git would store the same blob. strip_on_save,
a pre-save hook this module registers as a Jupyter server extension, saves such a notebook in its stored form (the open tab keeps its outputs; executed copies
with outputs are the ones in reports/<run>/), so that a save leaves `git status` clean. Notebooks git does not
filter (reports/, anywhere outside a clone with the filter installed) are saved as they are.

    python -m spot_utils.base.notebook_store --install    # `make git-filter` runs it: enable the extension here
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys

FILTER = "nbstripout"
CONFIG = Path("etc") / "jupyter" / "jupyter_server_config.d" / "spot_utils_notebooks.json"
EXTENSION = "spot_utils.base.notebook_store"


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def clean_command(path: str | Path) -> tuple[str, Path] | None:
    """(the clean command git runs on `path`, the work tree it runs in), or None where git does not filter the file
    with FILTER or the filter is not configured."""
    path = Path(path)
    folder = path.parent
    attr = _git(folder, "check-attr", "filter", "--", path.name)
    if not attr or not attr.endswith(f": filter: {FILTER}"):
        return None
    command, top = _git(folder, "config", "--get", f"filter.{FILTER}.clean"), _git(folder, "rev-parse", "--show-toplevel")
    return (command, Path(top)) if command and top else None


def stored_form(text: str, path: str | Path) -> str | None:
    """`text` (a notebook's JSON) as git would store it at `path`; None where git does not filter that path."""
    found = clean_command(path)
    if found is None:
        return None
    command, top = found
    return subprocess.run(command, shell=True, cwd=top, input=text, capture_output=True, text=True, check=True,
                          timeout=120).stdout


def strip_on_save(model: dict, path: str, contents_manager, **_) -> None:
    """Jupyter pre-save hook (ContentsManager.register_pre_save_hook): a notebook that git filters is saved in its
    stored form."""
    if model.get("type") != "notebook" or not model.get("content"):
        return
    stored = stored_form(json.dumps(model["content"], indent=1, ensure_ascii=False), contents_manager._get_os_path(path))
    if stored is not None:
        model["content"] = json.loads(stored)


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": EXTENSION}]


def _load_jupyter_server_extension(serverapp) -> None:
    """The server extension: strip_on_save runs before every save of the server's contents manager."""
    serverapp.contents_manager.register_pre_save_hook(strip_on_save)
    serverapp.log.info(f"{EXTENSION}: notebooks git filters are saved as git stores them")


def install(prefix: str | Path = sys.prefix) -> Path:
    """Enable the server extension (strip_on_save) for Jupyter servers run from the environment at `prefix`: a file
    in jupyter_server_config.d, where each extension enables itself."""
    target = Path(prefix) / CONFIG
    target.parent.mkdir(parents=True, exist_ok=True)
    setting = {"ServerApp": {"jpserver_extensions": {EXTENSION: True}}}
    target.write_text(json.dumps(setting, indent=2) + "\n", encoding="utf-8")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Enable the notebooks' pre-save hook in a Python environment's Jupyter server.")
    parser.add_argument("--install", action="store_true", help="write the Jupyter server setting that enables the extension")
    parser.add_argument("--prefix", default=sys.prefix, help="the environment (default: this Python's)")
    args = parser.parse_args(argv)
    if not args.install:
        parser.print_help()
        return 2
    print(f"notebook pre-save hook: {install(args.prefix)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
