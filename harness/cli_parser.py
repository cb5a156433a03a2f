"""The `harness` command line's arguments, declared. `harness.cli` holds the commands they run."""

import argparse

import yaml

DEFAULT_SPACE = "search_spaces/quick.yaml"
BACKENDS = ("tensorflow", "jax", "torch")  # Keras 3's, as KERAS_BACKEND names them


def _param(text):
    """Parse KEY=VALUE, reading VALUE as a YAML scalar (never evaluated as code)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _seeds(text):
    """A seed count, or "auto": sized by a pilot."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seeds or auto, got {text!r}") from None


def _add_provenance_option(parser):
    parser.add_argument(
        "--provenance",
        metavar="TEXT",
        help="a line under the report's title saying how its runs were made (the commands, their wall time)",
    )


def _add_rope_option(parser, what):
    parser.add_argument("--rope", type=float, default=1.0, metavar="POINTS", help=f"{what} (default 1.0)")


def _add_ray_options(command):
    """--ray and the resources of each trial on it."""
    command.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the trials on a Ray cluster (host:port; without ADDRESS, a local one on this machine); needs "
        "pip install 'taylor-harness[ray]'",
    )
    command.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N", help="with --ray (default 1)")
    command.add_argument(
        "--gpus-per-trial", type=float, default=0.0, metavar="N", help="with --ray; fractions share a GPU (default 0)"
    )
    command.add_argument(
        "--max-failures", type=int, default=2, metavar="N", help="with --ray: retries of a trial whose worker died"
    )


def _add_seed_options(parser, default, what):
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=default,
        metavar="N|auto",
        help=f"seeds per {what} (default "
        f"{default}); auto: a pilot of 3 other seeds, never tested, sizes it to detect a difference of "
        "--rope points with 80%% power, at most --max-seeds",
    )
    parser.add_argument("--max-seeds", type=int, default=20, help="with --seeds auto, the most seeds (default 20)")
    _add_rope_option(parser, "with --seeds auto, the difference in points of accuracy to detect")
    _add_vary_split_option(parser)


def _add_study_options(parser, space, study):
    parser.add_argument("--space", default=space, help=f"search space YAML (default {space})")
    parser.add_argument("--study", help=f"study name (default: {study}); the same name resumes it")
    _add_training_options(parser, "the space's")


def _add_training_options(parser, data_dir_default):
    """Where a command's studies and runs live, where its data is read from, and how it trains."""
    parser.add_argument(
        "--storage", help="Optuna storage URL (default: $HARNESS_STORAGE, else a journal file in $HARNESS_HOME)"
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $HARNESS_TRACKING_URI, else SQLite beside it)"
    )
    parser.add_argument(
        "--data-dir", help=f"folder holding downloaded datasets (default: {data_dir_default}, then $HARNESS_DATA_DIR)"
    )
    parser.add_argument(
        "--mixed-precision", action="store_true", help="train in mixed_float16 (float32 softmax and series)"
    )
    parser.add_argument(
        "--log-norms",
        action="store_true",
        help="log each variable's gradient and value norms to MLflow every epoch, and at the first non-finite loss",
    )
    _add_backend_option(parser)


def _add_vary_split_option(parser):
    parser.add_argument(
        "--vary-split",
        action="store_true",
        help="each seed also redraws the train/validation split (the test set stays the same)",
    )


def _add_backend_option(parser):
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="the Keras backend to train on (default: $KERAS_BACKEND, "
        "else tensorflow); jax and torch come with the extras .[jax] and .[torch]",
    )


