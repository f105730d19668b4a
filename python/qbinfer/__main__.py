"""The qbinfer command line: qbinfer COMMAND [options]; qbinfer COMMAND --help for each.

Each subcommand has a function that registers its parser and sets `func`; add new ones to
`_COMMANDS`. Errors a user can make (a missing or damaged file, a bad option value) print one
line on stderr and exit with status 1; --debug prints the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, Sequence

from . import cli_predict
from .text import printable

DESCRIPTION = (
    "qbinfer: run binarized CNNs (.qbw files) on the CPU.\n"
    "Use 'qbinfer COMMAND --help' for the options of a command."
)
EPILOG = (
    "examples:\n"
    "  qbinfer predict model.qbw cat.jpg photos/ --top-k 3\n"
    "  qbinfer segment seg.qbw street.jpg -o masks/\n"
    "  qbinfer summary model.qbw\n"
    "  qbinfer profile model.qbw --trace trace.json --png profile.png\n"
    "  qbinfer demo"
)


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


def _add_version(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "version",
        parents=[common],
        help="print the version and how the extension was built",
        description="Print the version, the ISAs compiled in and the one in use.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print every build detail")
    p.set_defaults(func=_cmd_version)


# -- summary --------------------------------------------------------------------------------


def _cmd_summary(args: argparse.Namespace) -> int:
    from .model import load

    print(load(args.model).summary())
    return 0


def _add_summary(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "summary",
        parents=[common],
        help="list the ops, shapes, parameters and storage of a .qbw file",
        description="List the ops of a .qbw file with their output shapes, parameters, "
        "storage and operation counts; the last column is the op's whole name.",
    )
    p.add_argument("model", help="the .qbw model file")
    p.set_defaults(func=_cmd_summary)


# -- profile --------------------------------------------------------------------------------


def _cmd_profile(args: argparse.Namespace) -> int:
    import json

    if args.png:  # fail before the timing runs, not after them
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError(
                "--png needs matplotlib: pip install 'qbinfer[plot]' (or pip install matplotlib)"
            ) from None
    model = cli_predict.load_model(args.model, args.threads)
    profile = model.profile(args.image, runs=args.runs)
    if args.json:
        print(json.dumps(profile.to_dict()))
    else:
        print(profile.table(name_width=args.name_width))
    notes = []
    if args.trace:
        profile.save_chrome_trace(args.trace)
        notes.append(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    if args.png:
        profile.plot(args.png)
        notes.append(f"chart written to {args.png}")
    for note in notes:
        print(printable(note), file=sys.stderr)
    return 0


def _add_profile(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "profile",
        parents=[common],
        help="time every step of a model and name the PyTorch layers it came from",
        description="Time every step of a run of one image (median over --runs runs): time, "
        "share, float and binary MAC rates, bytes moved and the PyTorch module each step came "
        "from (recorded by the converter). Optionally write a Chrome trace (chrome://tracing, "
        "Perfetto) and a PNG bar chart (needs matplotlib).",
    )
    p.add_argument("model", help="the .qbw model file")
    p.add_argument(
        "--runs",
        type=cli_predict.positive_int,
        default=20,
        metavar="N",
        help="timed runs; each step's median is reported (default 20)",
    )
    cli_predict.add_threads_option(p)
    p.add_argument(
        "--image",
        metavar="PATH",
        help="an image to run (default: a fixed random input of the model's shape)",
    )
    p.add_argument("--trace", metavar="OUT.json", help="write a Chrome-trace JSON file here")
    p.add_argument("--png", metavar="OUT.png", help="write a bar chart of the time per layer here")
    p.add_argument("--json", action="store_true", help="print the profile as one JSON object")
    p.add_argument(
        "--name-width",
        type=int,
        default=0,
        metavar="W",
        help="shorten layer names longer than W characters in the middle (default: whole)",
    )
    p.set_defaults(func=_cmd_profile)


def _add_predict(sub: Any, common: argparse.ArgumentParser) -> None:
    cli_predict.add_parser(sub, common)


def _add_segment(sub: Any, common: argparse.ArgumentParser) -> None:
    from .cli_segment import add_parser

    add_parser(sub, common)


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    from .demo import add_parser

    add_parser(sub, common)


_COMMANDS: List[Callable[[Any, argparse.ArgumentParser], None]] = [
    _add_demo,
    _add_predict,
    _add_profile,
    _add_segment,
    _add_summary,
    _add_version,
]


def build_parser() -> argparse.ArgumentParser:
    from ._core import __version__

    parser = argparse.ArgumentParser(
        prog="qbinfer",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"qbinfer {__version__}", help="print the version"
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, print the whole traceback"
    )
    # Every command takes --debug too (after its name); SUPPRESS keeps a --debug given before
    # the command from being reset by the command's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, print the whole traceback",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub, common)
    return parser


# Errors of the user's making (files, inputs, options, missing optional packages): one line.
# Anything else is unexpected and says how to get the traceback.
_USER_ERRORS: tuple = (OSError, ValueError, TypeError, ImportError, LookupError)


def _error_line(command: str, exc: BaseException) -> str:
    from ._core import Error

    message = cli_predict.one_line(exc)
    if isinstance(exc, Error):
        message = f"{type(exc).__name__}: {message}"
    elif not isinstance(exc, _USER_ERRORS):
        message = (
            f"{type(exc).__name__}: {message} (unexpected: run with --debug for the traceback)"
        )
    return f"qbinfer {command}: error: {message}"


def _silence_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that the interpreter's final flush
    does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:  # `qbinfer summary m.qbw | head -1`: the reader left; so do we
        _silence_stdout()
        return 141  # what a shell reports for a process ended by SIGPIPE (128 + 13)
    except KeyboardInterrupt:
        print(f"\nqbinfer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(_error_line(args.command, exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
