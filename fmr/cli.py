"""The `fmr` command.

Each sub-command lives in `fmr/commands/<name>.py` with `HELP` (one line), `DESCRIPTION`,
`add_arguments(parser)` and `run(args) -> int`. Those modules import only the standard library
at the top, so `fmr --help` and light commands start fast; the heavy imports (torch, MTCNN,
dlib) happen inside `run`.

Exit codes: 0 when the command ran (a batch with some failed items included: they are in its
manifest), 2 for usage errors and for single-item commands whose item failed, 1 for bugs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module under fmr.commands; the order is the order `fmr --help` lists them in.
COMMANDS: dict[str, str] = {
    "align": "align",
    "mask": "mask",
    "verify": "verify",
    "embed": "embed",
    "gallery": "gallery",
    "eval": "evaluate",
    "prepare": "prepare",
    "export": "export",
    "models": "models",
}

EPILOG = """\
Batch commands (align, mask, embed, prepare) take files and folders (searched recursively),
mirror the input tree under --out, write manifest.csv with one row per input (status ok or
failed, and the reason), and exit 0 when the batch ran even if some inputs failed.
Run `fmr COMMAND --help` for the options of one command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmr",
        description="Masked face recognition: align faces, draw synthetic masks, verify pairs, "
        "evaluate and export IResNet / ResSaNet models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from fmr import __version__

    parser.add_argument("--version", action="version", version=f"fmr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"fmr.commands.{module_name}")
        except ModuleNotFoundError as exc:  # a command not written yet stays out of --help
            if exc.name == f"fmr.commands.{module_name}":
                continue
            raise
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fmr.errors import FmrError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except FmrError as exc:
        print(f"fmr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fmr {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`fmr models | head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
