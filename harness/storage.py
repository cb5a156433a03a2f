"""Optuna storages by URL: any RDB URL (sqlite, postgresql, mysql) or `journal:PATH`.

RDB storages get trial heartbeats, so a trial whose worker died on any machine
ends FAIL. A journal file is Optuna's advice for many processes on one machine,
where SQLite would lock.
"""

import warnings

import optuna
from optuna.storages.journal import JournalFileBackend

JOURNAL_PREFIX = "journal:"


def open_storage(url, heartbeat_interval=None, stale_trial_callback=None):
    if url.startswith(JOURNAL_PREFIX):
        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
    if heartbeat_interval is None:
        return optuna.storages.RDBStorage(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_interval,
            grace_period=2 * heartbeat_interval,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