def build_parser(commands_run):
    """The `harness` parser; `commands_run` maps each command name to the function that runs it."""
    parser = argparse.ArgumentParser(prog="harness", description="Taylor-expansion CNN search harness")
    # The metavar keeps the internal `worker` command, which has no help, out of the usage line.
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one configuration and print its result")
    train.add_argument("--dataset", default="digits", help="digits, mnist, fashion_mnist, cifar10 or imagefolder:PATH")
    train.add_argument(
        "--data-dir", help="folder holding downloaded datasets (default: $HARNESS_DATA_DIR, then Keras's)"
    )
    for split in ("--train-size", "--val-size", "--test-size"):
        train.add_argument(split, type=int)
    train.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model or training parameter, e.g. insertion=dense function=softplus order=3",
    )
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save", metavar="FILE.keras", help="save the trained model")
    train.add_argument("--verbose", type=int, default=0)
    _add_backend_option(train)
    train.set_defaults(run=commands_run["train"])

    search = commands.add_parser("search", help="run (or resume) an Optuna study over a YAML search space")
    _add_study_options(search, DEFAULT_SPACE, "the space file's name")
    search.add_argument("--trials", type=int, default=12, help="trials the study should hold when done (default 12)")
    search.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    search.add_argument("--engine", default="optuna", choices=("optuna", "keras-tuner"), help="who searches the space")
    search.add_argument(
        "--tuner",
        default="bayesian",
        choices=("random", "bayesian", "hyperband"),
        help="keras-tuner's tuner, with --engine keras-tuner",
    )
    search.add_argument(
        "--sampler",
        default="tpe",
        choices=("tpe", "random", "grid", "nsga2", "gp"),
        help="Optuna's sampler: grid runs the space's choices, nsga2 suits several objectives, gp needs PyTorch",
    )
    search.add_argument(
        "--pruner",
        default="median",
        choices=("median", "hyperband", "none"),
        help="stops trials whose validation accuracy lags: median (default), hyperband or none",
    )
    search.add_argument("--seed", type=int, help="the sampler's seed")
    search.add_argument("--heartbeat", type=int, default=30, help="seconds between trial heartbeats (default 30)")
    search.add_argument(
        "--workers", type=int, default=1, help="worker processes on this machine sharing the study (default 1)"
    )
    search.add_argument("--gpus", help="'all' or ids such as 0,1: one worker per GPU, pinned by CUDA_VISIBLE_DEVICES")
    search.add_argument(
        "--workers-per-gpu", type=int, default=1, metavar="N", help="with --gpus: N workers share each GPU"
    )
    _add_ray_options(search)
    search.add_argument("--parent-run-id", help="nest trials under this MLflow run (how workers join one search)")
    search.add_argument("--threads", type=int, help="TensorFlow threads for this process (set per worker by --workers)")
    search.add_argument(
        "--confirm",
        type=int,
        default=2,
        metavar="K",
        help="then re-train the K best configurations and "
        "their matched baselines with --seeds fresh seeds, judged on the test set (default 2; 0 skips)",
    )
    _add_seed_options(search, 5, "confirmed configuration")
    search.add_argument(
        "--baseline-every",
        type=int,
        default=4,
        metavar="N",
        help="every Nth sampled trial tunes the "
        "baseline over the hyperparameters it shares with the expanded networks (default 4; 0: never)",
    )
    search.add_argument(
        "--save-models",
        default="best",
        choices=("best", "all", "none"),
        help="which search trials save "
        "model.keras (default: each that beats the best saved so far); confirmation runs always do",
    )
    search.set_defaults(run=commands_run["search"])

    benchmark = commands.add_parser("benchmark", help="train fixed configurations with several seeds each")
    _add_study_options(benchmark, "search_spaces/benchmark.yaml", "<space>-benchmark")
    _add_seed_options(benchmark, 3, "configuration, from seed 0")
    benchmark.add_argument("--from-study", help="benchmark the top configurations of this earlier study instead")
    benchmark.add_argument("--top", type=int, default=5, help="how many of --from-study's best (default 5)")
    _add_ray_options(benchmark)
    benchmark.set_defaults(run=commands_run["benchmark"])

    suite = commands.add_parser(
        "suite", help="benchmark configurations across datasets and backbones, then report one table with average ranks"
    )
    suite.add_argument("file", metavar="FILE.yaml", help="the suite: configurations, datasets, backbones, seeds")
    _add_training_options(suite, "each dataset's")
    suite.add_argument("--out", help="report folder (default reports/<suite name>)")
    _add_rope_option(suite, "margin of practical equivalence, in points of accuracy")
    _add_provenance_option(suite)
    _add_vary_split_option(suite)
    _add_ray_options(suite)
    suite.set_defaults(run=commands_run["suite"])

    compare = commands.add_parser("compare-engines", help="which search strategy spends an epoch budget best")
    _add_study_options(compare, DEFAULT_SPACE, "<space>-compare, a prefix")
    compare.add_argument("--budget", type=int, default=60, help="total epochs each run may train (default 60)")
    compare.add_argument("--repeats", type=int, default=3, help="runs per strategy, seeds 0..R-1 (default 3)")
    compare.add_argument("--strategy", action="append", help="a strategy to include (repeat; default: all five)")
    compare.add_argument("--target", type=float, help="accuracy to reach (default: 95%% of the best found)")
    compare.add_argument("--out", help="output folder (default reports/compare-<study>)")
    compare.set_defaults(run=commands_run["compare-engines"])

    report = commands.add_parser("report", help="write a report of one or more studies: tables, Pareto fronts, plots")
    report.add_argument(
        "--study", action="append", required=True, help="a study to report on; repeat to compare studies"
    )
    report.add_argument("--out", help="output folder (default reports/<study>[-vs-<study>...])")
    report.add_argument("--storage", help="Optuna storage URL (default: $HARNESS_STORAGE, else the search's default)")
    report.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $HARNESS_TRACKING_URI, else the search's default)"
    )
    _add_rope_option(report, "margin of practical equivalence, in points of accuracy")
    _add_provenance_option(report)
    report.set_defaults(run=commands_run["report"])

    for name, port, what in (("ui", 5000, "the MLflow UI"), ("dashboard", 8080, "optuna-dashboard")):
        server = commands.add_parser(name, help=f"start {what} on 127.0.0.1 over the harness's stores")
        variable = "HARNESS_TRACKING_URI" if name == "ui" else "HARNESS_STORAGE"
        server.add_argument(
            "--tracking-uri" if name == "ui" else "--storage",
            help=f"default: ${variable}, else the search's default store",
        )
        server.add_argument(
            "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)"
        )
        server.add_argument("--port", type=int, default=port)
        server.set_defaults(run=commands_run[name])

    worker = commands.add_parser(
        "worker", help="join a search another command runs on this study, from any machine (a Slurm array's task)"
    )
    worker.add_argument("--study", help="the study to join (a worker pool's own processes get their job otherwise)")
    worker.add_argument(
        "--storage",
        help="Optuna storage URL, e.g. grpc://HOST:PORT of harness storage-proxy (default: $HARNESS_STORAGE)",
    )
    worker.add_argument("--tracking-uri", help="MLflow tracking URI (default: $HARNESS_TRACKING_URI)")
    worker.add_argument("--data-dir", help="folder holding downloaded datasets (default: the search's own)")
    worker.add_argument("--threads", type=int, help="TensorFlow threads for this process")
    worker.add_argument(
        "--wait", type=float, default=600, metavar="SECONDS", help="how long to wait for the search to start (600)"
    )
    worker.set_defaults(run=commands_run["worker"])

    proxy = commands.add_parser(
        "storage-proxy", help="serve the study's database to many workers through Optuna's gRPC storage proxy"
    )
    proxy.add_argument("--storage", help="the database's URL (default: $HARNESS_STORAGE), never a journal file")
    proxy.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 on a cluster)"
    )
    proxy.add_argument("--port", type=int, default=13000, help="port to listen on (default 13000)")
    proxy.add_argument("--address-file", help="a new file to write the workers' grpc:// address to once it answers")
    proxy.set_defaults(run=commands_run["storage-proxy"])
    return parser
