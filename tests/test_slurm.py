"""Workers past one machine: many through Optuna's storage proxy to a real PostgreSQL, and the deploy/slurm scripts
on a real single-node Slurm cluster started by the test."""

import getpass
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.study.servers import PROXY_APPLICATION
from harness.study.records import counted_trials
from harness.study.storage import open_storage
from tests.conftest import free_port, unavailable

SPACE = {
    "dataset": {"name": "digits", "train_size": 150, "val_size": 50, "test_size": 50},
    "training": {"epochs": 1, "seed": 0},
    "params": {"insertion": "dense", "function": ["softplus", "tanh", "sin"], "order": [1, 2, 3, 4], "width": 0.25},
}
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "slurm"


def harness(*args):
    return [sys.executable, "-m", "harness.cli", *args]


def wait_for(condition, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} never happened")


def start_proxy(storage, address_file):
    """`harness storage-proxy` over `storage`, in a process group of its own; returns it once it answers."""
    proxy = subprocess.Popen(
        harness("storage-proxy", "--port", str(free_port()), "--address-file", str(address_file)),
        env={**os.environ, "HARNESS_STORAGE": storage},  # the password stays out of argv
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for(lambda: address_file.exists() or proxy.poll() is not None, "the proxy answering")
    assert proxy.poll() is None, f"harness storage-proxy exited with code {proxy.returncode}"
    return proxy


def stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def join(argv, environment):
    """A forked `harness worker`: `harness.cli.main` with the console script's argv."""
    from harness.cli import main

    os.environ.update(environment)
    sys.exit(main(argv))


def test_sixteen_workers_through_one_proxy_and_postgres_sees_only_the_proxy(tmp_path, postgres_database, mlflow_server):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    proxy = start_proxy(postgres_database, tmp_path / "proxy.address")
    env = {"HARNESS_STORAGE": (tmp_path / "proxy.address").read_text().strip(), "HARNESS_TRACKING_URI": mlflow_server}
    seen, study = set(), None
    try:
        owner = subprocess.Popen(
            harness(
                *("search", "--space", str(space), "--study", "proxied", "--trials", "16", "--sampler", "random"),
                *("--pruner", "none", "--confirm", "0", "--threads", "1"),
            ),
            env={**os.environ, **env, "HARNESS_HOME": str(tmp_path / "home")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # 15 joiners, forked from a process that imported TensorFlow once (16 imports would take minutes here).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["harness.study.workers", "harness.cli"])
        joiners = [
            context.Process(target=join, args=(["worker", "--study", "proxied", "--threads", "1"], env))
            for _ in range(15)
        ]
        for joiner in joiners:
            joiner.start()
        with psycopg.connect(postgres_database, autocommit=True, application_name="test-watch") as watch:
            while owner.poll() is None:
                rows = watch.execute(
                    "SELECT application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
                seen.update(name for (name,) in rows)
                time.sleep(0.2)
        output = owner.stdout.read()
        for joiner in joiners:
            joiner.join(timeout=300)
        study = optuna.load_study(study_name="proxied", storage=open_storage(postgres_database))
    finally:
        stop(proxy)
    assert owner.returncode == 0, output[-3000:]
    assert [j.exitcode for j in joiners] == [0] * 15
    assert seen == {PROXY_APPLICATION}  # the workers, 16 of them, never connected to PostgreSQL themselves

    counted = counted_trials(study)
    assert len(counted) == 16 and not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len({t.user_attrs["pid"] for t in counted}) >= 4  # the joiners trained trials, not the owner alone
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("proxied").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("harness.role") == "search"]
    trial_runs = [r for r in runs if r.data.tags.get("harness.role") == "trial" and r.info.status == "FINISHED"]
    assert {r.info.run_id for r in trial_runs} == {t.user_attrs["mlflow_run_id"] for t in counted}
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}


def test_a_trial_whose_worker_stopped_beating_through_the_proxy_is_failed_and_its_run_closed(tmp_path):
    # Optuna's gRPC protocol has no heartbeats: the proxy's client records them on the trial, Optuna's own
    # fail_stale_trials reads them back, and the stale trial's callback (closing its MLflow run) runs.
    proxy = start_proxy(f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "proxy.address")
    try:
        url, closed = (tmp_path / "proxy.address").read_text().strip(), []
        storage = open_storage(url, heartbeat_interval=1, stale_trial_callback=lambda study, t: closed.append(t.number))
        study = optuna.create_study(study_name="beats", storage=storage)
        silent, beating = study.ask(), study.ask()
        storage.record_heartbeat(silent._trial_id)
        for _ in range(6):  # 3 s: past the grace period of twice the interval for the silent one
            storage.record_heartbeat(beating._trial_id)
            time.sleep(0.5)
        optuna.storages.fail_stale_trials(study)
        assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"] and closed == [silent.number]
    finally:
        stop(proxy)


def test_a_proxy_that_is_down_is_one_line_within_seconds(tmp_path):
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home")}
    for command in (["worker", "--study", "x"], ["search", "--study", "x"]):
        started = time.monotonic()
        run = subprocess.run(
            harness(*command, "--storage", f"grpc://127.0.0.1:{free_port()}"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and time.monotonic() - started < 10
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("harness: error: storage proxy grpc://127.0.0.1:") and "does not answer" in line
    assert not (tmp_path / "home").exists()


SLURM_CONF = """\
ClusterName=harness-test
SlurmctldHost={host}
SlurmctldPort={controller_port}
SlurmdPort={node_port}
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


@pytest.fixture
def slurm(tmp_path):
    """A single-node Slurm cluster (Debian's slurm-wlm) with a minimal slurm.conf of the test's own: the environment
    its commands need. Skipped, in one line, if it does not start within 60 s."""
    daemons = [shutil.which(name) for name in ("slurmctld", "slurmd")]
    if None in daemons or shutil.which("sbatch") is None:
        unavailable("Slurm is not installed (Debian: apt-get install slurm-wlm)")
    root = tmp_path / "slurm"
    for folder in ("state", "spool"):
        (root / folder).mkdir(parents=True)
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=socket.gethostname(),
            controller_port=free_port(),
            node_port=free_port(),
            user=getpass.getuser(),
            root=root,
            cpus=os.cpu_count(),
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started = [
        subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for daemon in daemons
    ]
    try:
        deadline = time.time() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout:
            if time.time() > deadline:
                pytest.skip(f"Slurm did not start within 60 s here (see {root}/slurmctld.log)")
            time.sleep(0.5)
        yield env
    finally:
        for daemon in started:
            daemon.terminate()
            daemon.wait(timeout=30)


def test_the_sbatch_array_runs_a_search_through_the_proxy_on_slurm(tmp_path, slurm):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    storage, tracking = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **slurm,
        "HARNESS_STORAGE": storage,
        "HARNESS_TRACKING_URI": tracking,
        "HARNESS_PROXY_PORT": str(free_port()),
        "HARNESS_GPUS_PER_TASK": "0",
        "HARNESS_CPUS_PER_TASK": "1",
    }
    submitted = subprocess.run(
        ["bash", str(DEPLOY / "submit.sh"), str(space), "slurmed", "4", "2", "--pruner", "none", "--confirm", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "storage proxy: job" in submitted.stdout

    def queue_empty():
        return not subprocess.run(["squeue", "-h"], env=slurm, capture_output=True, text=True).stdout.strip()

    wait_for(queue_empty, "the jobs ending", timeout=400)
    logs = {p.name: p.read_text() for p in tmp_path.glob("harness-*.out")}
    study = optuna.load_study(study_name="slurmed", storage=open_storage(storage))
    counted = counted_trials(study)
    assert len(counted) == 4, logs
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert any("joining search 'slurmed'" in log for log in logs.values()), logs  # task 1 joined task 0's search
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("slurmed").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
