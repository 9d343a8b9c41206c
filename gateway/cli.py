"""The `bertgw` command: one entry point, one subcommand per job.

Each subcommand lives in the module that does the work and exposes two functions:
`configure(parser)` adds its arguments and `run(args) -> int` does the job. Only the
chosen subcommand's module is imported, so `bertgw --help` stays fast and a client
command never loads torch or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

# name -> (module, one-line help shown by `bertgw --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "finetune": (
        "replicas.finetune",
        "fine-tune a BERT checkpoint on a CSV of text,label and write a model "
        "directory with its label map and model card",
    ),
    "calibrate": (
        "replicas.calibration",
        "measure a checkpoint's sequences/s over batch sizes and token lengths on "
        "this device and write its capacity profile (JSON)",
    ),
    "serve": (
        "gateway.serve",
        "start the gateway from a deployment config (YAML) on a local or given "
        "Ray cluster; Ctrl-C drains and stops it",
    ),
    "classify": (
        "gateway.client",
        "send texts to a running gateway over HTTP or gRPC and print the labels",
    ),
    "loadtest": (
        "loadtest.cli",
        "replay a real trace or a synthetic shape against a gateway (open loop) "
        "and write records, a summary and plots",
    ),
    "simulate": (
        "loadtest.sim.cli",
        "run the router and autoscaler in the discrete-event simulator against "
        "baselines and the offline cost bound",
    ),
    "demo": (
        "loadtest.demo",
        "the main job end to end: fine-tune the demo model (cached), serve it, "
        "replay real traffic through both protocols and report",
    ),
}


def _has_default(action: argparse.Action) -> bool:
    """Whether an option has a default worth showing: a number, text or path."""
    default = action.default
    return (
        bool(action.option_strings)
        and isinstance(default, (int, float, str, Path))
        and not isinstance(default, bool)
        and default != ""
        and default is not argparse.SUPPRESS
    )


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertgw",
        description="bert-gateway: serve fine-tuned BERT classifiers across clouds, "
        "routing each request on latency and price.",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level for the gateway's own loggers (default: WARNING)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.configure(sub)
            for action in sub._actions:
                # End each option's help with its default, unless it says it.
                text = action.help or ""
                if _has_default(action) and "default" not in text:
                    action.help = f"{text} (default: %(default)s)".strip()
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
