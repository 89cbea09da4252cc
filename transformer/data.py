"""Training tasks. Every batch is a deterministic function of (seed, step), so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run would have.

- `SequenceTask("reverse" | "copy")`: source = random symbols, target = the source
  reversed (or copied). Encoder-decoder. A fixed held-out set is never trained on.
- `CharLMTask`: next-character prediction on a text file, split 90% train / 10%
  validation. Decoder-only.
"""
from __future__ import annotations

import numpy as np

from microtensor.errors import op_error

from .tokenizer import CharTokenizer

HELDOUT_STREAM = 2**32 - 1  # the rng stream of the held-out set (training uses step numbers)


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator for one step's batch: independent streams per (seed, step)."""
    return np.random.default_rng([seed, step])


class SequenceTask:
    """Sequence-to-sequence toy tasks over `n_symbols` letters ('a', 'b', ...), lengths in
    [min_len, max_len]. Ids come from a CharTokenizer over those letters: pad 0, bos 1,
    eos 2, letters from 3 on.

    >>> task = SequenceTask("reverse", n_symbols=10, min_len=10, max_len=10, seed=0)
    >>> src, tgt_in, tgt_out = task.batch(step=0, batch_size=32)   # (32, 10), (32, 11) x2
    """

    KINDS = ("reverse", "copy")

    def __init__(self, kind: str = "reverse", n_symbols: int = 10, min_len: int = 10,
                 max_len: int = 10, seed: int = 0, n_heldout: int = 1000):
        if kind not in self.KINDS:
            raise op_error("SequenceTask", f"kind must be one of {self.KINDS}, got {kind!r}")
        if not 1 <= n_symbols <= 26:
            raise op_error("SequenceTask", f"n_symbols must be in [1, 26], got {n_symbols}")
        if not 1 <= min_len <= max_len:
            raise op_error("SequenceTask", f"need 1 <= min_len <= max_len, got min_len="
                           f"{min_len}, max_len={max_len}")
        per_length = n_heldout / (max_len - min_len + 1)
        if per_length > 0.1 * n_symbols ** min_len:
            # Held-out sequences are never trained on; if they were most of all sequences
            # of some length, the model would be tested on lengths it never saw.
            raise op_error("SequenceTask", f"{n_heldout} held-out sequences would take more "
                           f"than 10% of the {n_symbols ** min_len} sequences of length "
                           f"{min_len} over {n_symbols} symbols",
                           fix="raise min_len or n_symbols")
        self.kind, self.n_symbols, self.seed = kind, n_symbols, seed
        self.min_len, self.max_len = min_len, max_len
        self.tokenizer = CharTokenizer(chars=[chr(ord("a") + i) for i in range(n_symbols)])
        self.pad_id, self.bos_id, self.eos_id = (self.tokenizer.pad_id, self.tokenizer.bos_id,
                                                 self.tokenizer.eos_id)
        rng = step_rng(seed, HELDOUT_STREAM)
        self.heldout = [self._sample(rng) for _ in range(n_heldout)]
        self._heldout_set = {seq.tobytes() for seq in self.heldout}

    @property
    def vocab_size(self) -> int:
        """How many token ids the task's tokenizer has."""
        return self.tokenizer.vocab_size

    def config(self) -> dict:
        """The task's settings as JSON-ready data (a run folder saves them)."""
        return {"task": self.kind, "n_symbols": self.n_symbols, "min_len": self.min_len,
                "max_len": self.max_len, "seed": self.seed}

    def _sample(self, rng) -> np.ndarray:
        length = int(rng.integers(self.min_len, self.max_len + 1))
        return rng.integers(3, 3 + self.n_symbols, size=length).astype(np.int64)

    def target_of(self, seq: np.ndarray) -> np.ndarray:
        """What the model should output for `seq`: it reversed, or copied."""
        return seq[::-1] if self.kind == "reverse" else seq

    def batch(self, step: int, batch_size: int):
        """(src (B, max_len), tgt_in (B, max_len + 1), tgt_out (B, max_len + 1)), padded
        with pad_id; tgt_in starts with bos, tgt_out ends with eos."""
        rng = step_rng(self.seed, step)
        seqs = []
        while len(seqs) < batch_size:
            seq = self._sample(rng)
            if seq.tobytes() not in self._heldout_set:   # held-out stays unseen
                seqs.append(seq)
        return self.encode_pairs(seqs)

    def encode_pairs(self, seqs):
        """Padded (source, decoder input, decoder target) id arrays for the sequences `seqs`."""
        batch = len(seqs)
        src = np.full((batch, self.max_len), self.pad_id, np.int64)
        tgt_in = np.full((batch, self.max_len + 1), self.pad_id, np.int64)
        tgt_out = np.full((batch, self.max_len + 1), self.pad_id, np.int64)
        for row, seq in enumerate(seqs):
            target = self.target_of(seq)
            src[row, :len(seq)] = seq
            tgt_in[row, 0] = self.bos_id
            tgt_in[row, 1:len(seq) + 1] = target
            tgt_out[row, :len(seq)] = target
            tgt_out[row, len(seq)] = self.eos_id
        return src, tgt_in, tgt_out


class CharLMTask:
    """Next-character prediction on `text`: windows of `block_size` + 1 characters from
    the first 90% (training) or the last 10% (validation).

    >>> task = CharLMTask("to be or not to be, that is the question. " * 20, block_size=64,
    ...                   seed=0)
    >>> x, y = task.batch(step=0, batch_size=16)        # (16, 64) each; y is x shifted
    """

    def __init__(self, text: str, block_size: int = 64, seed: int = 0, tokenizer=None,
                 val_fraction: float = 0.1):
        self.tokenizer = tokenizer or CharTokenizer(text)
        self.block_size, self.seed = block_size, seed
        ids = np.array(self.tokenizer.encode(text), dtype=np.int64)
        split = int(len(ids) * (1 - val_fraction))
        self.train_ids, self.val_ids = ids[:split], ids[split:]
        if len(self.val_ids) <= block_size + 1 or len(self.train_ids) <= block_size + 1:
            raise op_error("CharLMTask", f"text of {len(text)} characters is too short for "
                           f"windows of {block_size + 1} in both the training and the "
                           f"validation split", fix="use a longer text or a smaller block size")

    @property
    def vocab_size(self) -> int:
        """How many token ids the task's tokenizer has."""
        return self.tokenizer.vocab_size

    def config(self) -> dict:
        """The task's settings as JSON-ready data (a run folder saves them)."""
        return {"task": "charlm", "block_size": self.block_size, "seed": self.seed}

    def batch(self, step: int, batch_size: int):
        """Inputs and next-character targets, (B, block_size) each."""
        starts = step_rng(self.seed, step).integers(
            0, len(self.train_ids) - self.block_size - 1, size=batch_size)
        return self._windows(self.train_ids, starts)

    def validation_batches(self, batch_size: int, n_windows: int = 64):
        """Fixed, evenly spaced windows of the validation split, in batches."""
        starts = np.linspace(0, len(self.val_ids) - self.block_size - 1, n_windows).astype(int)
        for i in range(0, n_windows, batch_size):
            yield self._windows(self.val_ids, starts[i:i + batch_size])

    def _windows(self, ids, starts):
        offsets = np.arange(self.block_size)
        return ids[starts[:, None] + offsets], ids[starts[:, None] + offsets + 1]
