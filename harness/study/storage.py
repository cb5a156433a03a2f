"""Optuna storages by URL: any RDB URL (sqlite, postgresql, mysql) or `journal:PATH`; the embedded defaults.

RDB storages get trial heartbeats, so a trial whose worker died on any machine
ends FAIL. A journal file is Optuna's advice for many processes on one machine,
where SQLite would lock. A storage that cannot be opened is a `StorageError`:
one line, password redacted, naming the missing driver's extra or the
unreachable server, after at most `CONNECT_TIMEOUT` seconds.
"""

import contextlib
import os
import sqlite3
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
import sqlalchemy.exc
from optuna.storages.journal import JournalFileBackend


JOURNAL_PREFIX = "journal:"
CONNECT_TIMEOUT = 10  # seconds a database server may take to answer


@sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
def _sqlite_write_ahead_log(connection, _record):
    """Every SQLite file this process opens (Optuna's and MLflow's stores) in WAL mode with synchronous=NORMAL.

    A commit then appends to the log instead of rewriting a journal with
    several syncs, and the UI reading the file never blocks a trial writing
    it. A power cut can lose the last commits, never corrupt the file.
    """
    if isinstance(connection, sqlite3.Connection):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


class StorageError(ValueError):
    """The study's storage cannot be opened."""


def default_home():
    """Where embedded defaults keep their files: $HARNESS_HOME or ./harness-runs."""
    return Path(os.environ.get("HARNESS_HOME", "harness-runs")).resolve()


def sqlite_url(path):
    # An absolute path after sqlite:/// gives the four slashes SQLAlchemy expects.
    return f"sqlite:///{Path(path).resolve()}"


def default_stores(workers=1):
    """The embedded defaults: (Optuna storage URL, MLflow tracking URI) under `default_home()`."""
    home = default_home()
    # Many processes on one SQLite file lock each other out; Optuna's journal file does not.
    storage = f"{JOURNAL_PREFIX}{home / 'optuna-journal.log'}" if workers > 1 else sqlite_url(home / "optuna.db")
    return storage, sqlite_url(home / "mlflow.db")


def open_storage(url, heartbeat_interval=None, stale_trial_callback=None):
    if url.startswith(JOURNAL_PREFIX):
        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
    options = {"engine_kwargs": _engine_options(url)}
    if heartbeat_interval is not None:
        options.update(heartbeat_interval=heartbeat_interval, grace_period=2 * heartbeat_interval,
                       heartbeat_stale_trial_callback=stale_trial_callback)
    with _clear_errors("storage", url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **options)


def check_database(url, role):
    """Connect once to a database URL (an MLflow backend, say), so a bad one fails fast and in one line."""
    if url.startswith(("postgresql", "mysql")):
        with _clear_errors(role, url):
            engine = sqlalchemy.create_engine(url, **_engine_options(url))
            try:
                engine.connect().close()
            finally:
                engine.dispose()  # close the pooled connection: the caller opens its own


def _engine_options(url):
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}} if url.startswith(("postgresql", "mysql")) else {}


@contextlib.contextmanager
def _clear_errors(role, url):
    """Turn a missing driver or an unreachable server into one `StorageError` line."""
    try:
        yield
    except ImportError as error:
        extra = "pip install 'taylor-harness[postgres]'" if url.startswith("postgresql") else "pip install its driver"
        raise StorageError(f"{role} {redact(url)}: its database driver is missing ({error.name or error}); "
                           f"install it with: {extra}") from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageError(f"{role} {redact(url)}: cannot connect ({redact_text(reason, url)})") from None


def redact(url):
    """`url` with any password replaced by ***, safe to log or print."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text, url):
    """`text` without the password of `url`."""
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text
