"""`harness`: the command line over the library. The commands (`harness.cli_commands`) are thin wrappers; this
module runs one and turns what goes wrong into one line and an exit code, never a traceback or a password."""

import contextlib
import logging
import os
import re
import sys
import threading
import traceback

from harness.cli_commands import (
    cmd_benchmark,
    cmd_compare_engines,
    cmd_dashboard,
    cmd_report,
    cmd_search,
    cmd_storage_proxy,
    cmd_suite,
    cmd_train,
    cmd_ui,
    cmd_worker,
)
from harness.cli_parser import build_parser
from harness.redaction import redact_text

DEBUG_VARIABLE = "HARNESS_DEBUG"  # set it to see the traceback of an internal error


COMMANDS = {
    "train": cmd_train,
    "search": cmd_search,
    "benchmark": cmd_benchmark,
    "suite": cmd_suite,
    "compare-engines": cmd_compare_engines,
    "report": cmd_report,
    "ui": cmd_ui,
    "dashboard": cmd_dashboard,
    "worker": cmd_worker,
    "storage-proxy": cmd_storage_proxy,
}


class _Notes(logging.Handler):
    """The library's warnings (an image folder's skipped files, say) as `harness: note: ...` lines on stderr."""

    def emit(self, record):
        print(f"harness: note: {record.getMessage()}", file=sys.stderr)


def _show_library_notes():
    logger = logging.getLogger("harness")
    if not any(isinstance(h, _Notes) for h in logger.handlers):
        logger.addHandler(_Notes(logging.WARNING))
        logger.propagate = False


# TensorFlow's C++ start-up and runtime notices, which its libraries write straight to file descriptor 2 whatever
# TF_CPP_MIN_LOG_LEVEL says: absl's info and warning lines, the instructions the binary could use, and two errors
# that are not (no CUDA driver on a CPU machine; a newer graph attribute the runtime ignores).
NATIVE_NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog|To enable the following instructions|"
    rb"[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |"
    rb"E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] (failed call to cuInit|NodeDef mentions attribute)"
)


@contextlib.contextmanager
def native_noise_filtered():
    """Run the body with file descriptor 2 read through a filter that drops `NATIVE_NOISE` lines, so a user sees
    the tool's own lines (an error in one line) and everything else a library says, never TensorFlow's start-up."""
    if os.environ.get(DEBUG_VARIABLE):
        yield
        return
    sys.stderr.flush()
    stderr = os.dup(2)
    source, sink = os.pipe()
    os.dup2(sink, 2)
    os.close(sink)

    out = os.fdopen(os.dup(stderr), "wb", buffering=0)  # here, not in the thread: `stderr` may close before it runs

    def forward():
        with os.fdopen(source, "rb") as lines, out:
            for line in lines:
                if not NATIVE_NOISE.match(line):
                    out.write(line)

    forwarding = threading.Thread(target=forward, daemon=True)
    forwarding.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(stderr, 2)  # the pipe's last writer closes here, unless a child process still holds it
        os.close(stderr)
        forwarding.join(timeout=1)


def _use_backend(name):
    """Train on Keras backend `name`: Keras reads KERAS_BACKEND once, when it is first imported (workers inherit it)."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise ValueError(f"--backend {name}: {name} is not installed; pip install 'taylor-harness[{name}]'")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != name:
        raise ValueError(
            f"--backend {name}: Keras already runs on {sys.modules['keras'].backend.backend()} in this process"
        )
    os.environ["KERAS_BACKEND"] = name


def main(argv=None):
    args = build_parser(COMMANDS).parse_args(argv)
    _show_library_notes()
    # TensorFlow's C++ log repeats a harmless tf.data notice every trial; set the variable to see it again.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        if getattr(args, "backend", None):
            _use_backend(args.backend)
        with native_noise_filtered():
            return args.run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: a flag, a file, a study, a store
        print(f"harness: error: {redact_text(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        trains = args.command in ("search", "benchmark", "suite", "compare-engines", "worker")
        print(
            "harness: interrupted"
            + (": the trial in flight is marked FAIL and its MLflow runs KILLED" if trains else ""),
            file=sys.stderr,
        )
        return 130
    except Exception as error:  # a defect of ours or a library's: still one line, and never a password
        if os.environ.get(DEBUG_VARIABLE):
            traceback.print_exc()
        print(
            f"harness: internal error: {redact_text(f'{type(error).__name__}: {error}')} "
            f"(set {DEBUG_VARIABLE}=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
