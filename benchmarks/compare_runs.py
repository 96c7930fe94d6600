"""Whether two runs of the same params file produced the same results: every mask file, the aggregate and the
general reference byte for byte, and metrics.json value for value.

    python benchmarks/compare_runs.py RUNS_A/tiny REPORTS_A/tiny RUNS_B/tiny REPORTS_B/tiny

E.g. a run of params/tiny.yaml at this commit against one at an earlier commit (each run with its own
SPOT_RUNS_DIR and SPOT_REPORTS_DIR). Prints each difference and a summary line; exits 1 if any is found.
Keys of metrics.json that describe the sitting rather than the results (wall-clock seconds, the commit, dates)
are listed as `ignored` and not compared.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

SITTING_KEYS = ("seconds", "commit", "date", "time", "started", "finished", "elapsed", "host", "versions")


def compared_files(run: Path) -> list[Path]:
    """The run's mask files, aggregate and general reference, relative to the run folder."""
    files = [p.relative_to(run) for p in sorted((run / "masks").rglob("*.safetensors"))]
    return files + [Path(n) for n in ("aggregate.safetensors", "general.safetensors") if (run / n).is_file()]


def _is_sitting(key: str) -> bool:
    return any(word in key.lower() for word in SITTING_KEYS)


def json_differences(a, b, where: str = "", ignored: list | None = None) -> list[str]:
    """Paths at which two JSON values differ (exact equality; keys naming the sitting are skipped)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            path = f"{where}.{key}" if where else str(key)
            if _is_sitting(str(key)):
                if ignored is not None:
                    ignored.append(path)
                continue
            if key not in a or key not in b:
                out.append(f"{path}: only in {'second' if key not in a else 'first'}")
            else:
                out += json_differences(a[key], b[key], path, ignored)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} and {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_differences(x, y, f"{where}[{i}]", ignored)]
    return [] if a == b or (a != a and b != b) else [f"{where}: {a!r} != {b!r}"]  # NaN equals NaN here


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("report_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("report_b", type=Path)
    args = ap.parse_args(argv)
    files_a, files_b = compared_files(args.run_a), compared_files(args.run_b)
    problems = [f"{f}: only in {args.run_a if f in files_a else args.run_b}" for f in sorted(set(files_a) ^ set(files_b))]
    same = 0
    for f in sorted(set(files_a) & set(files_b)):
        if (args.run_a / f).read_bytes() == (args.run_b / f).read_bytes():
            same += 1
        else:
            problems.append(f"{f}: bytes differ")
    ignored: list[str] = []
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (args.report_a, args.report_b)]
    metric_diffs = json_differences(*metrics, ignored=ignored)
    problems += [f"metrics.json {d}" for d in metric_diffs]
    for p in problems:
        print(p)
    print(f"{same} of {len(set(files_a) | set(files_b))} files identical; metrics.json: {len(metric_diffs)} values "
          f"differ ({len(ignored)} keys about the sitting not compared: {', '.join(ignored[:8])}"
          f"{' ...' if len(ignored) > 8 else ''})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
