"""Checks on what a model is given (token ids, attention masks), shared by the
encoder-decoder `Transformer` and the decoder-only `DecoderLM`. Each names the caller and
says the fix, so a bad batch is refused at the model's door rather than deep inside."""
from __future__ import annotations

import numpy as np

import microtensor as mt
from microtensor.errors import op_error


def as_ids(ids, where: str) -> np.ndarray:
    """Token ids as a (B, T) integer array (a 1-D sequence becomes a batch of one)."""
    array = np.asarray(ids.data if isinstance(ids, mt.Tensor) else ids)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise op_error(where, f"token ids must be integers shaped (B, T), got dtype "
                       f"{array.dtype} with shape {array.shape}", TypeError)
    return array


def check_mask(where: str, mask, ids: np.ndarray) -> np.ndarray:
    """A (B, T) boolean mask of the real tokens of `ids` (all True when `mask` is None);
    a 1-D mask goes with 1-D ids, as `as_ids` does."""
    if mask is None:
        return np.ones(ids.shape, dtype=bool)
    valid = np.asarray(mask.data if isinstance(mask, mt.Tensor) else mask, dtype=bool)
    if valid.ndim == 1:
        valid = valid[None, :]
    if valid.shape != ids.shape:
        raise op_error(where, f"attention_mask {tuple(np.shape(mask))} must have the shape "
                       f"of the ids {ids.shape}",
                       fix="pass one True/False per token: True at real tokens, False at "
                       "padding")
    return valid


def check_not_empty(where: str, name: str, ids: np.ndarray) -> None:
    """Refuse a (B, 0) batch here, rather than have softmax report an empty axis."""
    if ids.shape[1] == 0:
        raise op_error(where, f"the {name} ids {ids.shape} hold no tokens",
                       fix="pass at least one token per row, shaped (B, T) with T >= 1")
