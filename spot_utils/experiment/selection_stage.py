"""What stage 03 keeps of every mask it selects: the mask file with its manifest, and the rows of its size, spot
summary and layer x module tables."""
from __future__ import annotations

import pandas as pd

from ..base.run_files import mask_path
from ..method import structure
from ..method.masks import mask_count, save_masks
from ..method.selection import CONFIGURATIONS


class SelectionOutputs:
    """Writes stage 03's masks to runs/<run>/masks/ and collects its tables.

    Args:
        params: the run's parameters (its name places the files).
        manifest: fields every mask's manifest carries (model, criterion, aggregation, languages).
    """

    def __init__(self, params: dict, manifest: dict):
        self.params, self.manifest = params, manifest
        self.summary, self.sizes, self.layers_modules = [], [], []

    def keep(self, kind: str, k: float, masks: dict, configuration: str = "global") -> dict:
        """Write one mask with its manifest and record it: its size (the global masks; the spot of every other
        configuration is summarised only), its layer x module rows (structure.MAP_KINDS, global) and, for a spot,
        its summary. Returns `masks`."""
        save_masks(mask_path(self.params, kind, k, configuration), masks,
                   dict(self.manifest, kind=kind, k_percent=k, configuration=configuration,
                        granularity=CONFIGURATIONS[configuration].granularity))
        if configuration == "global":
            self.sizes.append(dict(k_percent=k, kind=kind, entries=mask_count(masks)))
        if kind in structure.MAP_KINDS and configuration == "global":  # what the explore notebook maps
            self.layers_modules.extend(structure.layer_module_rows(masks, kind=kind, k_percent=k))
        if kind == "spot":
            self.summary.append(dict(k_percent=k, configuration=configuration, **structure.summary(masks)))
        return masks

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(spot summary, one row per k and configuration; entries per global mask kind x k)."""
        return (pd.DataFrame(self.summary),
                pd.DataFrame(self.sizes).pivot(index="kind", columns="k_percent", values="entries"))
