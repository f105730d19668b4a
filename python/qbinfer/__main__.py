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
                value = ", ".join(value)
            print(f"  {key}: {value}")
    else:
        print(f"  compiled ISAs: {', '.join(info['compiled_isas'])} ({info['target_arch']})")
    return 0


def _add_version(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the version and how the extension was built")
    p.add_argument("-v", "--verbose", action="store_true", help="print every build detail")
    p.set_defaults(func=_cmd_version)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_version]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qbinfer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
