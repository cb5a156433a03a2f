"""`harness`: the command line over the library. Each command is a thin wrapper."""

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

DEFAULT_SPACE = "search_spaces/quick.yaml"
# Where `harness search` also reads its storage and tracking URLs, so passwords need not appear on a command line.
STORAGE_VARIABLE, TRACKING_VARIABLE = "HARNESS_STORAGE", "HARNESS_TRACKING_URI"


def _param(text):
    """Parse KEY=VALUE, reading VALUE as a YAML scalar (never evaluated as code)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _add_data_options(parser):
    parser.add_argument("--dataset", default="digits", help="digits, mnist, fashion_mnist, cifar10 or imagefolder:PATH")
    parser.add_argument("--data-dir", help="folder holding downloaded datasets (default: $HARNESS_DATA_DIR, then Keras's cache)")
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--val-size", type=int)
    parser.add_argument("--test-size", type=int)


def _load_dataset(args):
    from harness.training import data

    return data.load(
        args.dataset,
        data_dir=args.data_dir,
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        seed=args.seed,
    )


def _check_params(params):
    """Every param known and of an allowed value, and the series defined, before TensorFlow loads."""
    from harness.expansion import series
    from harness.params import PARAM_KEYS, check_value

    for name, value in params.items():
        if name not in PARAM_KEYS:
            raise ValueError(f"--param {name}: unknown parameter; expected one of {', '.join(PARAM_KEYS)}")
        check_value(name, value)
    if params.get("insertion", "none") != "none":
        series.coefficients(params.get("function", "softplus"), params.get("order", 3), params.get("center", 0.0))


def cmd_train(args):
    params = {"seed": args.seed, **dict(args.param)}
    _check_params(params)
    from harness.training.trial import run_trial

    result = run_trial(params, _load_dataset(args), epochs=args.epochs, verbose=args.verbose)
    summary = {"dataset": args.dataset, "epochs": args.epochs, **result.summary()}
    latency = summary.pop("latency_seconds")
    summary["latency_ms"] = None if latency is None else latency * 1000
    print(json.dumps(summary, indent=2))
    if args.save:
        result.model.save(args.save)
        print(f"model saved to {args.save}")
    return 1 if result.diverged else 0


def _space_path(text):
    """A space path as given, else relative to the repository that holds this package."""
    path = Path(text)
    if not path.exists() and not path.is_absolute():
        beside_package = Path(__file__).resolve().parents[1] / path
        if beside_package.exists():
            return beside_package
    return path


def _configure_tensorflow(threads=None, mixed_precision=False):
    """Per-process TensorFlow settings; they must come before TensorFlow runs anything."""
    import keras
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")


def _gpu_ids(text):
    """--gpus 0,1 or all -> the GPU ids, or a clear error on a machine without one."""
    import tensorflow as tf

    visible = list(range(len(tf.config.list_physical_devices("GPU"))))
    if not visible:
        raise ValueError("--gpus: TensorFlow sees no GPU on this machine; leave --gpus out to run on the CPU")
    ids = visible if text == "all" else [int(i) for i in text.split(",")]
    missing = sorted(set(ids) - set(visible))
    if missing:
        raise ValueError(f"--gpus: no GPU {missing[0]}; this machine has {len(visible)} (ids {visible})")
    return ids


def _quiet_libraries():
    """Optuna's, Alembic's and MLflow's own lines (a link per run closed on a server) repeat what the trial lines say."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _print_outcomes(label, study):
    from harness.study.search import outcome_counts

    print(f"{label}: " + ", ".join(f"{n} {state.lower()}" for state, n in outcome_counts(study).items()))


def _load_space(args):
    """The space file with --data-dir applied; checked before TensorFlow loads, so a bad one answers at once."""
    from harness.study.space import load_space

    space = load_space(_space_path(args.space))
    if args.data_dir:
        if not Path(args.data_dir).expanduser().is_dir():
            raise ValueError(f"--data-dir {args.data_dir}: no such folder")
        space.dataset.data_dir = args.data_dir
    return space


