"""The `harness` commands, each a thin call into the library: check its input (before TensorFlow loads), run it,
and print what a user needs. `harness.cli` maps names to them and turns errors into one line."""

import json
import logging
import os
from pathlib import Path

from harness.cli_checks import (
    check_ray_args,
    check_rope,
    check_search_args,
    check_storage_answers,
    load_space_of,
    seeds_of,
)


def cmd_train(args):
    from harness.study.space import check_param_values

    params = {"seed": args.seed, **dict(args.param)}
    check_param_values(params)
    from harness.training import data
    from harness.training.trial import run_trial

    dataset = data.load(
        args.dataset,
        data_dir=args.data_dir,
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        seed=args.seed,
    )
    result = run_trial(params, dataset, epochs=args.epochs, verbose=args.verbose)
    print(json.dumps({"dataset": args.dataset, "epochs": args.epochs, **result.summary()}, indent=2))
    if args.save:
        result.model.save(args.save)
        print(f"model saved to {args.save}")
    return 1 if result.diverged else 0


def _quiet_libraries():
    """Optuna's, Alembic's and MLflow's own lines (a link per run closed on a server) repeat what the trial lines say."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _settings(args, study_name, **options):
    """Study `study_name`'s settings; storage and tracking URLs left out come from the environment or the defaults."""
    from harness.study.settings import SearchSettings

    return SearchSettings(
        study_name=study_name,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        mixed_precision=args.mixed_precision,
        log_norms=args.log_norms,
        **options,
    )


def cmd_search(args):
    space = load_space_of(args)
    check_search_args(args)
    seeds = seeds_of(args, 2)
    check_storage_answers(args.storage)
    from harness.study.confirm import search_and_confirm
    from harness.study.progress import outcome_line, where
    from harness.study.search import Search
    from harness.study.space import find_space
    from harness.study.workers import WorkerPool
    from harness.training.device import configure, gpu_ids

    _quiet_libraries()
    gpus = gpu_ids(args.gpus, args.workers_per_gpu) if args.gpus else None
    workers = len(gpus) if gpus else args.workers
    settings = _settings(
        args,
        args.study or Path(args.space).stem,
        n_trials=args.trials,
        timeout=args.timeout,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        heartbeat_interval=args.heartbeat,
        workers=workers,
        parent_run_id=args.parent_run_id,
        save_models=args.save_models,
        baseline_every=args.baseline_every,
        vary_split=args.vary_split,
    )
    # Ray Tune's cluster, or workers that are processes of their own (a GPU is always pinned through one).
    pool = _ray_pool(args)
    if pool is None and (gpus or workers > 1):
        pool = WorkerPool(find_space(args.space), workers, gpus, args.threads, args.data_dir)
    if pool is None:
        configure(args.threads, args.mixed_precision)
    if args.engine == "keras-tuner":
        return _run_keras_tuner(args, space, settings)
    search = Search(space, settings)
    code, confirm = search_and_confirm(search, args.confirm, seeds, pool)
    print(outcome_line(f"study {settings.study_name!r}", search.study))
    if confirm is not None:
        print(
            outcome_line(
                f"confirmation {confirm.settings.optuna_study!r} (the {args.confirm} best x "
                f"{len(confirm.study.user_attrs['seeds'])} seeds, with their baselines)",
                confirm.study,
            )
        )
    print("\n".join(where(settings)))
    return code


def _run_keras_tuner(args, space, settings):
    from rich.console import Console

    from harness.study.lifecycle import open_lifecycle
    from harness.study.progress import where
    from harness.study.storage import tuner_home
    from harness.study.tuner import run_tuner

    lifecycle = open_lifecycle(space, settings, Console())
    outcomes = list(
        run_tuner(
            space, lifecycle, args.tuner, args.trials, seed=args.seed, directory=tuner_home(settings.tracking_uri)
        ).values()
    )
    print(
        f"keras-tuner {args.tuner} {settings.study_name!r}, the trials this run trained: "
        + ", ".join(f"{outcomes.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL"))
    )
    print("\n".join(where(settings)))
    return 0


def _ray_pool(args):
    """The `RayPool` that --ray asks for (Ray Tune schedules the trials on its cluster), or None."""
    if not args.ray:
        return None
    from harness.study.ray_pool import RayPool

    address = None if args.ray == "local" else args.ray
    return RayPool(address, args.cpus_per_trial, args.gpus_per_trial, max_failures=args.max_failures)


