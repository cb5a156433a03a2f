import contextlib
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Decoded image folders are cached; tests (and the processes they start) keep theirs out of the user's cache.
os.environ.setdefault("HARNESS_CACHE", tempfile.mkdtemp(prefix="harness-test-cache-"))
# Nor do they write the default stores into the checkout: a test that needs them names its own HARNESS_HOME.
os.environ.setdefault("HARNESS_HOME", tempfile.mkdtemp(prefix="harness-test-home-"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several xdist workers share the cores: each trains on one thread, as the harness's own worker processes do
    # (TensorFlow's pools and XLA's CPU client; the processes the tests start inherit it).
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# The modules whose tests start processes and servers, or train many networks, slowest first: they run first, so
# that the two xdist workers end together instead of one waiting on a minute-long test that started last.
SLOW_FIRST = [
    "test_ray",
    "test_slurm",
    "test_workers",
    "test_docs",
    "test_applications",
    "test_outage",
    "test_install",
    "test_benchmark",
    "test_compare",
    "test_confirm",
    "test_cli",
    "test_suite",
    "test_report",
    "test_search",
    "test_tuner",
    "test_stability",
]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests on the PostgreSQL server (and the MLflow server backed by it) run in one xdist worker: one server each
    per run, not one per worker. The slow modules go first (`SLOW_FIRST`), the rest in their order."""
    for item in items:
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("postgres"))

    def rank(item):
        module = Path(str(item.fspath)).stem
        return SLOW_FIRST.index(module) if module in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the same order in every worker


@pytest.fixture(scope="session", autouse=True)
def migrated_mlflow_stores():
    """A new SQLite MLflow store copies one migrated once per process, instead of running MLflow's schema migrations
    (about 5 s each on 2 cores, in every test that makes a store). Processes the tests start migrate their own."""
    import sqlite3

    import sqlalchemy
    from mlflow.store.db import utils

    original = utils._initialize_tables
    template = Path(tempfile.mkdtemp(prefix="harness-test-mlflow-")) / "template.db"

    def initialize_tables(engine):
        if engine.url.get_backend_name() != "sqlite" or engine.url.database in (None, "", ":memory:"):
            return original(engine)
        if not template.exists():
            making = template.with_suffix(".making")
            migrated = sqlalchemy.create_engine(f"sqlite:///{making}")
            try:
                original(migrated)
            finally:
                migrated.dispose()
            making.rename(template)
        with engine.connect() as connection, contextlib.closing(sqlite3.connect(template)) as source:
            source.backup(connection.connection.driver_connection)

    utils._initialize_tables = initialize_tables
    yield
    utils._initialize_tables = original


@pytest.fixture(scope="session")
def shared_data():
    """The datasets in ../shared/data beside the checkout, where they exist."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"no shared datasets at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits():
    from harness.training import data

    return data.load("digits", train_size=256, val_size=64, test_size=128)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable(reason):
    """Skip where a real server or browser cannot start here, but never silently in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


def _postgres_bin():
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on a free port, in a temporary folder; yields a URL prefix with a password."""
    import shutil
    import subprocess
    import tempfile
    import time

    bindir = _postgres_bin()
    if bindir is None:
        unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    try:
        subprocess.run(
            as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "harness", "-N"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            as_user
            + [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-w",
                "start",
                "-o",
                f"-p {port} -h 127.0.0.1 -k {root} -F",
            ],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as error:
        unavailable(f"PostgreSQL did not start: {getattr(error, 'stderr', b'') or error}")
    import psycopg

    with psycopg.connect(f"postgresql://harness@127.0.0.1:{port}/postgres", autocommit=True) as connection:
        connection.execute("CREATE DATABASE mlflow")
    # trust authentication ignores the password; it is here to show it never reaches a log.
    yield f"postgresql://harness:s3cret-pw@127.0.0.1:{port}"
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    time.sleep(0.5)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres):
    """A fresh database on the shared server, for one test's Optuna storage."""
    import uuid

    import psycopg

    name = f"optuna_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{postgres}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{postgres}/{name}"


def start_mlflow_server(backend_store_uri, artifacts, port):
    """A real `mlflow server` on `port`, in a process group of its own, once it answers its health check;
    RuntimeError saying why if it exits or does not answer within 2 minutes."""
    import signal
    import subprocess
    import sys
    import time

    import requests

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend_store_uri,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",  # the tests' requests need no more; four take twice as long to start
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # Without MLflow's job runner: seven more Python processes, for GenAI jobs these tests never start.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    for _ in range(240):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=10).ok:
                return server
        except requests.RequestException:  # not listening yet, or busy starting up
            pass
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {server.returncode}")
        time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not answer within 2 minutes")


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    """A real `mlflow server` backed by the PostgreSQL server, serving artifacts from a temp folder."""
    import signal

    port = free_port()
    try:
        server = start_mlflow_server(f"{postgres}/mlflow", tmp_path_factory.mktemp("mlflow-artifacts"), port)
    except RuntimeError as error:
        unavailable(str(error))
    url = f"http://127.0.0.1:{port}"
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
