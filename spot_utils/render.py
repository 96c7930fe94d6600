"""Re-render a run's stage pages (no re-execution) and the index: the command behind
`python -m spot_utils.render reports/default [reports/gemma3-270m ...]` (pages: spot_utils.report.pages)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .report.index_page import write_index
from .report.pages import render_run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="report folders, e.g. reports/default")
    for run in parser.parse_args(argv).runs:
        for path in render_run(run):
            print("rendered", path)
        print("index written to", write_index(Path(run).parent))


if __name__ == "__main__":
    main()
