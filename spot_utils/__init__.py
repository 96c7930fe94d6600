"""spot_utils: find and test the Coding Spot of a causal language model (README.md shows the public API)."""
from .base.versions import check_torch

check_torch()  # before anything below imports torch or transformers

from .data.models import load_model
from .method.ablation import ablated, check_masks_fit, magnitude_per_tensor, random_per_tensor, random_uniform
from .method.aggregation import aggregate
from .method.authors_spot import authors_spot
from .method.masks import counts_per_tensor, load_masks, mask_and, mask_count, mask_minus, mask_or, save_masks
from .method.scoring import scoped_parameters, score
from .method.selection import code_minus_general, code_over_general, general_reference, select_top_k

__all__ = [
    "load_model", "score", "scoped_parameters", "aggregate", "select_top_k", "ablated", "check_masks_fit",
    "save_masks", "load_masks", "mask_and", "mask_or", "mask_minus", "mask_count", "counts_per_tensor",
    "random_per_tensor", "random_uniform", "magnitude_per_tensor", "code_minus_general", "code_over_general",
    "general_reference", "authors_spot",
]
