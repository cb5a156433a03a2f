"""Many workers, one database client: Optuna's gRPC storage proxy in front of the study's storage.

`harness storage-proxy` serves the storage (`servers.storage_proxy`); workers open it as
`grpc://HOST:PORT` (`HeartbeatProxy`) and never connect to the database
themselves, so PostgreSQL sees the proxy's few pooled connections however many
workers a cluster runs. Optuna's gRPC protocol has no trial heartbeats of its
own: `HeartbeatProxy` records them as a trial system attribute, so a trial whose
worker died on any machine is failed (and its run closed) as with an RDB storage.
"""

import socket
import time
import warnings

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.storages._heartbeat import BaseHeartbeat


PROXY_PREFIX = "grpc://"
CONNECT_TIMEOUT = 3  # seconds a proxy may take to answer (milliseconds on a cluster's network)
HEARTBEAT = "harness:heartbeat"  # a trial's system attribute: when its worker last said it was alive (Unix seconds)


def proxy_address(url):
    """(host, port) of a `grpc://HOST:PORT` storage URL; ValueError in one line if it is not one."""
    host, _, port = url.removeprefix(PROXY_PREFIX).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"storage {url}: a storage proxy's URL is grpc://HOST:PORT")
    return host, int(port)


class HeartbeatProxy(GrpcStorageProxy, BaseHeartbeat):
    """Optuna's `GrpcStorageProxy` with trial heartbeats: every `heartbeat_interval` seconds the worker's clock is
    written on its running trial; one silent for twice that is stale, and `stale_trial_callback` closes its run.
    The workers' clocks are compared, which a cluster keeps in step (NTP) far within the grace period."""

    def __init__(self, url, *, heartbeat_interval=None, stale_trial_callback=None):
        host, port = proxy_address(url)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)
        self.heartbeat_interval, self.stale_trial_callback = heartbeat_interval, stale_trial_callback
        try:  # a port nobody listens on is refused at once; gRPC alone would retry it until the timeout
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
            self.wait_server_ready(timeout=CONNECT_TIMEOUT)
        except OSError:  # refused, unreachable, or listening without answering gRPC (ConnectionError)
            self.close()
            raise ValueError(f"storage proxy {url} does not answer (harness storage-proxy must be running)") from None

    def record_heartbeat(self, trial_id):
        self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id):
        oldest = time.time() - 2 * self.heartbeat_interval
        running = self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return [t._trial_id for t in running if t.system_attrs.get(HEARTBEAT, time.time()) < oldest]

    def get_heartbeat_interval(self):
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_trial_callback
