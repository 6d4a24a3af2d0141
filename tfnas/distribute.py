"""tf.distribute strategies by name, and CPU splitting for tests."""

import json
import os

from tfnas.errors import UsageError

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(n):
    """Splits the CPU into `n` logical devices (call before TensorFlow initialises devices)."""
    import tensorflow as tf
    if n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        raise UsageError(f"--cpu_devices={n}: TensorFlow devices were already initialised "
                         f"({e})") from e


def make_strategy(name="default", cpu_devices=0):
    """Returns (strategy, is_chief).

    Args:
        name: "default" (one device), "mirrored" (all GPUs, or the logical CPUs from
            `cpu_devices`) or "multi_worker" (TensorFlow's MultiWorkerMirroredStrategy,
            configured by the TF_CONFIG environment variable).
        cpu_devices: split the CPU into this many logical devices first (0/1: no split).
    """
    import tensorflow as tf
    if name not in STRATEGIES:
        raise UsageError(f"--strategy={name!r} is invalid: expected one of "
                         f"{', '.join(STRATEGIES)}")
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             "(cluster and task); see the README")
        try:
            tf_config = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise UsageError(f"TF_CONFIG is not valid JSON: {e}") from e
        split_cpu(cpu_devices)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = tf_config.get("task", {})
        is_chief = task.get("type", "worker") == "chief" or (
            task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0
            and "chief" not in tf_config.get("cluster", {}))
        return strategy, is_chief
    split_cpu(cpu_devices)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices), True
    return tf.distribute.get_strategy(), True