def cmd_benchmark(args):
    space = load_space_of(args)
    seeds = seeds_of(args, 1)
    check_ray_args(args)
    from harness.study.confirm import run_benchmark
    from harness.study.progress import outcome_line
    from harness.training.device import configure

    _quiet_libraries()
    settings = _settings(
        args,
        args.study or f"{Path(args.space).stem}-benchmark",
        sampler="random",
        pruner="none",
        vary_split=args.vary_split,
    )
    pool = _ray_pool(args)
    if pool is None:
        configure(mixed_precision=args.mixed_precision)
    study = run_benchmark(space, settings, seeds, from_study=args.from_study, top=args.top, pool=pool)
    print(outcome_line(f"benchmark {settings.study_name!r}", study))
    print(f"means, 95% CIs and tests against the baseline: harness report --study {settings.study_name}")
    return 0


def cmd_suite(args):
    from harness.study.suite import load_suite

    suite = load_suite(args.file, args.data_dir)  # checked before TensorFlow loads
    check_rope(args.rope)
    check_ray_args(args)
    from harness.reporting.suite import write_suite_report
    from harness.study.suite import run_suite
    from harness.training.device import configure

    _quiet_libraries()
    settings = _settings(args, suite.name, sampler="random", pruner="none", vary_split=args.vary_split)
    pool = _ray_pool(args)
    if pool is None:
        configure(mixed_precision=args.mixed_precision)
    run_suite(suite, settings, say=_say, pool=pool)
    written = write_suite_report(
        suite, settings.storage, settings.tracking_uri, args.out, rope=args.rope, provenance=args.provenance
    )
    print(
        f"suite report written to {written.folder}/index.html (and index.md, differences.csv, accuracy.csv, "
        "critical_difference.png)"
    )
    print("\n".join(written.answer))
    return 0


def cmd_compare_engines(args):
    space = load_space_of(args)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    from harness.study.compare import STRATEGIES, compare_engines
    from harness.training.device import configure

    _quiet_libraries()
    settings = _settings(args, args.study or f"{Path(args.space).stem}-compare")
    configure(mixed_precision=args.mixed_precision)
    summary = compare_engines(
        space,
        settings,
        args.budget,
        args.repeats,
        strategies=args.strategy or tuple(STRATEGIES),
        target=args.target,
        out=args.out,
    )
    print(summary.round(4).to_string())
    print(
        f"anytime curves: {args.out or f'reports/compare-{settings.study_name}'}/anytime.png, anytime.csv, summary.md"
    )
    return 0


def cmd_report(args):
    from harness.reporting.pages import write_report
    from harness.study.storage import resolve_stores

    check_rope(args.rope)
    written = write_report(
        args.study,
        *resolve_stores(args.storage, args.tracking_uri),
        args.out,
        rope=args.rope,
        provenance=args.provenance,
    )
    print(f"report written to {written.folder}/index.html (and index.md, CSV tables, plots)")
    print("\n".join(written.answer))
    return 0


def cmd_ui(args):
    from harness.study.storage import resolve_stores
    from harness.study.servers import mlflow_ui

    return mlflow_ui(resolve_stores(tracking_uri=args.tracking_uri)[1], host=args.host, port=args.port, say=_say)


def cmd_dashboard(args):
    from harness.study.search import name_objectives
    from harness.study.servers import optuna_dashboard
    from harness.study.storage import open_storage, resolve_stores

    storage = open_storage(resolve_stores(storage=args.storage)[0])
    name_objectives(storage)
    return optuna_dashboard(storage, host=args.host, port=args.port, say=_say)


def cmd_worker(args):
    """A worker joining a search by its study's name, or a process of a `WorkerPool` (its job comes as data in the
    environment, not as arguments)."""
    if args.study is None:
        from harness.study.workers import WORKER_JOB, run_worker

        if WORKER_JOB not in os.environ:
            raise ValueError("harness worker needs --study: the name of the search to join")
        _quiet_libraries()
        return run_worker(json.loads(os.environ.pop(WORKER_JOB)))
    check_storage_answers(args.storage)
    from harness.study.storage import resolve_stores
    from harness.study.workers import join_search

    storage, tracking_uri = resolve_stores(args.storage, args.tracking_uri)

    _quiet_libraries()
    return join_search(
        args.study, storage, tracking_uri, data_dir=args.data_dir, threads=args.threads, wait=args.wait, say=_say
    )


def cmd_storage_proxy(args):
    from harness.study.servers import storage_proxy
    from harness.study.storage import STORAGE_VARIABLE

    storage = args.storage or os.environ.get(STORAGE_VARIABLE)
    if not storage:
        raise ValueError(f"harness storage-proxy needs the database's URL: --storage, or ${STORAGE_VARIABLE}")
    storage_proxy(storage, host=args.host, port=args.port, address_file=args.address_file, say=_say)
    return 0


def _say(line):
    print(line, flush=True)
