"""The ``qbinfer`` command line.

Each subcommand is a function that registers its parser and sets ``func``; add new
ones to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


def _cmd_version(args: argparse.Namespace) -> int:
    from . import _core

    info = _core.build_info()
    print(f"qbinfer {info['version']}")
    if args.verbose:
        for key in sorted(info):
            value = info[key]
            if isinstance(value, (tuple, list)):
                value = ", ".join(str(v) for v in value)
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
            print(f"  {key}: {value}")
    else:
        isas = ", ".join(str(v) for v in info["compiled_isas"])  # type: ignore[attr-defined]
        print(f"  compiled ISAs: {isas} ({info['target_arch']})")
        print(f"  active ISA: {info['active_isa']}")
    return 0


def _add_version(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the version and how the extension was built")
    p.add_argument("-v", "--verbose", action="store_true", help="print every build detail")
    p.set_defaults(func=_cmd_version)


def _cmd_summary(args: argparse.Namespace) -> int:
    from .model import load

    print(load(args.model).summary())
    return 0


def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary", help="list the ops, shapes, parameters and storage of a .qbw file"
    )
    p.add_argument("model", help="a .qbw file")
    p.set_defaults(func=_cmd_summary)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .model import load

    model = load(args.model, threads=args.threads)
    for image in args.images:
        top = model.predict(image, top_k=args.top_k)
        print(image + ": " + ", ".join(f"{name} {p:.3f}" for name, p in top))
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files with a .qbw model")
    p.add_argument("model", help="a .qbw file")
    p.add_argument(
        "images", nargs="+", help="image files (JPEG, PNG, ... need Pillow; .npy works without)"
    )
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_cmd_predict)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from .demo import add_parser

    add_parser(sub)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_predict,
    _add_summary,
    _add_version,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qbinfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ._core import Error

    try:
        return int(args.func(args))
    except (Error, OSError) as exc:  # a bad file or input: say what, not a traceback
        print(f"qbinfer {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
