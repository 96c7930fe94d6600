"""Held-out loss, perplexity and next-token accuracy per subset, and the likelihood of reference
solutions given their prompts (SPEC §4)."""
from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from .losses import pad_batch, sequence_losses


@torch.no_grad()
def item_losses(model, subsets: dict[str, list[torch.Tensor]], batch_size: int = 8, desc: str = "eval",
                context_lengths: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """One row per evaluation sequence: subset, item, loss (mean token NLL), accuracy, n_tokens.

    context_lengths (optional, per subset and item): the first c tokens are context only; the loss and
    accuracy then cover just the tokens after them (the reference solution given its prompt).
    """
    device = next(model.parameters()).device
    rows = []
    total = sum(len(v) for v in subsets.values())
    with tqdm(total=total, desc=desc, unit="seq", leave=False) as bar:
        for subset, seqs in subsets.items():
            for lo in range(0, len(seqs), batch_size):
                batch = seqs[lo: lo + batch_size]
                ids, attn = pad_batch(batch, device)
                target = None
                if context_lengths is not None:
                    target = attn.clone()
                    for i, c in enumerate(context_lengths[subset][lo: lo + batch_size]):
                        target[i, :c] = 0
                loss, correct, n = sequence_losses(model, ids, attn, target)
                for i in range(len(batch)):
                    rows.append(dict(subset=subset, item=lo + i, loss=float(loss[i]),
                                     accuracy=float(correct[i]) / float(n[i]), n_tokens=int(n[i])))
                bar.update(len(batch))
    return pd.DataFrame(rows)


def encode_pairs(tokenizer, pairs: dict[str, list[tuple[str, str]]], max_len: int
                 ) -> tuple[dict[str, list[torch.Tensor]], dict[str, list[int]]]:
    """Token ids of context + continuation per item, and the context length of each.

    Context and continuation are tokenised separately (the tokenizer's special tokens on the context only)
    and concatenated, as lm-eval does; the continuation is cut to max_len − 1 tokens and the context is
    cut from the left to fit max_len.
    """
    seqs, ctx_lens = {}, {}
    for subset, items in pairs.items():
        seqs[subset], ctx_lens[subset] = [], []
        for context, continuation in items:
            ctx = tokenizer(context).input_ids
            cont = tokenizer(continuation, add_special_tokens=False).input_ids[: max_len - 1]
            ctx = ctx[-(max_len - len(cont)):]
            seqs[subset].append(torch.tensor(ctx + cont, dtype=torch.int32))
            ctx_lens[subset].append(len(ctx))
    return seqs, ctx_lens
