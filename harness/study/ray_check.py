"""What `--ray` needs, checked in a few seconds and before TensorFlow or Ray loads: the extra installed, the
resources of a trial that make sense, and a cluster that answers at the address given."""

import importlib.util
import socket

CONNECT_TIMEOUT = 5  # seconds a Ray cluster's head may take to accept a connection


def check_ray(address, cpus_per_trial=1.0, gpus_per_trial=0.0, max_failures=0):
    """Raise ValueError, in one line, if `--ray ADDRESS` cannot be used ("local": a cluster started here)."""
    if importlib.util.find_spec("ray") is None:
        raise ValueError("--ray needs Ray, which is not installed: pip install 'taylor-harness[ray]'")
    for flag, value in (("--cpus-per-trial", cpus_per_trial), ("--gpus-per-trial", gpus_per_trial)):
        if value < 0:
            raise ValueError(f"{flag} must be at least 0, got {value:g}")
    if max_failures < 0:
        raise ValueError(f"--max-failures must be at least 0, got {max_failures}")
    if address == "local":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except (OSError, ValueError) as error:
        raise ValueError(f"--ray {address}: no Ray cluster answers there ({error})") from None
