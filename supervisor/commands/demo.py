"""``athena-supervisor demo``: the supervisor against the embedded emulator, with a narrated workload.

Exit status: 0 when every scripted target ended as expected, 1 when one did not, 2 on a configuration
problem.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import anyio

from supervisor.commands.optional import EXIT_UNAVAILABLE, emulator_available
from supervisor.config import ConfigError, Settings, load_settings
from supervisor.demo import scenario
from supervisor.logs import configure_logging
from supervisor.startup import check_journal

PACKAGED_CONFIG = "resources/demo.yaml"
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                        "AWS_DEFAULT_PROFILE")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the supervisor against the embedded emulator with a scripted workload (no AWS needed)",
        description="Start the Athena Spark emulator and the supervisor (config/demo.yaml) in this process, play "
                    "a scripted workload, narrate what the supervisor does, print a summary; about 15 seconds.",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="a copy of config/demo.yaml with other limits (default: the packaged demo.yaml)")
    parser.add_argument("--journal", metavar="PATH",
                        help="journal database to write (default: a fresh file in a new temporary directory)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="error",
                        help="daemon and emulator logs (JSON on stderr) at this level and above (default error)")
    parser.set_defaults(func=run)


def load_demo_settings(path: str | None) -> tuple[Settings, str]:
    """The demo's settings and a name for them. The environment is ignored: the demo only talks to its
    emulator."""
    if path is not None:
        return load_settings(path, environ={}), path
    with resources.as_file(resources.files("supervisor").joinpath(PACKAGED_CONFIG)) as packaged:
        return load_settings(packaged, environ={}), "config/demo.yaml (the packaged copy)"


@contextmanager
def dummy_credentials(environ: MutableMapping[str, str]) -> Iterator[str | None]:
    """Sign with dummy credentials (the emulator accepts any) while the demo runs; never the user's.

    Yields a note for the user when their own credentials or profile were set (and are not used).
    """
    saved = {name: environ[name] for name in CREDENTIAL_VARIABLES if name in environ}
    for name in CREDENTIAL_VARIABLES:
        environ.pop(name, None)
    environ["AWS_ACCESS_KEY_ID"] = "demo"
    environ["AWS_SECRET_ACCESS_KEY"] = "demo"
    try:
        yield ("your AWS credentials/profile from the environment are not used: the demo signs with dummy "
               "credentials, which the emulator accepts") if saved else None
    finally:
        for name in CREDENTIAL_VARIABLES:
            environ.pop(name, None)
        environ.update(saved)


def run(args: argparse.Namespace) -> int:
    if not emulator_available("demo"):
        return EXIT_UNAVAILABLE
    # The runner embeds the emulator: imported here so that loading the CLI never loads the emulator.
    from supervisor.demo.runner import run_demo

    try:
        settings, config_name = load_demo_settings(args.config)
        story = scenario.build(settings)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except scenario.DemoConfigError as error:
        print(f"{args.config}: not usable for the demo: {error}", file=sys.stderr)
        return 2
    if args.journal:
        check_journal(Path(args.journal).expanduser().absolute(), setting="--journal")
    configure_logging(args.log_level, stream=sys.stderr)
    with ExitStack() as stack:
        if args.journal:
            journal_path = Path(args.journal).expanduser().absolute()
        else:
            journal_path = Path(tempfile.mkdtemp(prefix="athena-supervisor-demo-")) / "journal.db"
        note = stack.enter_context(dummy_credentials(os.environ))
        try:
            exit_code: int = anyio.run(lambda: run_demo(
                settings, story, out=sys.stdout, journal_path=journal_path, config_name=config_name,
                credentials_note=note,
            ))
        except KeyboardInterrupt:
            print("\ndemo interrupted", file=sys.stderr)
            return 130
    return exit_code
