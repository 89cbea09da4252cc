"""`python -m viz COMMAND`: draw and step through backward passes from the shell.

    python -m viz example --out viz/assets          # attention_backprop.svg (+ .dot)
    python -m viz example --out out --html --step   # also the HTML player, and the steps
    python -m viz lesson backprop --html            # a lesson: narrated, checked, drawn
    python -m viz lesson backprop --notebook        # the lesson as backprop.ipynb

Pictures are laid out by `viz.find_engine()`: MICROTENSOR_DOT if set, else Graphviz's
`dot` if installed, else the bundled graphviz-pure; the "wrote" lines say which.

Each command is one `add_<name>(subparsers)` function that defines its arguments and sets
`handler` to a `run_<name>(args) -> int` function; `COMMANDS` lists them. Commands that
need more than microtensor (the lessons, which use `transformer`) import it inside their
handler, so `python -m viz example` works without it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .engine import DotNotFoundError, find_engine
from .graph import render


def add_example(subparsers) -> None:
    parser = subparsers.add_parser(
        "example", help="draw one attention head's backward graph, the route to W_q lit",
        description="Build loss = mean(out^2), out = softmax(QK^T/sqrt(d)) V with "
                    "Q, K, V = X W_q, X W_k, X W_v; run backward; draw the graph with "
                    "the route from the loss to W_q highlighted.")
    parser.add_argument("--out", default="viz-output", help="directory to write to")
    parser.add_argument("--html", action="store_true",
                        help="also write attention_backprop.html, the step-through player")
    parser.add_argument("--step", action="store_true",
                        help="also print the backward pass step by step")
    parser.set_defaults(handler=run_example)


def run_example(args) -> int:
    from .examples import attention_example, attention_picture
    from .player import write_player
    from .stepper import step_through

    out = Path(args.out)
    picture = render(attention_picture(), out / "attention_backprop.svg", source=True)
    engine = find_engine()
    print(f"wrote {picture}  (laid out by {engine.label})")
    if args.html:
        loss, _ = attention_example()
        page = write_player(loss, out / "attention_backprop.html", engine=engine,
                            title="One attention head, backward step by step")
        print(f"wrote {page}  (laid out by {engine.label})")
    if args.step:
        loss, _ = attention_example()
        step_through(loss)
    return 0


def add_lessons(subparsers) -> None:
    parser = subparsers.add_parser("lessons", help="list the lessons, in syllabus order")
    parser.set_defaults(handler=run_lessons)


def run_lessons(args) -> int:
    from . import lessons  # imports `transformer`: only when a lesson is asked for

    for name, summary in lessons.catalog():
        print(f"{name:<21}{summary}")
    print("\nrun one: python -m viz lesson NAME [--out DIR] [--step] [--html] [--notebook]")
    return 0


def add_lesson(subparsers) -> None:
    parser = subparsers.add_parser(
        "lesson", help="run one lesson: narrate, compute, draw, and check every claim",
        description="Run one lesson (`python -m viz lessons` lists them). Pictures go to "
                    "--out (default lesson-output/NAME).")
    parser.add_argument("name", help="the lesson, e.g. backprop")
    parser.add_argument("--out", default=None, help="directory to write pictures to")
    parser.add_argument("--step", action="store_true",
                        help="pause between backward steps (Enter: next, q: run to the end)")
    parser.add_argument("--html", action="store_true",
                        help="also write the HTML step-through player where the lesson has one")
    parser.add_argument("--notebook", action="store_true",
                        help="instead of running it, write the lesson as a Jupyter notebook, "
                             "NAME.ipynb, to --out (default: the current directory)")
    parser.set_defaults(handler=run_lesson)


def run_lesson(args) -> int:
    from . import lessons

    try:
        module = lessons.get(args.name)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.notebook:
        from .notebook import write_notebook

        path = write_notebook(args.name, Path(args.out or ".") / f"{args.name}.ipynb")
        print(f"wrote {path}  (open it with Jupyter, e.g. `jupyter lab {path}`)")
        return 0
    try:
        module.run(out_dir=args.out, step=args.step, html=args.html)
    except lessons.LessonCheckError as error:
        print(f"error: lesson {args.name}: {error}", file=sys.stderr)
        return 1
    return 0


# Add a command: write add_<name>(subparsers) that calls set_defaults(handler=...), and
# list it here.
COMMANDS = [add_example, add_lessons, add_lesson]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m viz", description="Draw and step through microtensor backward passes.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DotNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
