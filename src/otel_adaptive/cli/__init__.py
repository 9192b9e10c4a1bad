"""The ``otel-adaptive`` command: demo, inspect, replay, doctor and config-doc.

Each command lives in its own module and registers its sub-parser; ``main``
parses the arguments and returns the exit status (0 success, 1 failure, 2 usage).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from otel_adaptive import __version__

_USAGE_ERROR = 2
_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    from otel_adaptive.cli import _config_doc, _demo, _doctor, _inspect, _replay

    parser = argparse.ArgumentParser(
        prog="otel-adaptive",
        description=(
            "Learn from agent runs traced with OpenTelemetry and serve hints for the next LLM "
            "call. Settings come from OTEL_ADAPTIVE_* variables (see `otel-adaptive config-doc`)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (_demo, _inspect, _replay, _doctor, _config_doc):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments == ["--version"]:  # answered before the commands (and the SDK) are imported
        sys.stdout.write(f"otel-adaptive {__version__}\n")
        return 0
    # Imported here: loading the commands loads the SDK, Redis and rich.
    from otel_adaptive.cli._common import CommandError, fail

    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else _USAGE_ERROR
    if args.command is None:
        parser.print_help()
        return _USAGE_ERROR
    try:
        status: int = args.run(args)
    except CommandError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return _INTERRUPTED
    return status


__all__ = ["build_parser", "main"]