def cmd_search(args):
    space = _load_space(args)
    if args.trials < 1:
        raise ValueError(f"--trials must be at least 1, got {args.trials}")
    if args.confirm < 0:
        raise ValueError(f"--confirm must be 0 (no confirmation) or more, got {args.confirm}")
    if args.seeds < 2:
        raise ValueError(f"--seeds must be at least 2 to give a confidence interval, got {args.seeds}")
    if args.workers_per_gpu < 1 or (args.workers_per_gpu > 1 and not args.gpus):
        raise ValueError(f"--workers-per-gpu must be at least 1 and comes with --gpus; got {args.workers_per_gpu}")
    from harness.study.confirm import confirmation, confirmation_seeds
    from harness.study.search import Search, SearchSettings

    _quiet_libraries()
    # Small CNNs leave a GPU idle between steps: several workers can share one, each pinned to it.
    gpus = [g for g in _gpu_ids(args.gpus) for _ in range(args.workers_per_gpu)] if args.gpus else None
    workers = len(gpus) if gpus else args.workers
    settings = SearchSettings(
        study_name=args.study or Path(args.space).stem,
        n_trials=args.trials,
        timeout=args.timeout,
        storage=args.storage or os.environ.get(STORAGE_VARIABLE),
        tracking_uri=args.tracking_uri or os.environ.get(TRACKING_VARIABLE),
        sampler=args.sampler,
        pruner=args.pruner,
        seed=None if args.seed is None else args.seed + args.worker_index,
        heartbeat_interval=args.heartbeat,
        workers=workers,
        parent_run_id=args.parent_run_id,
        mixed_precision=args.mixed_precision,
        stage=args.stage,
        save_models=args.save_models,
    )
    if args.engine == "keras-tuner" and workers > 1:
        raise ValueError("--engine keras-tuner runs in one process; leave out --workers and --gpus")
    if workers == 1:
        _configure_tensorflow(args.threads, args.mixed_precision)
    search = Search(space, settings)
    if args.engine == "keras-tuner":
        return _run_keras_tuner(args, search)
    confirm = None
    try:
        with search.parent_run():
            if args.worker_index:  # a worker started by _launch_workers: trials only
                search.run()
                return 0
            search.queue_baseline()
            code = _run_stage(args, search, gpus)
            if args.confirm:
                confirm = confirmation(search, args.confirm, confirmation_seeds(space, args.seeds))
                if confirm is None:
                    print("nothing to confirm: no expanded configuration completed")
                else:
                    code = max(code, _run_stage(args, confirm, gpus))
    except KeyboardInterrupt:
        print("interrupted: the trial in flight is marked FAIL and the MLflow runs KILLED", file=sys.stderr)
        return 130
    _print_outcomes(f"study {settings.study_name!r}", search.study)
    if confirm is not None:
        _print_outcomes(f"confirmation {confirm.settings.optuna_study!r} (the {args.confirm} best x {args.seeds} seeds, "
                        "with matched baselines)", confirm.study)
    for line in search.where():
        print(line)
    return code


def _run_stage(args, search, gpus):
    """Run a stage's trials in this process, or in worker processes; return the exit code."""
    if search.settings.workers > 1:
        return _launch_workers(args, search, gpus)
    search.run()
    return 0


def _run_keras_tuner(args, search):
    from harness.study.tuner import run_tuner

    try:
        outcomes = list(run_tuner(search, args.tuner, args.trials, args.seed).values())
    except KeyboardInterrupt:
        print("interrupted: the trial in flight is marked FAIL and the MLflow runs KILLED", file=sys.stderr)
        return 130
    print(f"keras-tuner {args.tuner} {search.settings.study_name!r}: "
          + ", ".join(f"{outcomes.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL")))
    print(f"MLflow store:   {search.tracker.tracking_uri} (experiment {search.settings.study_name!r})")
    print(f"Report:         harness report --study {search.settings.study_name}")
    return 0


