"""Where and how Keras trains in this process, on whichever backend it runs (TensorFlow, JAX or PyTorch):
threads, GPUs, precision, determinism, and the words that record them with a run.

Call `configure` before the backend computes anything: its settings are per process.
"""

import functools
import importlib
import os

import keras

BACKENDS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}  # KERAS_BACKEND's names, and how to say them


def backend():
    """The backend Keras runs on in this process."""
    return keras.backend.backend()


def configure(threads=None, mixed_precision=False):
    """GPU memory taken as needed (so workers can share a GPU), `threads` CPU threads if given, deterministic
    ops, and mixed_float16 if asked."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    elif name == "jax":
        # Read when JAX first computes, which is after this: its default takes 75% of a GPU at start.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        flags = ["--xla_gpu_deterministic_ops=true"]
        if threads:
            flags += ["--xla_cpu_multi_thread_eigen=false", f"intra_op_parallelism_threads={threads}"]
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
    elif name == "torch":
        import torch

        # cuBLAS needs this before its first call to run deterministically.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if threads:
            torch.set_num_threads(threads)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")


def enable_determinism():
    """Make the backend's ops deterministic where it can (JAX's are set by `configure`, before it computes)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif name == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)  # an op without a deterministic kernel warns
        torch.backends.cudnn.benchmark = False


def determinism():
    """What `enable_determinism` and `configure` make deterministic on this backend, for the run's record."""
    name = backend()
    if name == "tensorflow":
        return "TensorFlow op determinism"
    if name == "torch":
        return "torch.use_deterministic_algorithms (warn only)"
    if "--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", ""):
        return "XLA --xla_gpu_deterministic_ops"
    return "XLA on CPU only (XLA_FLAGS lacks --xla_gpu_deterministic_ops=true)"


def gpu_count():
    """How many GPUs the backend sees."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return len([d for d in jax.devices() if d.platform == "gpu"])
    import torch

    return torch.cuda.device_count()


def gpu_ids(text, per_gpu=1):
    """'all' or '0,1' -> the GPU ids, each repeated `per_gpu` times (workers sharing a GPU); ValueError without one."""
    visible = list(range(gpu_count()))
    if not visible:
        raise ValueError(
            f"--gpus: {BACKENDS[backend()]} sees no GPU on this machine; leave --gpus out to run on the CPU"
        )
    ids = visible if text == "all" else [int(i) for i in text.split(",")]
    missing = sorted(set(ids) - set(visible))
    if missing:
        raise ValueError(f"--gpus: no GPU {missing[0]}; this machine has {len(visible)} (ids {visible})")
    # Small CNNs leave a GPU idle between steps: several workers can share one, each pinned to it.
    return [gpu for gpu in ids for _ in range(per_gpu)]


@functools.cache
def description():
    """{backend, backend_version, keras_version, device, determinism}: what a run trained on."""
    name = backend()
    module = importlib.import_module(name)
    if name == "tensorflow":
        gpus = module.config.list_physical_devices("GPU")
        devices = [module.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    elif name == "jax":
        devices = [d.device_kind for d in module.devices() if d.platform == "gpu"]
    else:
        devices = [module.cuda.get_device_name(i) for i in range(module.cuda.device_count())]
    return {
        "backend": name,
        "backend_version": module.__version__,
        "keras_version": keras.__version__,
        "device": ", ".join(devices) or "CPU",
        "determinism": determinism(),
    }
