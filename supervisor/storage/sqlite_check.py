"""Whether the journal file at a path can be used, checked before anything opens it for real.

SQLite-specific, beside the storage that owns the tables: it reads the file without opening it as storage. The
directory exists and takes new files (SQLite writes ``-wal`` and ``-shm`` files beside the journal), the file
is an SQLite database, it is a journal of a schema this version knows, ``PRAGMA quick_check`` passes, and a
write transaction can start and write (rolled back: the check leaves the file as it found it). A file that
does not exist yet is fine when its directory is: the daemon creates it. Nothing here creates a directory.

Every problem is a :class:`JournalProblem` whose text is one line: the path, what is wrong, how to fix it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import quote

from supervisor.storage.sqlite_db import SCHEMA, SCHEMA_VERSION

MEMORY = ":memory:"
LOCK_TIMEOUT_SECONDS = 5.0
"""How long the write check waits for another process's write transaction (as the journal's busy timeout)."""

FIRST_TABLES = frozenset({"escalations", "events", "notices"})
"""The tables of schema version 1; every later version keeps them."""

_SQLITE_INTERNAL = frozenset({"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})
_MAX_NAMES = 5


class JournalProblem(Exception):
    """The journal at a path cannot be used; ``str()`` is one line naming the path, the problem and the fix."""


def check_journal_file(path: str | Path, *, writable: bool = True, setting: str = "journal.path") -> None:
    """Check that the journal at ``path`` can be opened (and, with ``writable``, written).

    Args:
        path: the journal file; ``":memory:"`` always passes.
        writable: also check that the directory takes new files and the file takes a write (the daemon);
            ``False`` for commands that only read (the file must then exist).
        setting: how the user named the path (``journal.path``, ``--path``), for the fix in a message.

    Raises:
        JournalProblem: the first problem found, as one line.
    """
    text = str(path)
    if text == MEMORY:
        return
    file = Path(text)
    if file.is_dir():
        raise JournalProblem(f"journal {text}: is a directory, not a file; set {setting} to a file in it, "
                             f"e.g. {file / 'athena-supervisor.db'}")
    directory = file.parent
    if not directory.exists():
        raise JournalProblem(f"journal {text}: directory {directory} does not exist; create it "
                             f"(mkdir -p {directory}) or set {setting} to a file in an existing directory")
    if not directory.is_dir():
        raise JournalProblem(f"journal {text}: {directory} is not a directory; set {setting} to a file in a "
                             "directory")
    if writable:
        _check_directory_takes_files(text, directory, setting)
    if not file.exists():
        if writable:
            return  # the daemon creates it
        raise JournalProblem(f"journal {text}: does not exist; start the daemon first, or set {setting} to "
                             "the daemon's journal")
    if not file.is_file():
        raise JournalProblem(f"journal {text}: not a regular file; set {setting} to a file")
    _check_database(text, file, writable=writable, setting=setting)


def _check_directory_takes_files(text: str, directory: Path, setting: str) -> None:
    try:
        handle, probe = tempfile.mkstemp(prefix=".athena-supervisor-check-", dir=directory)
    except OSError as error:
        raise JournalProblem(
            f"journal {text}: cannot create files in {directory} ({error.strerror or error}); SQLite keeps "
            f"-wal and -shm files beside the journal: give the daemon's user write access to the directory, "
            f"or set {setting} to a file in a writable one") from None
    os.close(handle)
    with contextlib.suppress(OSError):  # a directory that takes files but refuses to remove them
        os.unlink(probe)


def _check_database(text: str, file: Path, *, writable: bool, setting: str) -> None:
    # mode=rw even to only read: it never creates the file, and the last connection to close removes the
    # -wal and -shm files (read-only connections leave them behind, owned by whoever ran the command).
    uri = f"file:{quote(str(file.absolute()))}?mode=rw"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None)
    except sqlite3.Error as error:
        raise _problem(text, error, setting) from None
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        _check_schema(text, version, tables, setting)
        found = [str(row[0]) for row in db.execute("PRAGMA quick_check(1)")]
        if found != ["ok"]:
            raise JournalProblem(f"journal {text}: corrupt (quick_check: {_one_line(found[0] if found else '')}); "
                                 f"{_CORRUPT_FIX}")
        if writable:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TABLE athena_supervisor_write_check (x)")
            finally:
                db.execute("ROLLBACK")
    except sqlite3.Error as error:
        raise _problem(text, error, setting) from None
    finally:
        db.close()


@functools.cache
def current_tables() -> frozenset[str]:
    """The tables of the journal schema this version writes (:data:`supervisor.storage.sqlite_db.SCHEMA`)."""
    db = sqlite3.connect(MEMORY)
    try:
        db.executescript(SCHEMA)
        names = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()
    return frozenset(names - _SQLITE_INTERNAL)


def _check_schema(text: str, version: int, tables: set[str], setting: str) -> None:
    known = current_tables() | _SQLITE_INTERNAL
    if version > SCHEMA_VERSION:
        raise JournalProblem(f"journal {text}: schema version {version} is newer than this athena-supervisor "
                             f"understands ({SCHEMA_VERSION}); upgrade athena-supervisor, or set {setting} to "
                             "another file")
    if version < 0 or (version == 0 and tables - known):
        raise JournalProblem(f"journal {text}: an SQLite database but not an athena-supervisor journal (tables: "
                             f"{_names(tables - _SQLITE_INTERNAL)}); set {setting} to the daemon's journal, or to "
                             "a new file name to start a new journal")
    if version == 0:
        return  # empty, or a first start that stopped half way: the journal creates what is missing
    required = current_tables() if version == SCHEMA_VERSION else FIRST_TABLES
    missing = required - tables
    if missing:
        raise JournalProblem(f"journal {text}: schema version {version} but tables are missing "
                             f"({_names(missing)}); {_CORRUPT_FIX}")


_CORRUPT_FIX = ("restore it from a backup, or move it aside to start a new journal (open escalations are then "
                "forgotten)")

_FIXES = {
    "SQLITE_NOTADB": "set {setting} to the daemon's journal, or to a new file name to start a new journal",
    "SQLITE_CORRUPT": _CORRUPT_FIX,
    "SQLITE_READONLY": "give the daemon's user write access to the file and its directory",
    "SQLITE_BUSY": "another process holds a write lock on it: stop it (one daemon per journal)",
    "SQLITE_CANTOPEN": "check that the daemon's user may read and write the file and its directory",
    "SQLITE_PERM": "give the daemon's user write access to the file and its directory",
}
_WHAT = {
    "SQLITE_NOTADB": "not an SQLite database", "SQLITE_CORRUPT": "corrupt", "SQLITE_READONLY": "not writable",
    "SQLITE_BUSY": "locked", "SQLITE_CANTOPEN": "cannot be opened", "SQLITE_PERM": "not writable",
}


def _problem(text: str, error: sqlite3.Error, setting: str) -> JournalProblem:
    name = str(getattr(error, "sqlite_errorname", "") or "")
    base = next((key for key in _FIXES if name == key or name.startswith(key + "_")), "")
    what = _WHAT.get(base, "unusable")
    fix = _FIXES.get(base, "check the file, or set {setting} to another file").format(setting=setting)
    return JournalProblem(f"journal {text}: {what} ({_one_line(str(error))}); {fix}")


def _names(names: set[str] | frozenset[str]) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:_MAX_NAMES])
    return shown + (f" and {len(ordered) - _MAX_NAMES} more" if len(ordered) > _MAX_NAMES else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())
