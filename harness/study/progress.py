"""What a stage shows: its progress bar and a line per trial, the lines before and after it; and a gentle Ctrl-C.
The stage's loop (`search.Search`) decides what to run and when to stop; this module only draws."""

import contextlib
import signal
import threading

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.params import describe
from harness.redaction import redact
from harness.study.baselines import searched_shared_keys, takes_baseline_turns
from harness.study.records import (
    BASELINE,
    BASELINE_TURN,
    DUPLICATE_OF,
    OUTCOME,
    PILOT,
    TUNED_BASELINE,
    UNTRAINED,
    configuration_key,
    counted_trials,
    enqueued_params,
    trials_taken,
)


@contextlib.contextmanager
def deferred_interrupts(on_interrupt):
    """Turn the first Ctrl-C into a call to `on_interrupt` rather than an exception.

    A KeyboardInterrupt raised at a random point can be swallowed by a library
    or leave its bookkeeping half-done; a flag is checked where stopping is safe.
    A second Ctrl-C interrupts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGINT, previous)
        on_interrupt()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def outcome_counts(study, trials=None):
    """How many counted trials ended COMPLETE, PRUNED and FAIL."""
    states = [t.user_attrs[OUTCOME] for t in counted_trials(study, trials)]
    return {state: states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL")}


def outcome_line(label, study):
    """`label: N complete, N pruned, N fail` for the study's counted trials."""
    return f"{label}: " + ", ".join(f"{n} {state.lower()}" for state, n in outcome_counts(study).items())


def run_label(trial, study, stage):
    """What a trial trains, in the console's words: "search trial 7", "search trial 0 (the baseline)", "matched
    baseline, seed 2/5", "tuned baseline, seed 1/5", "confirm all gelu p4, seed 3/5"."""
    params = enqueued_params(trial)
    if stage == "search":
        role = " (the baseline)" if trial.user_attrs.get(BASELINE) else ""
        role = " (a baseline turn)" if trial.user_attrs.get(BASELINE_TURN) else role
        return f"search trial {trial.number}{role}"
    if not params:
        return f"{stage} #{trial.number}"
    pilot = bool(trial.user_attrs.get(PILOT))
    seeds = study.user_attrs.get("pilot_seeds" if pilot else "seeds") or []
    seed = params.get("seed", 0)
    which = f"seed {seeds.index(seed) + 1}/{len(seeds)}" if seed in seeds else f"seed {seed}"
    tuned = study.user_attrs.get(TUNED_BASELINE)
    if params.get("insertion", "none") != "none":
        what = f"{stage} {describe(params)}"
    elif tuned is not None and configuration_key(params) == configuration_key(tuned):
        what = "tuned baseline"
    else:
        what = "matched baseline"
    return ("pilot (not tested): " if pilot else "") + f"{what}, {which}"


def trial_line(trial, best, stage, label):
    """One line for a finished trial, `label` (`run_label`) first; `best` is the study's best validation accuracy
    so far, or None."""
    state = trial.user_attrs.get(OUTCOME) or trial.state.name
    flops = trial.user_attrs.get("flops")
    cost = f"{flops / 1e6:6.2f} MFLOPs" if flops else "      -      "
    if stage != "search":  # seeded runs are judged on the test set
        test = trial.user_attrs.get("test_accuracy")
        accuracy, best = (f"test acc {test:.3f}" if test is not None else "test acc   -  "), ""
    else:
        accuracy = f"val acc {trial.values[0]:.3f}" if trial.values else "val acc   -  "
        best = "best   -  " if best is None else f"best {best:.3f}"
    shown = trial.params or enqueued_params(trial)
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    reason = trial.user_attrs.get("failure_reason") or trial.user_attrs.get(UNTRAINED)
    flag = f" [{reason[:100]}]" if reason else ""
    return f"{label}: {state:<8} {accuracy}  {cost}  {best}  {params}{flag}"


def stage_notes(space, settings, closed=()):
    """What a user should know before this stage's trials start; `closed`, the MLflow runs just closed that a process
    which died had left RUNNING."""
    if closed:
        yield f"closed {len(closed)} MLflow run(s) left RUNNING by a process that died"
    if space.is_multi_objective and settings.pruner != "none":
        yield "pruning is off: Optuna cannot prune multi-objective trials"
    searched = ", ".join(searched_shared_keys(space))
    if settings.stage == "search" and searched:
        if not takes_baseline_turns(space, settings):
            yield f"the baseline is tuned only where the space's insertion choices include none (over {searched})"
        else:
            yield (
                f"1 sampled trial in {settings.baseline_every} tunes the baseline over the hyperparameters it "
                f"shares ({searched}), so the tuned baseline has a search of its own"
            )
    if settings.stage == "confirm":
        yield (
            "confirmation: the search's best configurations, their matched baselines and the tuned baseline, "
            "re-trained with fresh seeds and judged on the test set"
        )


def full_study_line(study, trials, settings):
    """What a study that already holds `settings.n_trials` trials holds."""
    counts, running = outcome_counts(study, trials), sum(t.state.name == "RUNNING" for t in trials)
    return (
        f"study {settings.optuna_study!r} already holds {sum(counts.values()) + running} trials "
        f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed, {running} running), "
        f"as many as --trials {settings.n_trials}: nothing new to run"
    )


def unfilled_line(search, elapsed):
    """None if the stage ended as asked (its study holds `n_trials` counted trials, or its `timeout` passed in the
    `elapsed` seconds it ran), else the line that says how far it got: one rule for a process and a worker pool."""
    settings = search.settings
    held = trials_taken(search.study, search.current_trials())  # another process may still train the last ones
    if held >= settings.n_trials or (settings.timeout is not None and elapsed >= settings.timeout):
        return None
    return (
        f"{settings.stage} {settings.optuna_study!r} holds {held} of its {settings.n_trials} trials; the failure "
        "reasons are above, and the same command resumes it"
    )


def where(settings):
    """Lines telling a user where a search's results are."""
    return [
        f"Optuna storage: {redact(settings.storage)} (study {settings.study_name!r})",
        f"MLflow store:   {redact(settings.tracking_uri)} (experiment {settings.study_name!r})",
        f"Browse runs:    harness ui --tracking-uri '{redact(settings.tracking_uri)}'",
    ]


def duplicate_line(trial, stage):
    """The line for a queued run that stood down: another process had queued the same one."""
    return (
        f"{stage} #{trial.number}: the same run as #{trial.user_attrs[DUPLICATE_OF]}, queued at once by another "
        "process; skipped"
    )


def taken_over_line(number, stage):
    """The line for this process's trial that another worker marked FAIL while it ran."""
    return (
        f"{stage} #{number}: another worker marked it FAIL while it ran (its heartbeat came late); "
        "its run is closed, and this worker goes on"
    )


class StageProgress:
    """A stage's progress bar and its lines: it draws what the stage's loop (`Search`) tells it, and decides
    nothing."""

    def __init__(self, console, description, total, completed):
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task(description, total=total, completed=completed)

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc_info):
        self.bar.stop()

    def advance(self, completed):
        """Show `completed` trials done."""
        self.bar.update(self.task, completed=completed)

    def say(self, line):
        """A line above the bar, as it is (no markup: a trial's params may hold brackets)."""
        self.bar.console.print(line, soft_wrap=True, highlight=False, markup=False)
