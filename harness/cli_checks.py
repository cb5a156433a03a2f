"""The checks of a command's input that run before TensorFlow loads, so that bad input answers at once: the
space file, the search's flags, the seeds, the storage."""

import os

from harness.study.ray_check import check_ray


def load_space_of(args):
    """The space file with --data-dir applied; checked before TensorFlow loads, so a bad one answers at once."""
    from harness.study.space import find_space, load_space

    return load_space(find_space(args.space), args.data_dir)


def check_search_args(args):
    for flag, value, least in (
        ("--trials", args.trials, 1),
        ("--confirm", args.confirm, 0),
        ("--workers", args.workers, 1),
    ):
        if value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    if args.baseline_every < 0:
        raise ValueError(
            f"--baseline-every must be at least 0 (0: the baseline gets no turns), got {args.baseline_every}"
        )
    if args.workers_per_gpu < 1 or (args.workers_per_gpu > 1 and not args.gpus):
        raise ValueError(f"--workers-per-gpu must be at least 1 and comes with --gpus; got {args.workers_per_gpu}")
    if args.engine == "keras-tuner" and (args.workers > 1 or args.gpus or args.ray):
        raise ValueError("--engine keras-tuner runs in one process; leave out --workers, --gpus and --ray")
    if args.ray and (args.workers > 1 or args.gpus):
        raise ValueError("--ray schedules the trials itself; leave out --workers and --gpus (use --gpus-per-trial)")
    check_ray_args(args)


def check_ray_args(args):
    """--ray's cluster and each trial's resources, if --ray is given."""
    if args.ray:
        check_ray(args.ray, args.cpus_per_trial, args.gpus_per_trial, args.max_failures)


def seeds_of(args, least):
    """--seeds as `run_seeded` takes it: a count, or `AutoSeeds`; checked before TensorFlow loads."""
    from harness.statistics import MIN_SEEDS, AutoSeeds

    if args.seeds == "auto":
        if args.max_seeds < MIN_SEEDS:
            raise ValueError(f"--max-seeds must be at least {MIN_SEEDS}, got {args.max_seeds}")
        check_rope(args.rope)
        return AutoSeeds(args.max_seeds, args.rope)
    if args.seeds < least:
        raise ValueError(
            f"--seeds must be at least {least}"
            + (" to give a confidence interval" if least > 1 else "")
            + f", got {args.seeds}"
        )
    return args.seeds


def check_rope(rope):
    if not rope > 0:
        raise ValueError(f"--rope must be a positive number of points, got {rope:g}")


def check_storage_answers(storage):
    """A storage server or proxy that is down answers in one line, before TensorFlow loads and before a default
    store is made."""
    from harness.study.storage import STORAGE_VARIABLE, check_database

    url = storage or os.environ.get(STORAGE_VARIABLE)
    if url:
        check_database(url, "storage")
