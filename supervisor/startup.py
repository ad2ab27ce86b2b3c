"""Start or refuse clearly: what ``athena-supervisor run`` checks before it serves or acts.

Each check raises :class:`StartupError`, whose text is one line naming the thing (a config key, an
environment variable, a path, an address), what is wrong with it and how to fix it. The CLI prints it on
stderr and exits 2, without a traceback. The checks:

- the region is one botocore knows for Athena (any partition); with ``aws.endpoint_url`` set, any name of
  the shape of a region is accepted, since the endpoint decides;
- the profile (``aws.profile``, else ``AWS_PROFILE``/``AWS_DEFAULT_PROFILE``) is in the AWS config or
  credentials file;
- the journal: with SQLite, its directory exists and takes files, and the file (if any) is a sound, writable
  journal of a known schema (:mod:`supervisor.storage.sqlite_check`); a DynamoDB table is not looked at here
  (that takes the network; a missing table is reported by the first call, naming setup-dynamodb);
- the HTTP address resolves and can be bound.

Credentials and the network are not checked: the daemon reports them on ``/readyz`` and keeps trying.
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import botocore
from botocore.exceptions import BotoCoreError

if TYPE_CHECKING:  # the settings come validated from the caller (see check_journal for why not imported here)
    from supervisor.config import AwsSettings, Settings

REGION_PATTERN = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
"""The shape of a region name, accepted for any region when ``aws.endpoint_url`` is set."""

SERVICE = "athena"
REGION_VARIABLE = "ATHENA_SUPERVISOR_AWS_REGION"
PROFILE_VARIABLE = "ATHENA_SUPERVISOR_AWS_PROFILE"
DEFAULT_PROFILE_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")
_MAX_NAMES = 8


class StartupError(Exception):
    """A command cannot start with this input; ``str()`` is one line: the thing, the problem, the fix."""


def check_startup(settings: Settings, *, environ: Mapping[str, str] | None = None) -> None:
    """Check everything ``run`` needs before it serves or acts.

    Args:
        settings: the validated configuration.
        environ: the environment the settings were read with (``os.environ`` when ``None``); only used to
            name where a value came from.

    Raises:
        StartupError: the first problem, in the order region, profile, journal, HTTP address.
    """
    problems = startup_problems(settings, environ=environ)
    if problems:
        raise problems[0]


def startup_problems(settings: Settings, *, environ: Mapping[str, str] | None = None) -> list[StartupError]:
    """Every problem :func:`check_startup` would raise (each check runs; they are independent)."""
    checks: tuple[Callable[[], None], ...] = (
        lambda: check_region(settings.aws, environ=environ),
        lambda: check_profile(settings.aws, environ=environ),
        lambda: check_journal(settings.journal.path) if settings.journal.backend == "sqlite" else None,
        lambda: check_bind(settings.http.host, settings.http.port),
    )
    problems: list[StartupError] = []
    for check in checks:
        try:
            check()
        except StartupError as problem:
            problems.append(problem)
    return problems


def check_aws(aws: AwsSettings, *, environ: Mapping[str, str] | None = None) -> None:
    """The region and profile checks, for every command that calls AWS."""
    check_region(aws, environ=environ)
    check_profile(aws, environ=environ)


# --- region ------------------------------------------------------------------------------------------


@functools.cache
def known_regions(service: str = SERVICE) -> frozenset[str]:
    """Every region of every partition in which botocore's endpoint data lists ``service``."""
    import botocore.session  # here: a command that never needs it starts faster (botocore.client, its docs...)

    session = botocore.session.get_session()
    return frozenset(region for partition in session.get_available_partitions()
                     for region in session.get_available_regions(service, partition_name=partition))


