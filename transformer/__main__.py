"""Command line: train a model, or generate from a trained one.

    python -m transformer train --task reverse --steps 3000 --out runs/reverse
    python -m transformer train --task charlm --text /usr/share/common-licenses/GPL-3 \\
        --steps 2000 --out runs/gpl
    python -m transformer train --out runs/gpl --steps 4000 --resume
    python -m transformer generate --ckpt runs/gpl --prompt "The licenses " --top-k 10
    python -m transformer generate --ckpt gpt2 --prompt "Hello, I'm" --temperature 0
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from .progress import ProgressBar
from .train import CHECKPOINT, generate, train

MONITOR_REPORT = "monitor.html"

# Defaults per task:
# (d_model, n_heads, n_layers, d_ff, seq_len, batch_size, lr, warmup, dropout)
TASK_DEFAULTS = {
    "reverse": (64, 4, 2, 256, 10, 64, 1e-3, 100, 0.0),
    "copy": (64, 4, 2, 256, 10, 64, 1e-3, 100, 0.0),
    # a 35 KB text is seen many times over: dropout keeps validation loss falling longer
    "charlm": (96, 4, 3, 384, 64, 32, 2e-3, 100, 0.1),
}


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (0 would divide by zero or train on nothing)."""
    return _int_at_least(text, 1)


def count(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, smallest: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < smallest:
        raise argparse.ArgumentTypeError(f"must be >= {smallest}, got {value}")
    return value


def id_list(text: str) -> list[int]:
    """argparse type: comma-separated token ids, e.g. '1,2,3'."""
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like "
                                         f"1,2,3, got {text!r}") from None
    if any(id_ < 0 for id_ in ids):
        raise argparse.ArgumentTypeError(f"token ids are >= 0, got {text!r}")
    return ids


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m transformer", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    add_train_command(commands)
    add_generate_command(commands)
    return top


def add_train_command(commands) -> None:
    run = commands.add_parser("train", help="train on a task, with checkpoints and resume")
    run.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="reverse")
    run.add_argument("--text", help="plain-text file for --task charlm")
    run.add_argument("--steps", type=positive_int, default=2000, help="total optimizer steps")
    run.add_argument("--out", default="runs/run", help="folder for the checkpoint")
    run.add_argument("--resume", action="store_true",
                     help="continue from OUT/checkpoint.npz (same result as never stopping)")
    run.add_argument("--stop-after", type=positive_int, help="stop after this many steps in this "
                     "session (checkpoint saved; continue later with --resume)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--d-model", type=positive_int)
    run.add_argument("--n-heads", type=positive_int)
    run.add_argument("--n-layers", type=positive_int)
    run.add_argument("--d-ff", type=positive_int)
    run.add_argument("--dropout", type=float)
    run.add_argument("--norm-first", action="store_true", help="pre-LN (default post-LN)")
    run.add_argument("--seq-len", type=positive_int, help="sequence length (reverse/copy: longest "
                     "source; charlm: context window)")
    run.add_argument("--min-len", type=positive_int, help="shortest source (reverse/copy)")
    run.add_argument("--n-symbols", type=positive_int, default=10, help="alphabet size (reverse/copy)")
    run.add_argument("--batch-size", type=positive_int)
    run.add_argument("--lr", type=positive_float, help="peak learning rate (AdamW, cosine schedule)")
    run.add_argument("--warmup", type=count)
    run.add_argument("--weight-decay", type=float, default=0.01)
    run.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    run.add_argument("--log-every", type=positive_int, default=50,
                     help="print the loss every N steps")
    run.add_argument("--eval-every", type=count, default=0,
                     help="evaluate every N steps (0: only at the end)")
    run.add_argument("--ckpt-every", type=positive_int, default=500,
                     help="save the checkpoint every N steps (and at the end)")
    run.add_argument("--monitor", action="store_true", help="record gradient norms, "
                     "update-to-data ratios, saturation, attention entropy and the first "
                     f"NaN/inf, and write OUT/{MONITOR_REPORT} (an HTML page of plots)")
    run.add_argument("--monitor-every", type=positive_int, default=1,
                     help="with --monitor, record every N-th step (default 1: all)")
    add_debug_option(run)


