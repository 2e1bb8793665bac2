"""Command-line checks shared by the benchmark scripts: a bad value is refused in one line
before any database is created, and a database that cannot be reached is said in one line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import psycopg
import sqlalchemy.exc

from ..config import ConfigError, RoutingSettings
from .workload import Workload


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def int_from_to(low: int, high: int):
    """An argparse type: a whole number from ``low`` to ``high``."""
    def check(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}: from {low} to {high}")
        return value
    return check


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number") from None


def output_file(p: argparse.ArgumentParser, option: str, path: Path | None) -> None:
    """Refuse before the run a file that could not be written after it."""
    if path is None:
        return
    folder = path.resolve().parent
    if not folder.is_dir():
        p.error(f"{option} {path}: no such folder")
    if path.is_dir():
        p.error(f"{option} {path}: a folder, not a file")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        p.error(f"{option} {path}: not writable")


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: more than 0")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: 0 or more")
    return value


def share(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a share from 0 to 1")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text}: a finite number")
    return value


def workload(p: argparse.ArgumentParser, args: argparse.Namespace) -> Workload:
    """The workload the arguments describe, or the parser's one-line error: the bindings must
    fit on the numbers within the AXB limit, as the product would allow them."""
    try:
        load = Workload(args.bindings, args.numbers)
    except ValueError as exc:
        p.error(str(exc))
    limit = RoutingSettings().max_axb_per_number
    if -(-load.bindings // load.numbers) > limit:
        p.error(f"--bindings {load.bindings} on --numbers {load.numbers}: more than {limit} "
                "bindings on a number (routing.max_axb_per_number)")
    return load


@contextlib.contextmanager
def database_errors(prog: str):
    """A database that refuses the connection or a statement, or Ctrl-C, ends the script with
    one line (what the script made is undone on the way out, by its own ``finally``)."""
    try:
        yield
    except KeyboardInterrupt:
        sys.exit(f"{prog}: interrupted")
    except (psycopg.Error, sqlalchemy.exc.DBAPIError, sqlalchemy.exc.ArgumentError,
            ConfigError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        sys.exit(f"{prog}: database: {reason[0] if reason else type(exc).__name__}")