def check_region(aws: AwsSettings, *, environ: Mapping[str, str] | None = None) -> None:
    """``aws.region`` is a region botocore knows for Athena, or (with ``aws.endpoint_url``) looks like one.

    Raises:
        StartupError: naming the region, where it came from, and the closest known region.
    """
    env = os.environ if environ is None else environ
    region = aws.region
    if aws.endpoint_url is not None and REGION_PATTERN.fullmatch(region):
        return  # without loading botocore's endpoint data (a third of a second)
    known = known_regions()
    if region in known:
        return
    where = REGION_VARIABLE if env.get(REGION_VARIABLE) else "aws.region"
    close = difflib.get_close_matches(region.lower(), sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    fix = f"set {where} to a region such as us-east-1"
    if aws.endpoint_url is not None:
        raise StartupError(f"{where} {region!r}: not a region name (with aws.endpoint_url set, any name like "
                           f"xx-name-1 is accepted); {hint}{fix}")
    raise StartupError(f"{where} {region!r}: not an AWS region with Athena (botocore {botocore.__version__}); "
                       f"{hint}{fix}; a region newer than botocore needs a botocore upgrade or aws.endpoint_url")


# --- profile -----------------------------------------------------------------------------------------


def check_profile(aws: AwsSettings, *, environ: Mapping[str, str] | None = None) -> None:
    """The named profile (``aws.profile``, else ``AWS_PROFILE``/``AWS_DEFAULT_PROFILE``) exists.

    botocore reads the files named by ``AWS_CONFIG_FILE`` and ``AWS_SHARED_CREDENTIALS_FILE`` (default
    ``~/.aws/config`` and ``~/.aws/credentials``); without a named profile there is nothing to check.

    Raises:
        StartupError: naming the profile, where it came from, the files looked in and the profiles there.
    """
    env = os.environ if environ is None else environ
    if aws.profile is not None:
        name, where = aws.profile, PROFILE_VARIABLE if env.get(PROFILE_VARIABLE) == aws.profile else "aws.profile"
    else:
        found = next((variable for variable in DEFAULT_PROFILE_VARIABLES if env.get(variable)), None)
        if found is None:
            return
        name, where = env[found], found
    import botocore.session

    session = botocore.session.Session()
    files = " or ".join(str(Path(str(session.get_config_variable(key))).expanduser())
                        for key in ("config_file", "credentials_file"))
    try:
        profiles = sorted(session.available_profiles)
    except BotoCoreError as error:
        raise StartupError(f"{where} {name!r}: cannot read the AWS config files {files} "
                           f"({' '.join(str(error).split())}); fix the file") from None
    if name in profiles:
        return
    shown = ", ".join(profiles[:_MAX_NAMES]) + (", ..." if len(profiles) > _MAX_NAMES else "")
    there = f"profiles there: {shown}" if profiles else "no profiles there"
    close = difflib.get_close_matches(name, profiles, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    unset = "unset it to use the default credential chain" if where in DEFAULT_PROFILE_VARIABLES else \
        "remove it to use the default credential chain"
    raise StartupError(f"{where} {name!r}: no such profile in {files} ({there}); {hint}add the profile, "
                       f"or {unset}")


# --- journal -----------------------------------------------------------------------------------------


def check_journal(path: str | Path, *, writable: bool = True, setting: str = "journal.path") -> None:
    """:func:`supervisor.storage.sqlite_check.check_journal_file`, its problem raised as a StartupError."""
    # Imported here: the storage package imports the config models (pydantic), ~0.3 s of CPU that a command
    # without a config or a journal (``emulator``, which needs StartupError and check_bind) would pay at start.
    from supervisor.storage.sqlite_check import JournalProblem, check_journal_file

    try:
        check_journal_file(path, writable=writable, setting=setting)
    except JournalProblem as problem:
        raise StartupError(str(problem)) from None


# --- listening address -------------------------------------------------------------------------------


def check_bind(host: str, port: int, *, host_setting: str = "http.host", port_setting: str = "http.port") -> None:
    """``host`` resolves and every address it resolves to can be bound on ``port`` (as the server will:
    SO_REUSEADDR, IPv6 sockets v6-only). Port 0 only checks the host. The sockets are closed again.

    Raises:
        StartupError: naming the host or port setting and what to change.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise StartupError(f"{host_setting} {host!r}: cannot resolve ({error.strerror}); set {host_setting} to "
                           "an address of this machine, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                           "interface)") from None
    except (OverflowError, UnicodeError) as error:
        raise StartupError(f"{host_setting} {host!r}: not a host name or address ({error}); set {host_setting} "
                           "to e.g. 127.0.0.1") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                raise _bind_problem(host, port, str(address[0]), error, host_setting, port_setting) from None


def _bind_problem(host: str, port: int, address: str, error: OSError, host_setting: str,
                  port_setting: str) -> StartupError:
    reason = error.strerror or str(error)
    shown = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    if error.errno == errno.EADDRINUSE:
        return StartupError(f"{port_setting} {port}: {shown} is already in use ({reason}); stop the process "
                            f"listening there, or set {port_setting} to a free port (0 picks one)")
    if error.errno == errno.EADDRNOTAVAIL:
        return StartupError(f"{host_setting} {host!r}: {address} is not an address of this machine ({reason}); "
                            f"set {host_setting} to one of its addresses, e.g. 127.0.0.1 or 0.0.0.0")
    if error.errno == errno.EACCES:
        return StartupError(f"{port_setting} {port}: not allowed to listen on {shown} ({reason}; ports below 1024 "
                            f"need privileges); set {port_setting} to 1024 or above")
    return StartupError(f"{host_setting}/{port_setting} {host}:{port}: cannot listen on {shown} ({reason}); "
                        f"change {host_setting} or {port_setting}")
