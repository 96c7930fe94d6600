"""Write reports/index.html and, with --readme, the README's results block: the command behind
`python -m spot_utils.report_index [reports_dir] [--readme README.md]` (spot_utils.report.index_page and
spot_utils.report.readme_block)."""
from __future__ import annotations

import argparse

from .base.paths import REPORTS_DIR
from .report.index_page import write_index
from .report.readme_block import update_readme


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports_dir", nargs="?", default=str(REPORTS_DIR))
    parser.add_argument("--readme", metavar="PATH", help="also rewrite the results block of this README")
    args = parser.parse_args(argv)
    print("index written to", write_index(args.reports_dir))
    if args.readme:
        print("results block rewritten in", update_readme(args.readme, args.reports_dir))


if __name__ == "__main__":
    main()
