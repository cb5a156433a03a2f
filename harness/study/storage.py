"""Where studies and runs live: Optuna storages by URL, the MLflow tracking URI, and the one rule that finds both.

Every command finds its stores the same way (`resolve_stores`): the flag, else
`$HARNESS_STORAGE` / `$HARNESS_TRACKING_URI`, else the embedded defaults in
`default_home()`: Optuna's journal file, which any number of worker processes
on this machine share (SQLite would lock), and MLflow's SQLite store.

RDB storages (sqlite, postgresql, mysql) and the storage proxy in front of one
(`grpc://HOST:PORT`, `harness.study.proxy`) get trial heartbeats, so a trial
whose worker died on any machine ends FAIL. A storage or tracking server that cannot
be reached is a `StorageError`: one line, password redacted, naming the missing
driver's extra or the unreachable server, after at most `CONNECT_TIMEOUT` seconds.
"""

import contextlib
import hashlib
import os
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages.journal import JournalFileBackend

from harness.redaction import redact, redact_text
from harness.study.proxy import PROXY_PREFIX, HeartbeatProxy


JOURNAL_PREFIX = "journal:"
CONNECT_TIMEOUT = 10  # seconds a database server may take to answer
# Where every command reads its storage and tracking URLs when no flag names them: passwords stay out of argv, which
# `ps` shows.
STORAGE_VARIABLE, TRACKING_VARIABLE = "HARNESS_STORAGE", "HARNESS_TRACKING_URI"


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


def default_stores():
    """The embedded defaults: (Optuna storage URL, MLflow tracking URI) under `default_home()`.

    One storage for any number of workers: many processes on one SQLite file
    lock each other out, Optuna's journal file does not.
    """
    home = default_home()
    return f"{JOURNAL_PREFIX}{home / 'optuna-journal.log'}", sqlite_url(home / "mlflow.db")


def resolve_stores(storage=None, tracking_uri=None):
    """(storage URL, tracking URI): each as given, else from the environment, else the embedded default.

    The default home is created only when a default is used.
    """
    storage = storage or os.environ.get(STORAGE_VARIABLE)
    tracking_uri = tracking_uri or os.environ.get(TRACKING_VARIABLE)
    if storage is None or tracking_uri is None:
        default_home().mkdir(parents=True, exist_ok=True)
        default_storage, default_tracking_uri = default_stores()
        storage, tracking_uri = storage or default_storage, tracking_uri or default_tracking_uri
    return storage, tracking_uri


def open_storage(url, *, heartbeat_interval=None, stale_trial_callback=None, application_name=None):
    """The Optuna storage at `url`: a journal file, a storage proxy (grpc://HOST:PORT) or a database, with trial
    heartbeats every `heartbeat_interval` seconds where given (`stale_trial_callback` closes a stale trial's run);
    `application_name` names its PostgreSQL connections."""
    if url.startswith(JOURNAL_PREFIX):
        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
    if url.startswith(PROXY_PREFIX):
        return HeartbeatProxy(url, heartbeat_interval=heartbeat_interval, stale_trial_callback=stale_trial_callback)
    options = {"engine_kwargs": _engine_options(url, application_name)}
    if heartbeat_interval is not None:
        options.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=2 * heartbeat_interval,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
    with _clear_errors("storage", url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **options)


def check_database(url, role):
    """Connect once to a database URL (an MLflow backend, say) or a storage proxy, so a bad one fails fast and in one
    line."""
    if url.startswith(PROXY_PREFIX):
        open_storage(url).close()
    elif url.startswith(("postgresql", "mysql")):
        with _clear_errors(role, url):
            engine = sqlalchemy.create_engine(url, **_engine_options(url))
            try:
                engine.connect().close()
            finally:
                engine.dispose()  # close the pooled connection: the caller opens its own


def _sqlite_folder(tracking_uri):
    return Path(sqlalchemy.engine.make_url(tracking_uri).database).resolve().parent


def artifact_root(tracking_uri):
    """Where a new experiment in an SQLite MLflow store keeps its artifacts: `artifacts/` beside the database file
    (a server or any other store chooses its own: None)."""
    return (_sqlite_folder(tracking_uri) / "artifacts").as_uri() if tracking_uri.startswith("sqlite:") else None


def tuner_home(tracking_uri):
    """Where keras-tuner keeps its studies' state for runs logged to `tracking_uri`: beside an SQLite store, else in
    the default home under a digest of the URI, so a resumed tuner always meets the runs it logged."""
    if tracking_uri.startswith("sqlite:"):
        return _sqlite_folder(tracking_uri) / "keras-tuner"
    return default_home() / "keras-tuner" / hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]


def check_tracking_uri(uri):
    """Fail fast, in one line, on a tracking server that does not answer or a backend database that cannot be reached.

    The MLflow client would otherwise retry for minutes before its own traceback.
    """
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=CONNECT_TIMEOUT).raise_for_status()
        except requests.RequestException as error:
            reason = type(error).__name__ if isinstance(error, requests.ConnectionError) else error
            raise StorageError(
                f"MLflow tracking server {redact(uri)} does not answer ({redact_text(str(reason), uri)})"
            ) from None
    else:
        check_database(uri, "MLflow store")


def _engine_options(url, application_name=None):
    if not url.startswith(("postgresql", "mysql")):
        return {}
    named = {"application_name": application_name} if application_name and url.startswith("postgresql") else {}
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT, **named}}


@contextlib.contextmanager
def _clear_errors(role, url):
    """Turn a missing driver or an unreachable server into one `StorageError` line."""
    try:
        yield
    except ImportError as error:
        extra = "pip install 'taylor-harness[postgres]'" if url.startswith("postgresql") else "pip install its driver"
        raise StorageError(
            f"{role} {redact(url)}: its database driver is missing ({error.name or error}); install it with: {extra}"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageError(f"{role} {redact(url)}: cannot connect ({redact_text(reason, url)})") from None
