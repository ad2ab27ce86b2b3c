from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.httpsession import where

# Bytecode is cached during a test run even where PYTHONDONTWRITEBYTECODE is set (as on the shared development
# machine): without it, every xdist worker compiles and assertion-rewrites each test module again (~5 s of CPU per
# worker), and each of the ~30 Python processes the tests start compiles the supervisor and the emulator again
# (~0.4 s each). The files go where Python and pytest always put them (``__pycache__``, ignored by git). Set
# before the plugins below and the test modules are imported; the processes the tests start inherit it through
# ``aws_test_credentials``.
sys.dont_write_bytecode = False

# The emulator fixtures come from the `pytest11` entry point of this distribution (pyproject.toml).
pytest_plugins = ["tests.virtual_fixtures", "tests.dynamodb_fixtures", "tests.background"]

MEMORY_TEMPROOT = Path("/dev/shm")


def pytest_configure(config: pytest.Config) -> None:
    """Temporary directories (``tmp_path``) in memory where the machine has a tmpfs at /dev/shm, unless
    ``--basetemp`` or ``PYTEST_DEBUG_TEMPROOT`` says otherwise.

    The daemon's journal commits with ``synchronous=FULL``: on a disk each commit waits for an fsync (2-3 ms
    here, more under load), and a virtual-time scenario waits for every one of them (the driver waits for the
    worker threads). On tmpfs an fsync returns at once. xdist's workers get their directories from here.
    """
    if config.option.basetemp is None and MEMORY_TEMPROOT.is_dir() and os.access(MEMORY_TEMPROOT, os.W_OK):
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(MEMORY_TEMPROOT))
    _freeze_what_lives()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a command in this process (``main([...])``) configures logging for the process (level,
    stream); the next tests get the configuration they started with, not that one."""
    import logging

    import structlog

    structlog_config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**structlog_config)
        root.handlers[:] = handlers
        root.setLevel(level)


def pytest_collection_finish(session: pytest.Session) -> None:
    _freeze_what_lives()


# Tests run between two freezes of what has lived through them (see _freeze_what_lives).
TESTS_PER_FREEZE = 50
_tests_since_freeze = 0


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish() -> None:
    global _tests_since_freeze
    _tests_since_freeze += 1
    if _tests_since_freeze >= TESTS_PER_FREEZE:
        _tests_since_freeze = 0
        gc.collect()  # the garbage of the tests since the last freeze goes first: frozen, it would stay
        _freeze_what_lives()


def _freeze_what_lives() -> None:
    """Keep the garbage collector's full collections off what lives until the end of the run.

    A test process holds a large heap of objects that live to its end (pytest and its plugins, botocore,
    aiohttp, pydantic, the daemon and the emulator; after collection, the test modules and items); every
    full collection walks all of it, and rewriting the test modules' asserts triggers hundreds. Frozen, they
    are left out (``gc.freeze``): collecting the suite takes ~5 s of CPU per process instead of ~7.

    The heap goes on growing while the tests run, from ~130,000 objects to ~470,000 in one process: modules
    imported by the tests that need them (moto's services, cfn-lint), botocore's parsed service models, moto's
    tables, pytest's reports. A full collection then took ~0.4 s, and the ~30 a process makes ~9 s of its ~85 s
    of CPU. So every ``TESTS_PER_FREEZE`` tests, after a collection of what is garbage by then, what survived is
    frozen as well: 9 s → 3 s. (Objects frozen and later dropped are still freed by their reference counts; only
    a cycle freed after its freeze stays until the end of the process.)
    """
    gc.freeze()


@pytest.fixture(scope="session")
def one_certificate_ca_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA bundle of one certificate (the first of botocore's default bundle).

    Every botocore client loads its CA bundle into a new SSL context (aiobotocore: at its first request), even
    for an ``http://`` endpoint: ~65 ms of CPU for the 200 kB default bundle, more than the rest of creating
    the client. The tests talk plain HTTP on loopback only, so a one-certificate bundle changes nothing else.
    """
    bundle = Path(where()).read_text(encoding="ascii")
    end = "-----END CERTIFICATE-----"
    path = tmp_path_factory.mktemp("ca") / "one-certificate.pem"
    path.write_text(bundle[bundle.index("-----BEGIN CERTIFICATE-----"):bundle.index(end) + len(end)] + "\n",
                    encoding="ascii")
    return path


@pytest.fixture(scope="session", autouse=True)
def aws_test_credentials(one_certificate_ca_bundle: Path) -> Iterator[None]:
    """The emulator accepts any SigV4 credentials; make sure none from the machine are used (nor its CA
    bundle: the tests' clients, and the processes they start, load the one-certificate bundle).

    For the whole session, so that the scenarios running in the background (tests/background.py) see it too; a
    test that changes one of these variables (``monkeypatch``, ``no_aws_credentials``) is undone to it. The
    processes the tests start also cache their bytecode (no ``PYTHONDONTWRITEBYTECODE``; see the top of this file).
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_CA_BUNDLE", str(one_certificate_ca_bundle))
        # aiohttp builds its default SSL context when it is imported, from OpenSSL's default bundle: ~50 ms of CPU
        # in each of the ~30 processes the tests start (daemons, replicas, emulators) that talk plain HTTP only.
        monkeypatch.setenv("SSL_CERT_FILE", str(one_certificate_ca_bundle))
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ATHENA"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # see sys.dont_write_bytecode above
        yield


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere botocore looks (environment, files, instance metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
