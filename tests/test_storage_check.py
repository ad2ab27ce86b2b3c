"""The journal checks against real files: missing directories, foreign and corrupt files, read-only places."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.storage.sqlite import SqliteStorage
from supervisor.storage.sqlite_check import FIRST_TABLES, JournalProblem, check_journal_file, current_tables
from supervisor.storage.sqlite_db import SCHEMA_VERSION

NOBODY = 65534


def problem(path: Path | str, *, writable: bool = True, setting: str = "journal.path") -> str:
    with pytest.raises(JournalProblem) as caught:
        check_journal_file(path, writable=writable, setting=setting)
    text = str(caught.value)
    assert "\n" not in text
    return text


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    SqliteStorage(path).close_now()
    return path


def test_a_fresh_path_in_an_existing_directory_passes_and_nothing_is_created(tmp_path: Path) -> None:
    check_journal_file(tmp_path / "new.db")
    assert list(tmp_path.iterdir()) == []


def test_memory_passes() -> None:
    check_journal_file(":memory:")
    check_journal_file(":memory:", writable=False)


def test_a_journal_passes_and_is_left_as_it_was(good: Path) -> None:
    before = good.read_bytes()
    check_journal_file(good)
    check_journal_file(good, writable=False)
    assert good.read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["journal.db"], "no -wal/-shm or probe file left"
    tables = {row[0] for row in sqlite3.connect(good).execute("SELECT name FROM sqlite_master")}
    assert "athena_supervisor_write_check" not in tables


def test_a_missing_directory_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "deeper" / "journal.db"
    assert problem(path) == (
        f"journal {path}: directory {path.parent} does not exist; create it (mkdir -p {path.parent}) or set "
        "journal.path to a file in an existing directory")
    assert not path.parent.exists()


def test_a_directory_is_not_a_journal(tmp_path: Path) -> None:
    assert problem(tmp_path) == (f"journal {tmp_path}: is a directory, not a file; set journal.path to a file in "
                                 f"it, e.g. {tmp_path / 'athena-supervisor.db'}")


def test_a_file_as_the_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert problem(tmp_path / "file" / "j.db", setting="--path").startswith(
        f"journal {tmp_path / 'file' / 'j.db'}: {tmp_path / 'file'} is not a directory; set --path")


def test_a_text_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50)
    assert problem(path, setting="--path") == (
        f"journal {path}: not an SQLite database (file is not a database); set --path to the daemon's journal, "
        "or to a new file name to start a new journal")


def test_another_programs_database_is_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).executescript("CREATE TABLE users (id); CREATE TABLE orders (id);")
    assert problem(path) == (
        f"journal {path}: an SQLite database but not an athena-supervisor journal (tables: orders, users); set "
        "journal.path to the daemon's journal, or to a new file name to start a new journal")


def test_an_empty_database_and_a_half_created_journal_pass(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    check_journal_file(empty)
    half = tmp_path / "half.db"
    sqlite3.connect(half).executescript("CREATE TABLE escalations (x); CREATE TABLE events (x);")
    check_journal_file(half)


def test_a_newer_schema_is_refused(good: Path) -> None:
    db = sqlite3.connect(good)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    assert problem(good) == (
        f"journal {good}: schema version {SCHEMA_VERSION + 1} is newer than this athena-supervisor understands "
        f"({SCHEMA_VERSION}); upgrade athena-supervisor, or set journal.path to another file")


def test_missing_tables_are_reported(good: Path) -> None:
    sqlite3.connect(good, isolation_level=None).execute("DROP TABLE events")
    assert problem(good).startswith(f"journal {good}: schema version {SCHEMA_VERSION} but tables are missing "
                                    "(events); restore it from a backup, or move it aside")


def test_an_older_schema_needs_only_its_own_tables(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript("".join(f"CREATE TABLE {name} (x);" for name in FIRST_TABLES) + "PRAGMA user_version=1;")
    db.close()
    check_journal_file(path)
    assert FIRST_TABLES.issubset(current_tables())


def _corrupt(path: Path) -> None:
    SqliteStorage(path).close_now()  # a journal with its schema; then enough rows for many pages, in one commit
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")  # everything in the main file, no WAL left beside it
        db.execute("BEGIN")
        db.executemany("INSERT INTO notices VALUES (?, ?)",
                       ((f"notice-{i}" * 30, "2026-01-01T00:00:00+00:00") for i in range(3000)))
        db.execute("COMMIT")
    finally:
        db.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):  # every page's header after the first two
        data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def test_a_corrupt_journal_is_reported_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    _corrupt(path)
    text = problem(path)
    assert text.startswith(f"journal {path}: corrupt (")
    assert "malformed" in text or "quick_check" in text
    assert text.endswith("restore it from a backup, or move it aside to start a new journal (open escalations "
                         "are then forgotten)")


def test_a_write_lock_held_elsewhere_is_reported(good: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("supervisor.storage.sqlite_check.LOCK_TIMEOUT_SECONDS", 0.1)
    other = sqlite3.connect(good, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")
    try:
        assert problem(good).startswith(f"journal {good}: locked (database is locked); another process holds a "
                                        "write lock on it")
    finally:
        other.execute("ROLLBACK")
        other.close()


# --- permissions: as an unprivileged user (root may write anywhere) ----------------------------------


def as_unprivileged(check: Callable[[], None]) -> str:
    """Run ``check`` as a user without privileges; its JournalProblem text, or "" when it passed.

    As root the check runs in a forked child that switches to ``nobody`` (no new interpreter needed).
    """
    if os.geteuid() != 0:
        try:
            check()
        except JournalProblem as caught:
            return str(caught)
        return ""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                check()
            except JournalProblem as caught:
                os.write(write, str(caught).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as stream:
        text = stream.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged check crashed"
    return text


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="journal-check-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for child in path.rglob("*"):
            child.chmod(0o777)
        for child in sorted(path.rglob("*"), reverse=True):
            child.unlink() if not child.is_dir() else child.rmdir()
        path.rmdir()


needs_posix = pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"), reason="POSIX permissions")


@needs_posix
def test_a_read_only_file_is_refused_before_the_first_action(place: Path) -> None:
    directory = place / "data"
    directory.mkdir()
    path = directory / "journal.db"
    SqliteStorage(path).close_now()
    path.chmod(0o444)
    directory.chmod(0o777)
    assert as_unprivileged(lambda: check_journal_file(path)) == (
        f"journal {path}: not writable (attempt to write a readonly database); give the daemon's user write "
        "access to the file and its directory")


@needs_posix
def test_a_read_only_directory_is_refused_since_wal_needs_it(place: Path) -> None:
    directory = place / "data"
    directory.mkdir()
    path = directory / "journal.db"
    SqliteStorage(path).close_now()
    path.chmod(0o666)
    directory.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)  # 0755, not ours
    if os.geteuid() != 0:
        directory.chmod(0o555)
    assert as_unprivileged(lambda: check_journal_file(path)) == (
        f"journal {path}: cannot create files in {directory} (Permission denied); SQLite keeps -wal and -shm "
        "files beside the journal: give the daemon's user write access to the directory, or set journal.path "
        "to a file in a writable one")
    assert as_unprivileged(lambda: check_journal_file(directory / "new.db")).startswith(
        f"journal {directory / 'new.db'}: cannot create files in {directory} (Permission denied)")
