"""Run every benchmark in one process, print a table, and write the results as JSON.

    python tests/bench/run.py [--out bench-results.json] [--quick] [--scale]

Ratios compare figures measured in this same run on this machine. Install the `bench`
extra (PyTorch, CPU) to get the PyTorch columns. The hand-written NumPy step
(`numpy_manual.py`) is the file $MICROTENSOR_NUMPY_MANUAL names, else one in a
shared/bench/ folder next to the repository's folder; without it that row says "skipped". The per-op
table is one training step of the reference model under `microtensor.profile()`. With
`--scale`, GPT-2 124M and a Llama of similar size are measured too
(`bench_gpt2_scale.py`: minutes, and several GB of memory).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_chain
import bench_decode
import bench_draw
import bench_gpt2_scale
import bench_memory
import bench_optim
import bench_small_ops
import bench_train
from common import environment

HEADER = ("benchmark", "microtensor", "torch", "numpy floor", "ratio")


def table(results: dict) -> str:
    """The summary as fixed-width text (what a run prints)."""
    rows = summary_rows(results)
    widths = [max(len(str(r[i])) for r in rows + [HEADER]) for i in range(5)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths))
             for row in [HEADER] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    """The same summary as a Markdown table, with the machine it ran on (the docs site's
    performance page renders it from a run's JSON)."""
    env = results["environment"]
    lines = [f"Measured on {env['processor']} ({env['cpus']} CPUs, {env['machine']}), "
             f"{env['blas']}, Python {env['python']}, NumPy {env['numpy']}, "
             f"PyTorch {env['torch'] or 'not installed'}"
             + (f"; load average {env['load_average_1m']:.1f} at the start"
                if "load_average_1m" in env else "")
             + ("; a --quick run" if env.get("quick") else "") + ".", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |"
              for row in summary_rows(results)]
    return "\n".join(lines)


def summary_rows(results: dict) -> list:
    """One row per headline figure: (benchmark, microtensor, torch, numpy floor, ratio)."""
    train, decode = results["train_step"], results["decode"]
    small, chain = results["small_ops"], results["chain"]
    memory, draw = results["memory"], results["draw"]

    def ratio(value, goal, interval=None):
        if value is None:
            return "n/a"
        within = "" if interval is None else f" [{interval[0]:.2f}, {interval[1]:.2f}]"
        return f"{value:.2f}{within} (goal {goal})"

    rows = [
        ("train step, default (ms)", f"{train['microtensor_ms']:.1f}",
         f"{train.get('torch_ms', float('nan')):.1f}", f"{train['numpy_gemm_floor_ms']:.1f}",
         "vs torch " + ratio(train.get("ratio_vs_torch"), "<= 1.0")
         + "; vs hand-written "
         + ratio(train.get("ratio_vs_numpy_manual"), "<= 1.10",
                 train.get("ratio_vs_numpy_manual_interval_90"))),
        ("train step, its ops with no engine (ms)", f"{train['ops_only_ms']:.1f}", "", "",
         "fast step / this "
         + ratio(train["ratio_vs_ops_only"], "~1.0: the engine's cost",
                 train["ratio_vs_ops_only_interval_90"])
         + "; vs hand-written "
         + ratio(train.get("ops_only_ratio_vs_numpy_manual"), "<= 1.05",
                 train.get("ops_only_ratio_vs_numpy_manual_interval_90"))),
        ("train step, textbook forwards (ms)", f"{train['textbook_ms']:.1f}", "", "",
         "vs torch " + ratio(train.get("textbook_ratio_vs_torch"), "none") + "; vs hand-written "
         + ratio(train.get("textbook_ratio_vs_numpy_manual"), "none",
                 train.get("textbook_ratio_vs_numpy_manual_interval_90"))),
        ("train step, small model (ms)", f"{train['small_model']['microtensor_ms']:.2f}",
         f"{train['small_model'].get('torch_ms', float('nan')):.2f}",
         f"{train['small_model']['numpy_gemm_floor_ms']:.2f}",
         (f"vs torch {train['small_model'].get('ratio_vs_torch', float('nan')):.2f} "
          "(d_model 32, 2 layers, seq 32, batch 8; no goal)")),
        ("train step, hand-written NumPy (ms)", *_manual_row(train)),
        _optimizer_row("AdamW step (ms)", results["optimizer_step"]["reference"], 2),
        _optimizer_row("AdamW step, small model (ms)", results["optimizer_step"]["small_model"],
                       3),
        ("cached decode (tokens/s)", f"{decode['cached_tokens_per_s']:.0f}",
         f"{decode.get('torch_concat_cache_tokens_per_s', float('nan')):.0f}", "",
         "vs torch " + ratio(decode.get("ratio_vs_torch"), ">= 2.0")
         + f" (1 thread: {decode.get('torch_1_thread_tokens_per_s', float('nan')):.0f}/s); "
         f"vs through the blocks ({decode['cached_composed_tokens_per_s']:.0f}/s) "
         f"{decode['cached_over_composed']:.2f}; blocks of an unregistered type "
         f"{decode['cached_own_forward_tokens_per_s']:.0f}/s "
         f"({decode['cached_own_forward_ops_per_token']:.0f} ops a token); vs uncached "
         f"({decode['uncached_tokens_per_s']:.1f}/s) "
         + ratio(decode["cached_over_uncached"], ">= 4")
         + f"; per token {decode['cached_ops_per_token']:.0f} ops, "
         f"{decode['cached_python_calls_per_token']:.0f} Python calls"),
        ("4x4 add (us)", f"{small['add_4x4_us']['microtensor']:.2f}",
         f"{small['add_4x4_us'].get('torch', float('nan')):.2f}",
         f"{small['add_4x4_numpy_us']:.2f}",
         ratio(small["add_4x4_us"].get("ratio_vs_torch"), "<= 1.0")),
        ("mul+sum+backward (us)", f"{small['mul_sum_backward_us']['microtensor']:.1f}",
         f"{small['mul_sum_backward_us'].get('torch', float('nan')):.1f}", "",
         ratio(small["mul_sum_backward_us"].get("ratio_vs_torch"), "<= 1.0")),
        ("100k-op chain (s)", f"{chain['ops_100k_s']:.2f}", "", "",
         f"100k/10k = {chain['ratio_100k_over_10k']:.1f} (linear: ~10)"),
        (f"RSS over {memory['steps']} steps (MB)",
         " -> ".join(f"{v:.0f}" for v in memory["rss_mb_at_step"].values()), "", "",
         f"growth after warm-up {memory['growth_after_warmup_mb']:+.1f} MB (goal ~0)"),
        ("draw+render 4-layer graph (s)",
         (f"{draw['folded']['draw_s'] + (draw['folded']['render_s'] or 0):.2f} folded, "
         f"{draw['unfolded']['draw_s'] + (draw['unfolded']['render_s'] or 0):.2f} full"),
         "", "", ""),
    ]
    if "gpt2_scale" in results:
        rows += bench_gpt2_scale.summary_rows(results["gpt2_scale"])
    return rows


def _manual_row(train: dict) -> tuple:
    """(microtensor, torch, numpy floor, ratio) cells of the hand-written NumPy row."""
    if "numpy_manual_ms" not in train:
        return ("skipped", "", "", train.get("numpy_manual_note", ""))
    return (f"{train['numpy_manual_ms']:.1f}", "", "", "")


def _optimizer_row(label: str, record: dict, digits: int) -> tuple:
    """AdamW's step() over flat buffers, torch's, and the textbook per-parameter one with
    the whole training step under each of ours."""
    note = (f"textbook per-parameter {record['adamw_step_per_parameter_ms']:.{digits}f}; "
            f"train step {record['train_step_flat_ms']:.1f} vs "
            f"{record['train_step_per_parameter_ms']:.1f}")
    return (label, f"{record['adamw_step_flat_ms']:.{digits}f}",
            f"{record.get('torch_adamw_step_ms', float('nan')):.{digits}f}", "", note)


def per_op_table(per_op: dict) -> str:
    """The per-op profile of one training step, slowest op first."""
    header = ("op", "fwd ms", "bwd ms", "calls fwd/bwd", "MB out fwd/bwd")
    rows = [(name, f"{r['forward_ms']:.2f}", f"{r['backward_ms']:.2f}",
             f"{r['forward_calls']}/{r['backward_calls']}",
             f"{r['forward_mb']:.1f}/{r['backward_mb']:.1f}") for name, r in per_op.items()]
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(5)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def per_op_markdown(results: dict) -> str:
    """The per-op profile as a Markdown table (the docs site's performance page)."""
    header = ("op", "fwd ms", "bwd ms", "calls fwd/bwd", "MB out fwd/bwd")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {name} | {r['forward_ms']:.2f} | {r['backward_ms']:.2f} | "
              f"{r['forward_calls']}/{r['backward_calls']} | "
              f"{r['forward_mb']:.1f}/{r['backward_mb']:.1f} |"
              for name, r in results["train_step"]["per_op"].items()]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--scale", action="store_true",
                        help="also GPT-2 124M and a ~135M Llama (slow: bench_gpt2_scale.py)")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    results = {"environment": {**environment(), "quick": args.quick}}
    for module, kwargs in ((bench_train, {"repeat": repeat}),
                           (bench_optim, {"repeat": repeat}),
                           (bench_decode, {"repeat": max(3, repeat - 2)}),
                           (bench_small_ops, {}), (bench_chain, {}),
                           (bench_memory, {"steps": 100 if args.quick else 500}),
                           (bench_draw, {}),
                           *([(bench_gpt2_scale, {"quick": args.quick})] if args.scale else [])):
        record = module.run(**kwargs)
        results[record.pop("benchmark")] = record
    print()
    print(table(results))
    print("\nper op, one training step of the reference model as a user's loop runs it "
          "(bytes: the arrays each op returns, a proxy for what it allocates)")
    print(per_op_table(results["train_step"]["per_op"]))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
