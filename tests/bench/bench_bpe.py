"""BPE encoding of one long word: a megabyte of random letters a-z without a space is a
single pre-tokenized word, which the old merge loop (rescan the word after every merge)
took more than a minute for. With candidate pairs in a heap over a linked list it is
O(n log n). Side by side with Hugging Face `tokenizers` (Rust) when it is installed, on
the same vocab.json and merges.txt (their ids are checked equal to ours).

    python tests/bench/bench_bpe.py [--chars 1000000]
"""
import argparse
import json
import random
import string
import tempfile
import time
from pathlib import Path

from common import emit, environment

from transformer import BPETokenizer
from transformer.bpe import byte_to_char


def letter_merges(n_merges: int, seed: int = 0) -> list[tuple[str, str]]:
    """A BPE table over a-z that looks trained: every letter pair first, then merges of
    two existing tokens (shorter ones more often), each token built once."""
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    merges = [(a, b) for a in letters for b in letters]
    rng.shuffle(merges)
    tokens = [a + b for a, b in merges]
    made = set(tokens)
    while len(merges) < n_merges:
        left = rng.choice(tokens[: len(tokens) // 2 + 1] if rng.random() < 0.7 else tokens)
        right = rng.choice(letters) if rng.random() < 0.5 else rng.choice(tokens)
        if left + right not in made:
            merges.append((left, right))
            tokens.append(left + right)
            made.add(left + right)
    return merges


def write_tokenizer(folder: Path, merges) -> None:
    vocab = {char: byte for byte, char in byte_to_char().items()}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def timed(fn, rounds: int = 3) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds of this process, over `rounds` calls; the
    last result). On a shared machine the CPU time is the figure to compare: the wall
    time also counts the time other processes had the core."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--merges", type=int, default=20_000)
    args = parser.parse_args()
    text = "".join(random.Random(1).choices(string.ascii_lowercase, k=args.chars))
    folder = Path(tempfile.mkdtemp())
    write_tokenizer(folder, letter_merges(args.merges))
    ours = BPETokenizer.from_pretrained(folder)
    # a fresh cache each round would not matter: words over 256 bytes are never cached
    seconds, cpu_seconds, ids = timed(lambda: ours.encode(text))
    results = {"chars": args.chars, "merges": args.merges, "tokens": len(ids),
               "microtensor_s": round(seconds, 3), "microtensor_cpu_s": round(cpu_seconds, 3),
               **environment()}
    try:
        import tokenizers
    except ImportError:
        results["tokenizers"] = "not installed"
    else:
        theirs = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(
            str(folder / "vocab.json"), str(folder / "merges.txt")))
        theirs.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        # tokenizers may use more than one thread: its CPU time can exceed its wall time
        their_seconds, their_cpu, encoding = timed(lambda: theirs.encode(text))
        results.update(tokenizers=tokenizers.__version__,
                       tokenizers_s=round(their_seconds, 3),
                       tokenizers_cpu_s=round(their_cpu, 3),
                       same_ids=encoding.ids == ids,
                       ratio=round(seconds / their_seconds, 1))
    emit("bpe_one_long_word", results)


if __name__ == "__main__":
    main()