def _launch_workers(args, search, gpus):
    """Start one `harness search` process per worker on the same study and parent run; wait for them."""
    settings = search.settings
    threads = args.threads or max(1, (os.cpu_count() or 1) // settings.workers)
    common = [
        sys.executable, "-m", "harness.cli", "search", "--space", str(_space_path(args.space)),
        "--study", settings.study_name, "--trials", str(settings.n_trials),
        "--sampler", settings.sampler, "--pruner", settings.pruner,
        "--heartbeat", str(settings.heartbeat_interval), "--parent-run-id", search.parent_run_id,
        "--threads", str(threads), "--stage", settings.stage, "--save-models", settings.save_models,
    ]
    if settings.timeout:
        common += ["--timeout", str(settings.timeout)]
    if args.seed is not None:
        common += ["--seed", str(args.seed)]
    if args.mixed_precision:
        common.append("--mixed-precision")
    processes = []
    for index in range(settings.workers):
        # URLs can hold passwords: the environment keeps them out of `ps`, where argv would show them.
        env = {**os.environ, STORAGE_VARIABLE: settings.storage, TRACKING_VARIABLE: settings.tracking_uri}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(gpus[index])
        placement = f"GPU {gpus[index]}" if gpus else f"{threads} CPU thread(s)"
        processes.append(subprocess.Popen(common + ["--worker-index", str(index + 1)], env=env))
        print(f"{settings.stage} worker {index + 1}: pid {processes[-1].pid}, {placement}", flush=True)
    if settings.stage == "search":
        print(f"join from other machines with the same --storage, --tracking-uri, --study and --parent-run-id {search.parent_run_id}")
    try:
        codes = [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            p.send_signal(signal.SIGINT)
        codes = [p.wait() for p in processes]
    for index, code in enumerate(codes, start=1):
        if code:
            print(f"worker {index} exited with code {code}; the other workers carried on", file=sys.stderr)
    if 130 in codes:
        raise KeyboardInterrupt
    from harness.study.search import counted_trials

    if len(counted_trials(search.study)) >= settings.n_trials:
        return 0
    search.parent_status = "FAILED"
    return 1


def cmd_benchmark(args):
    space = _load_space(args)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    from harness.study.confirm import run_benchmark
    from harness.study.search import SearchSettings

    _quiet_libraries()
    settings = SearchSettings(
        study_name=args.study or f"{Path(args.space).stem}-benchmark", storage=args.storage,
        tracking_uri=args.tracking_uri, sampler="random", pruner="none", mixed_precision=args.mixed_precision,
    )
    _configure_tensorflow(mixed_precision=args.mixed_precision)
    try:
        study = run_benchmark(space, settings, range(args.seeds), args.from_study, args.top)
    except KeyboardInterrupt:
        print("interrupted: the run in flight is marked FAIL and the MLflow runs KILLED", file=sys.stderr)
        return 130
    _print_outcomes(f"benchmark {settings.study_name!r}", study)
    print(f"means, 95% CIs and tests against the baseline: harness report --study {settings.study_name}")
    return 0


def cmd_compare_engines(args):
    space = _load_space(args)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    from harness.study.compare import STRATEGIES, compare_engines
    from harness.study.search import SearchSettings

    _quiet_libraries()
    settings = SearchSettings(study_name=args.study or f"{Path(args.space).stem}-compare", storage=args.storage,
                              tracking_uri=args.tracking_uri, mixed_precision=args.mixed_precision)
    _configure_tensorflow(mixed_precision=args.mixed_precision)
    summary = compare_engines(space, settings, args.budget, args.repeats, args.strategy or tuple(STRATEGIES),
                              args.target, args.out)
    print(summary.round(4).to_string())
    print(f"anytime curves: {args.out or f'reports/compare-{settings.study_name}'}/anytime.png, anytime.csv, summary.md")
    return 0


def cmd_report(args):
    from harness.report.pages import write_report
    from harness.study.search import default_stores

    storage, tracking_uri = default_stores()
    out = write_report(args.study, args.storage or storage, args.tracking_uri or tracking_uri, args.out)
    print(f"report written to {out}/index.html (and index.md, trials.csv, plots)")
    return 0


def cmd_ui(args):
    from harness.study.search import default_stores
    from harness.study.servers import mlflow_ui

    return mlflow_ui(args.tracking_uri or default_stores()[1], args.host, args.port, say=_say)


def cmd_dashboard(args):
    from harness.study.search import default_stores, name_objectives
    from harness.study.servers import optuna_dashboard
    from harness.study.storage import open_storage

    storage = open_storage(args.storage or default_stores()[0])
    name_objectives(storage)
    return optuna_dashboard(storage, args.host, args.port, say=_say)


def _say(line):
    print(line, flush=True)


def build_parser():
    parser = argparse.ArgumentParser(prog="harness", description="Taylor-expansion CNN search harness")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one configuration and print its result")
    _add_data_options(train)
    train.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                       help="a model or training parameter, e.g. insertion=dense function=softplus order=3")
    train.add_argument("--epochs", type=int, default=2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save", metavar="FILE.keras", help="save the trained model")
    train.add_argument("--verbose", type=int, default=0)
    train.set_defaults(run=cmd_train)

    search = commands.add_parser("search", help="run (or resume) an Optuna study over a YAML search space")
    search.add_argument("--space", default=DEFAULT_SPACE, help=f"search space YAML (default {DEFAULT_SPACE})")
    search.add_argument("--study", help="study name (default: the space file's name); the same name resumes it")
    search.add_argument("--trials", type=int, default=12, help="trials the study should hold when done (default 12)")
    search.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    search.add_argument("--storage", help="Optuna storage URL (default: $HARNESS_STORAGE, else SQLite in $HARNESS_HOME "
                                           "or ./harness-runs)")
    search.add_argument("--tracking-uri", help="MLflow tracking URI (default: $HARNESS_TRACKING_URI, else SQLite beside "
                                                "the Optuna storage)")
    search.add_argument("--engine", default="optuna", choices=("optuna", "keras-tuner"),
                        help="who searches the space: Optuna (default) or keras-tuner")
    search.add_argument("--tuner", default="bayesian", choices=("random", "bayesian", "hyperband"),
                        help="keras-tuner's tuner, with --engine keras-tuner (default bayesian)")
    search.add_argument("--sampler", default="tpe", choices=("tpe", "random", "grid", "nsga2", "gp"),
                        help="Optuna's sampler: tpe (default), random, grid (the space's choices), nsga2 (several "
                             "objectives) or gp (needs PyTorch)")
    search.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"),
                        help="stops trials whose validation accuracy lags: median (default), hyperband or none")
    search.add_argument("--data-dir", help="folder holding downloaded datasets (default: the space's, $HARNESS_DATA_DIR, "
                                           "then Keras's cache)")
    search.add_argument("--seed", type=int, help="the sampler's seed")
    search.add_argument("--heartbeat", type=int, default=30, help="seconds between trial heartbeats (default 30)")
    search.add_argument("--workers", type=int, default=1,
                        help="worker processes on this machine (default 1); the storage then defaults to a journal file")
    search.add_argument("--gpus", help="'all' or ids such as 0,1: one worker per GPU, pinned by CUDA_VISIBLE_DEVICES")
    search.add_argument("--workers-per-gpu", type=int, default=1, metavar="N",
                        help="with --gpus: N workers share each GPU (default 1)")
    search.add_argument("--mixed-precision", action="store_true", help="train in mixed_float16 (float32 softmax and series)")
    search.add_argument("--parent-run-id", help="nest trials under this MLflow run (how workers join one search)")
    search.add_argument("--threads", type=int, help="TensorFlow threads for this process (set per worker by --workers)")
    search.add_argument("--confirm", type=int, default=2, metavar="K",
                        help="after the search, re-train its K best configurations and their matched baselines "
                             "with --seeds fresh seeds, judged on the test set (default 2; 0 skips)")
    search.add_argument("--seeds", type=int, default=5, help="seeds per confirmed configuration (default 5)")
    search.add_argument("--save-models", default="best", choices=("best", "all", "none"),
                        help="which search trials save model.keras: each that beats the best saved so far (default), "
                             "all, or none; confirmation runs always save theirs")
    search.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    search.add_argument("--stage", default="search", choices=("search", "confirm"), help=argparse.SUPPRESS)
    search.set_defaults(run=cmd_search)

    benchmark = commands.add_parser("benchmark", help="train fixed configurations with several seeds each")
    benchmark.add_argument("--space", default="search_spaces/benchmark.yaml",
                           help="space YAML: data, budget, and its `configurations` (default search_spaces/benchmark.yaml)")
    benchmark.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3: seeds 0, 1, 2)")
    benchmark.add_argument("--study", help="study name (default: <space>-benchmark); the same name resumes it")
    benchmark.add_argument("--from-study", help="benchmark the top configurations of this earlier study instead")
    benchmark.add_argument("--top", type=int, default=5, help="how many of --from-study's best (default 5)")
    benchmark.add_argument("--storage", help="Optuna storage URL (default: SQLite in $HARNESS_HOME or ./harness-runs)")
    benchmark.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite beside the Optuna storage)")
    benchmark.add_argument("--mixed-precision", action="store_true", help="train in mixed_float16")
    benchmark.add_argument("--data-dir", help="folder holding downloaded datasets")
    benchmark.set_defaults(run=cmd_benchmark)

    compare = commands.add_parser("compare-engines", help="which search strategy spends an epoch budget best")
    compare.add_argument("--space", default=DEFAULT_SPACE, help=f"search space YAML (default {DEFAULT_SPACE})")
    compare.add_argument("--budget", type=int, default=60, help="total epochs each run may train (default 60)")
    compare.add_argument("--repeats", type=int, default=3, help="runs per strategy, seeds 0..R-1 (default 3)")
    compare.add_argument("--strategy", action="append", help="a strategy to include (repeat; default: all five)")
    compare.add_argument("--target", type=float, help="accuracy to reach (default: 95%% of the best found)")
    compare.add_argument("--study", help="prefix of the studies (default: <space>-compare)")
    compare.add_argument("--out", help="output folder (default reports/compare-<study>)")
    compare.add_argument("--storage", help="Optuna storage URL (default: SQLite in $HARNESS_HOME or ./harness-runs)")
    compare.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite beside the Optuna storage)")
    compare.add_argument("--mixed-precision", action="store_true", help="train in mixed_float16")
    compare.add_argument("--data-dir", help="folder holding downloaded datasets")
    compare.set_defaults(run=cmd_compare_engines)

    report = commands.add_parser("report", help="write a report of one or more studies: tables, Pareto fronts, plots")
    report.add_argument("--study", action="append", required=True, help="a study to report on; repeat to compare studies")
    report.add_argument("--out", help="output folder (default reports/<study>[-vs-<study>...])")
    report.add_argument("--storage", help="Optuna storage URL (default: the search's SQLite default)")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: the search's SQLite default)")
    report.set_defaults(run=cmd_report)

    ui = commands.add_parser("ui", help="start the MLflow UI on 127.0.0.1 against the harness's store")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: the search's default store)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(run=cmd_ui)

    dashboard = commands.add_parser("dashboard", help="start optuna-dashboard on 127.0.0.1 over the studies' storage")
    dashboard.add_argument("--storage", help="Optuna storage URL (default: the search's SQLite default)")
    dashboard.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.set_defaults(run=cmd_dashboard)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ log repeats a harmless tf.data notice every trial; set the variable to see it again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
