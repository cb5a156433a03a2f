"""Where and how TensorFlow trains in this process: threads, GPUs, precision.

Call `configure_tensorflow` before TensorFlow runs anything; its settings are per process.
"""


def configure_tensorflow(threads=None, mixed_precision=False):
    """Memory growth on every GPU, `threads` intra-op threads if given, and mixed_float16 if asked."""
    import keras
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")


def gpu_ids(text, per_gpu=1):
    """'all' or '0,1' -> the GPU ids, each repeated `per_gpu` times (workers sharing a GPU); ValueError without one."""
    import tensorflow as tf

    visible = list(range(len(tf.config.list_physical_devices("GPU"))))
    if not visible:
        raise ValueError("--gpus: TensorFlow sees no GPU on this machine; leave --gpus out to run on the CPU")
    ids = visible if text == "all" else [int(i) for i in text.split(",")]
    missing = sorted(set(ids) - set(visible))
    if missing:
        raise ValueError(f"--gpus: no GPU {missing[0]}; this machine has {len(visible)} (ids {visible})")
    # Small CNNs leave a GPU idle between steps: several workers can share one, each pinned to it.
    return [gpu for gpu in ids for _ in range(per_gpu)]
