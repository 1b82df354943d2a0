"""Command line: ``python -m brainseg_lib <command>`` (also installed as ``brainseg``).

Run the study
  run-study --profile P     every notebook of a profile, then one swap into results/ (./run_all.sh)
  train [--profile P]       train and evaluate one run (cpu by default, paper on CUDA; DDP under torchrun)
  sweep [--plan] [--jobs N] seeds x splits x losses -> results/sweep/ (or a job-array plan)
  levers                    the lever trials that chose the cpu profile -> results/levers/
  release-levers            the lever trials that choose the released model (VAL, external dev)
  head-frames               how much of each frame the head fills, by set (round 7's reason)
  healthy-split             split Br35H's no/ scans by near-duplicate group (splits/)
Results
  evaluate --checkpoint C   score a checkpoint on a split, write CSV + JSON
  table                     rebuild Table I from results/metrics/*.json
  headline [--profile P]    print the headline metrics of finished runs
  update-readme             rewrite README.md's generated sections from the result files
  release                   publish results/models/brainseg-cpu.pt with its model card
  evaluate-release          score the released model on TEST, healthy and external scans
  report                    render results/report/ (HTML) from the executed notebooks
  score-volumes             per-patient 3-D Dice and volume error on the external volumes
  screenshots               screenshot the report in headless Chromium, check nothing overflows
Use the model and the data
  fetch-data [--dest D]     download Br35H and verify every file against references/br35h.sha256
  build-external --source S build the external TCGA-LGG set from Kaggle's kaggle_3m, verified
  check-data                verify the dataset layout and that every annotation rasterises
  predict --input ...       segment your own scans (masks, overlays, predictions.csv)
  export --format onnx      write results/models/brainseg-cpu.onnx for onnxruntime
  bench [--profile P]       speed benchmark -> results/benchmarks/<device>-<profile>.json

`python -m brainseg_lib <command> --help` gives a command's options.
"""
from __future__ import annotations

import argparse
import logging
import sys

from brainseg_lib.cli import study_commands, user_commands
from brainseg_lib.report.screenshots import add_screenshots_parser


# the commands user_commands.register adds: registering them imports torch, nbformat and
# PIL (their parsers live beside their code), so they are registered only when one of them
# is asked for (``main``); ``--help`` and every other command stay light (tests/test_cli_help.py)
USER_COMMANDS = ("predict", "bench", "fetch-data", "build-external", "report", "export")


def build_parser(command: str | None = "") -> argparse.ArgumentParser:
    """The ``brainseg`` argument parser. ``command=""`` (the default): every sub-command with
    its options; a command name or None (none given): that command's options only, the others
    as bare names, so nothing heavy is imported for a parser that will not run them. The
    commands are listed once, by the description above, not again by argparse."""
    p = argparse.ArgumentParser(prog="brainseg", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="Br35H folder (default: $BRAINSEG_DATA or data/br35h)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="<command>",
                           help="one of the commands listed above")
    study_commands.register(sub)
    add_screenshots_parser(sub)
    if command == "" or command in USER_COMMANDS:
        user_commands.register(sub, None if command == "" else command)
    else:
        for name in USER_COMMANDS:
            sub.add_parser(name, add_help=False)
    sub._choices_actions.clear()     # argparse would list every command a second time
    return p


def command_in(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option or the value
    of ``--data``), or None."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--data":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def main(argv=None) -> int:
    """Run one command; returns its exit status (2 for a problem the message explains)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_in(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    from brainseg_lib.data.errors import DataError
    from brainseg_lib.fileio import Locked
    from brainseg_lib.model.checkpoint import CheckpointError
    try:
        from brainseg_lib.study.staging import recover_for_command
        recover_for_command()        # finish or undo a results swap a crash interrupted, first
        return args.fn(args)
    except (DataError, CheckpointError, FileNotFoundError, ValueError, Locked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:          # predict's own says how many rows it wrote
        print(str(e) or "interrupted; every file written so far is complete (writes are atomic)",
              file=sys.stderr)
        return 130
    except PermissionError as e:
        print(f"error: permission denied: {e.filename or e}; choose a folder you can "
              "write to (or read from)", file=sys.stderr)
        return 2
    except OSError as e:                    # read-only file system, not a folder, no space, ...
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2


def os_error_line(e: OSError) -> str:
    """One line for an OS error: the path(s) it names and the system's reason."""
    import errno
    import os
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    reason = e.strerror or str(e) or type(e).__name__
    if e.errno == errno.ENOTDIR or (e.errno == errno.EEXIST and e.filename is not None
                                    and os.path.lexists(e.filename) and not os.path.isdir(e.filename)):
        reason += " (a file stands where a folder is needed)"
    return f"{where}: {reason}" if where else reason
