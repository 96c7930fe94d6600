"""06_explore's widgets driven as a reader drives them, on the committed runs: every run and configuration (and a
change of mask kind, k and reference) leaves both figures drawn, and the dropdowns show what the view uses."""
import base64

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402

from spot_utils.base.paths import REPORTS_DIR  # noqa: E402
from spot_utils.report import explore  # noqa: E402

pytest.importorskip("ipywidgets")


def _drawn_png(output) -> bool:
    """Whether an Output widget holds exactly one finished PNG (a real image, not a blank)."""
    if len(output.outputs) != 1 or "image/png" not in output.outputs[0]["data"]:
        return False
    png = base64.b64decode(output.outputs[0]["data"]["image/png"])
    return png.startswith(b"\x89PNG") and len(png) > 5_000


def test_a_missing_default_run_falls_back_to_a_committed_one():
    runs = explore.runs_available()
    assert runs and explore.default_run("no-such-run") == runs[0] and explore.default_run(runs[-1]) == runs[-1]


def test_every_widget_change_redraws_both_figures():
    runs = explore.runs_available()
    ui = explore.Explorer(explore.default_run("tiny"))
    for run in runs:
        ui.pick["run"].value = run
        rows, params, _ = explore.load(run)
        for name, (options, default) in explore.choices(rows, params).items():
            assert list(ui.pick[name].options) == list(options) and ui.pick[name].value == default, (run, name)
        for configuration in ui.pick["configuration"].options:
            before, changed = ui.redraws, configuration != ui.pick["configuration"].value
            ui.pick["configuration"].value = configuration
            assert ui.redraws == before + changed  # one redraw per change, none without one
            assert _drawn_png(ui.curves) and _drawn_png(ui.layers), (run, configuration)
            assert f"configuration {configuration} " in ui.tables.outputs[0]["data"]["text/html"]
    ui.pick["reference"].value = ui.pick["reference"].options[-1]
    ui.pick["k"].value = ui.pick["k"].options[0]
    assert _drawn_png(ui.curves) and ui.pick["reference"].options[-1] in ui.tables.outputs[0]["data"]["text/html"]
