"""`amo1c-sync` command line. Each command lives in amo1c_sync/commands/<name>.py as main(args)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Sequence

from amo1c_sync import __version__
from amo1c_sync.errors import ConfigError, FatalError
from amo1c_sync.jobs import JOBS, Job

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="amo1c-sync",
        description="Integration between a clinic's amoCRM account and its 1C:Enterprise base.",
        epilog="Config: --config PATH, else ./sync.ini, else /etc/amo1c-sync/sync.ini.",
    )
    p.add_argument("--version", action="version", version=f"amo1c-sync {__version__}")
    p.add_argument("--config", metavar="PATH", help="sync.ini to use")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="overrides [logging] level")
    p.add_argument("--log-format", choices=["auto", "json", "console"],
                   help="overrides [logging] format (auto: console on a TTY, else JSON)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("run", help="run the daemon: every job on its interval, until SIGTERM")

    once = sub.add_parser("once", help="run jobs once by hand; exit 0 only if all of it worked")
    once.add_argument("jobs", nargs="*", metavar="JOB",
                      help="directory, registration, payments (default: all, in that order)")
    once.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    once.add_argument("--since", metavar="DATE", help="payments: widen the window back to DATE (backfill)")

    status = sub.add_parser("status", help="last runs, leader, pending and failed items, token state")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")

    trace = sub.add_parser("trace", help="everything done for one lead, in both directions")
    trace.add_argument("lead_id", type=int, metavar="LEAD_ID", help="the amoCRM lead id (сделка №)")
    trace.add_argument("--json", action="store_true", help="print JSON instead of text")

    slots = sub.add_parser("slots", help="doctors working on DATE, or one doctor's free times")
    slots.add_argument("date", metavar="DATE", help="22.12.2021 or 2021-12-22")
    slots.add_argument("--doctor", metavar="NAME", help="the doctor as 1C names them, e.g. \"Ефимова Е.В.\"")
    slots.add_argument("--json", action="store_true", help="print JSON (the shape /slots answers)")

    sub.add_parser("check", help="check the config, the store and both connections (read-only)")

    auth = sub.add_parser("auth", help="amoCRM OAuth: exchange an authorization code, or show token state")
    auth.add_argument("--code", metavar="CODE", help="authorization code from the integration's settings")
    auth.add_argument("--status", action="store_true", help="show the token state (default)")

    db = sub.add_parser("db", help="state store maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    up.add_argument("--revision", default="head", help="Alembic revision to migrate to (default: head)")

    _add_setup(sub)
    init = sub.add_parser("init", help="write the example sync.ini and the systemd unit from the installed package")
    init.add_argument("--dir", metavar="PATH", default=".",
                      help="where to write sync.ini and amo1c-sync.service (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")

    _add_sandbox_and_widget(sub)
    _describe(p)
    return p


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each subcommand's own --help opens with the line the command list shows for it."""
    # argparse has no public way to reach the subparsers and their help lines
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {a.dest: a.help for a in action._choices_actions}  # noqa: SLF001
            for name, child in action.choices.items():
                if child.description is None:
                    child.description = helps.get(name)
                _describe(child)


def _add_sandbox_and_widget(sub) -> None:
    sandbox = sub.add_parser("sandbox", help="emulators of both systems and the seed's story")
    sandbox.add_argument("action", nargs="?", choices=["story", "serve"], default="story",
                         help="story (default): play the seed's story end to end; serve: only serve "
                              "the emulators")
    sandbox.add_argument("--keep", action="store_true", help="story: keep everything running afterwards")
    sandbox.add_argument("--amo-port", type=int, default=0, metavar="N",
                         help="serve: port of the amoCRM emulator (default: any free one)")
    sandbox.add_argument("--onec-port", type=int, default=0, metavar="M",
                         help="serve: port of the 1C emulator (default: any free one)")
    sandbox.add_argument("--write-config", metavar="PATH",
                         help="serve: write a sync.ini pointing at the emulators (and authorise it)")
    sandbox.add_argument("--fresh", action="store_true",
                         help="serve: a new clinic's systems: no integration fields in amoCRM, no "
                              "«Клиент из AmoCRM» / «Номенклатура AmoCRM» in 1C (to try `setup`)")

    widget = sub.add_parser("widget", help="the amoCRM widget «Интеграция 1С»")
    widget_sub = widget.add_subparsers(dest="widget_command", metavar="ACTION", required=True)
    build = widget_sub.add_parser("build", help="make widget.zip for upload to amoCRM")
    build.add_argument("--out", default="widget.zip", metavar="PATH", help="where to write the zip")
    build.add_argument("--support-email", metavar="EMAIL",
                       help="support address the widget shows (yours or your integrator's)")
    build.add_argument("--support-url", metavar="URL", help="support page the widget shows")


def _add_setup(sub) -> None:
    setup = sub.add_parser("setup", help="guided set-up: create what amoCRM lacks, list what 1C lacks")
    setup_sub = setup.add_subparsers(dest="setup_command", metavar="SYSTEM", required=True)
    amo = setup_sub.add_parser("amocrm", help="create the lead fields the integration needs (never "
                                              "changes or deletes a field)")
    amo.add_argument("--dry-run", action="store_true", help="say what would be created, create nothing")
    onec = setup_sub.add_parser("1c", help="list which configured 1C objects and attributes are published "
                                           "(read-only unless --create-defaults)")
    onec.add_argument("--create-defaults", action="store_true",
                      help="create «Клиент из AmoCRM» and «Номенклатура AmoCRM» if they are missing")


def main(argv: list[str] | None = None, *, jobs: Sequence[Job] | None = None) -> int:
    """``jobs``: the jobs `run` and `once` work with instead of the product's (a test's fakes)."""
    args = build_parser().parse_args(argv)
    args.job_list = JOBS if jobs is None else tuple(jobs)
    module = importlib.import_module(f"amo1c_sync.commands.{args.command}")
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        try:
            return int(module.main(args) or 0)
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except FatalError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if exc.action:
                print(f"what to do: {exc.action}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            # `amo1c-sync slots … | head`: the reader left; say nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