def add_generate_command(commands) -> None:
    gen = commands.add_parser("generate", help="generate from a trained checkpoint (charlm "
                              "samples; reverse/copy models decode greedily)")
    gen.add_argument("--ckpt", required=True, help="run folder (or its checkpoint.npz), or a "
                     "Hugging Face GPT-2 directory (config.json + model.safetensors)")
    prompt = gen.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text (a GPT-2 directory needs vocab.json and "
                        "merges.txt for this)")
    prompt.add_argument("--prompt-ids", type=id_list, help="token ids, e.g. 464,2068,7586; "
                        "without a tokenizer the output is ids too")
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--seed", type=int)
    add_debug_option(gen)


def add_debug_option(command) -> None:
    command.add_argument("--debug", action="store_true",
                         help="show the traceback of an error (default: one line)")


def options(args: argparse.Namespace) -> dict:
    """The parsed arguments as a dict, with per-task defaults filled in."""
    opts = vars(args).copy()
    opts.pop("debug", None)          # how errors show, not part of a run
    if args.command == "train":
        names = ("d_model", "n_heads", "n_layers", "d_ff", "seq_len", "batch_size", "lr",
                 "warmup", "dropout")
        for name, default in zip(names, TASK_DEFAULTS[args.task]):
            if opts[name] is None:
                opts[name] = default
        if opts["min_len"] is None:
            opts["min_len"] = opts["seq_len"]
    return opts


def run_training(opts: dict) -> dict:
    """`train` as the command line runs it: log lines on stdout, with a progress bar
    below them when stdout is a terminal, and with --monitor a `viz.TrainingMonitor`
    whose report is written to OUT/monitor.html even when the run fails (a report of a
    diverged run says where the first NaN or inf appeared), and named on stdout."""
    watch, every = opts.pop("monitor", False), opts.pop("monitor_every", 1)
    bar = ProgressBar(opts["steps"]) if sys.stdout.isatty() else None
    monitors = []

    def log(line: str) -> None:
        if bar is None:
            print(line, flush=True)
        else:
            bar.log(line)

    def monitor(model, optimizer):
        # viz builds on transformer, so transformer imports it only here, when asked
        from viz.monitor import TrainingMonitor
        steps = opts["steps"]
        recorded = [step - (step - 1) % every for step in (1, max(1, steps // 2), steps)]
        monitors.append(TrainingMonitor(model, optimizer, every=every,
                                        histogram_steps=recorded))
        return monitors[-1]

    try:
        return train(opts, log=log, monitor=monitor if watch else None, progress_bar=bar)
    finally:
        if bar is not None:
            bar.close()
        for watcher in monitors:
            watcher.close()
            path = os.path.join(opts["out"], MONITOR_REPORT)
            try:
                watcher.report(f"Training monitor: {opts['out']}").save(path)
            except OSError as error:
                print(f"could not write the monitor report {path}: {error}", flush=True)
            else:
                if watcher.non_finite is not None:
                    print(f"first non-finite value: {watcher.non_finite}", flush=True)
                print(f"monitor report: {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    opts = options(args)
    try:
        if args.command == "train":
            run_training(opts)
        else:
            print(generate(opts))
    except KeyboardInterrupt as interrupt:
        print(interrupted_message(args, interrupt), file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report a Ctrl-C
    except Exception as error:  # every failure: one line and exit 2; --debug: the traceback
        if getattr(args, "debug", False):
            raise
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    return 0


def error_line(error: Exception) -> str:
    """An error as one line: ours as worded (a KeyError's text without the quotes str()
    adds), anyone else's with its type and a pointer to --debug."""
    text = str(error.args[0]) if len(error.args) == 1 else str(error)
    if not getattr(error, "microtensor", False):
        text = f"{type(error).__name__}: {text or 'no message'} (--debug shows the traceback)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def interrupted_message(args: argparse.Namespace, interrupt: KeyboardInterrupt) -> str:
    """One line for Ctrl-C: where the run stands and how to continue it."""
    if args.command != "train":
        return "interrupted (KeyboardInterrupt)"
    step = getattr(interrupt, "checkpoint_step", None)
    if step is None:
        return ("interrupted (KeyboardInterrupt) before the first checkpoint was saved: "
                "run the same command again to start over")
    path = os.path.join(args.out, CHECKPOINT)
    return (f"interrupted (KeyboardInterrupt): {path} holds step {step}; run the same "
            f"command with --resume to continue from step {step}")


if __name__ == "__main__":
    sys.exit(main())
