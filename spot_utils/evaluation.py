"""Held-out loss, perplexity and next-token accuracy per subset (SPEC §4)."""
from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from .losses import pad_batch, sequence_losses


@torch.no_grad()
def item_losses(model, subsets: dict[str, list[torch.Tensor]], batch_size: int = 8, desc: str = "eval") -> pd.DataFrame:
    """One row per evaluation sequence: subset, item, loss (mean token NLL), accuracy, n_tokens."""
    device = next(model.parameters()).device
    rows = []
    total = sum(len(v) for v in subsets.values())
    with tqdm(total=total, desc=desc, unit="seq", leave=False) as bar:
        for subset, seqs in subsets.items():
            for lo in range(0, len(seqs), batch_size):
                batch = seqs[lo: lo + batch_size]
                loss, correct, n = sequence_losses(model, *pad_batch(batch, device))
                for i in range(len(batch)):
                    rows.append(dict(subset=subset, item=lo + i, loss=float(loss[i]),
                                     accuracy=float(correct[i]) / float(n[i]), n_tokens=int(n[i])))
                bar.update(len(batch))
    return pd.DataFrame(rows)
