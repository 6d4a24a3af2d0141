"""tf.distribute strategies by name, and CPU splitting for tests."""

import json
import os
import re

from tfnas.errors import UsageError

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(n):
    """Splits the CPU into `n` logical devices (call before TensorFlow initialises devices)."""
    import tensorflow as tf
    if not 0 <= n <= 1024:
        raise UsageError(f"--cpu_devices={n} is invalid: expected 0 (no split) to 1024")
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
        from tfnas.interrupt import STOP
        STOP.reclaim()  # the coordination service just took SIGTERM over (and ignores it)
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


def num_workers(strategy):
    """Worker processes a strategy spans (1 for the default and mirrored strategies)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def sum_over_replicas(strategy, per_replica):
    """A list of per-replica tensors summed over every replica of every worker: one batched
    all-reduce of the whole list (packed into as few collectives as the cross-device ops
    allow), not one reduction per tensor. Call in the cross-replica context of a
    `tf.function`; returns plain tensors, identical everywhere."""
    import tensorflow as tf
    if strategy.num_replicas_in_sync > 1:
        per_replica = strategy.extended.batch_reduce_to(
            tf.distribute.ReduceOp.SUM, [(t, t) for t in per_replica])
    return [strategy.experimental_local_results(t)[0] for t in per_replica]


def distribute_input(strategy, make, batch_size):
    """Distributed batches of the dataset `make(**kw)` builds.

    One machine: the global batches split across its replicas. Several workers: each builds
    its own pipeline with `shard=(worker, workers)` and `replica_batch=...` and so decodes
    and augments only its slice of every global batch (`distribute_datasets_from_function`),
    the same batches as on one machine.
    """
    if num_workers(strategy) == 1:
        return strategy.experimental_distribute_dataset(make())

    def per_worker(ctx):
        return make(shard=(ctx.input_pipeline_id, ctx.num_input_pipelines),
                    replica_batch=ctx.get_per_replica_batch_size(batch_size))
    return strategy.distribute_datasets_from_function(per_worker)


_HALF = 2 ** 24  # integers travel as two float32 parts below this


def _pack(v, is_int):
    """One float32 tensor per variable (the all-reduce packs tensors of one dtype)."""
    import tensorflow as tf
    if not is_int:
        return tf.identity(v)
    x = tf.cast(v, tf.int64)
    hi = tf.math.floordiv(x, _HALF)
    return tf.cast(tf.stack([hi, x - hi * _HALF]), tf.float32)


def _unpack(t, v, is_int):
    import tensorflow as tf
    if not is_int:
        return t
    parts = tf.cast(t, tf.int64)
    return tf.cast(parts[0] * _HALF + parts[1], v.dtype)


def _state_buffer(blob, length):
    """`blob` (the chief's JSON state; empty elsewhere) as float32 bytes, `length` long."""
    import numpy as np
    buf = np.zeros(max(length, 1), np.float32)
    buf[:len(blob)] = np.frombuffer(blob, np.uint8)
    return buf


def _chief_sum(strategy, is_chief, buf, variables=(), integer=()):
    """SUM over replicas where only the chief's first replica contributes: the chief's
    `buf` and (packed) variable values on every worker."""
    import tensorflow as tf

    def contribution(buf_t):
        ctx = tf.distribute.get_replica_context()
        first = tf.logical_and(tf.constant(bool(is_chief)),
                               tf.equal(ctx.replica_id_in_sync_group, 0))
        keep = lambda t: tf.where(first, t, tf.zeros_like(t))  # noqa: E731
        return [keep(buf_t)] + [keep(_pack(v, i)) for v, i in zip(variables, integer)]

    @tf.function
    def reduce(buf_t):
        per_replica = strategy.run(contribution, args=(buf_t,))
        summed = strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM,
                                                   [(t, t) for t in per_replica])
        return [strategy.experimental_local_results(t)[0] for t in summed]

    return reduce(tf.constant(buf))


def broadcast_from_chief(strategy, is_chief, variables, state):
    """Makes every worker hold the chief's values of `variables` and the chief's `state`.

    A multi-worker run resumes from the chief's checkpoint whatever the disk layout: workers
    with their own local disks (no checkpoint, or an older one) take the chief's variables
    and loop state (epoch, method history, ...). Two batched all-reduces (the state's length,
    then the state and every variable) in which only the chief's first replica contributes:
    SUM with zeros, exact for every finite float32 (integer counters travel as two float32
    parts of 24 bits, exact below 2**48). A no-op for a single worker.

    Args:
        variables: the variables a checkpoint holds (mirrored; float32 or integer).
        state: the chief's JSON-serialisable loop state (None: no checkpoint); ignored on the
            other workers.

    Returns:
        The chief's state (None when the chief had none).
    """
    import json
    import numpy as np
    import tensorflow as tf
    if num_workers(strategy) == 1:
        return state
    integer = [tf.as_dtype(v.dtype).is_integer for v in variables]
    for v, is_int in zip(variables, integer):
        if is_int and is_chief and np.abs(v.numpy()).max(initial=0) >= 2 ** 48:
            raise ValueError(f"{v.path}: integer state beyond 2**48 cannot be broadcast")
        if not is_int and tf.as_dtype(v.dtype) != tf.float32:
            raise ValueError(f"{v.path}: only float32 and integer state can be broadcast")
    blob = json.dumps(state).encode() if is_chief else b""
    if len(blob) >= _HALF:
        raise ValueError(f"loop state of {len(blob)} bytes is too large to broadcast")
    length = int(_chief_sum(strategy, is_chief, np.array([len(blob)], np.float32))[0]
                 .numpy()[0])
    out = _chief_sum(strategy, is_chief, _state_buffer(blob, length), variables, integer)
    for v, value, is_int in zip(variables, out[1:], integer):
        v.assign(_unpack(value, v, is_int))
    return json.loads(out[0].numpy()[:length].astype(np.uint8).tobytes().decode())


def any_worker_fn(strategy):
    """A function `f(flag) -> bool`: whether `flag` is true on any worker (one tiny
    all-reduce; every worker must call it at the same point). A single worker: `bool`."""
    import tensorflow as tf
    if num_workers(strategy) == 1:
        return bool

    @tf.function
    def reduce(flag_t):
        per_replica = strategy.run(lambda f: tf.identity(f), args=(flag_t,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda flag: float(reduce(tf.constant(1.0 if flag else 0.0)).numpy()) > 0


_PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "CancelledError", "AbortedError")


def is_lost_peer(e):
    """A collective that failed because another worker of the cluster went away."""
    return bool(os.environ.get("TF_CONFIG")) and type(e).__name__ in _PEER_ERRORS + (
        "InternalError", "UnknownError") and any(
        w in str(e).lower() for w in ("worker", "task", "peer", "collective", "heartbeat",
                                      "unavailable", "connect", "deadline"))


def lost_peer_message(e):
    """One line: which worker was lost and how to resume."""
    found = re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", str(e))
    me = ""
    try:
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
        me = f"/job:{task.get('type')}/task:{task.get('index')}"
    except (ValueError, KeyError, AttributeError):
        pass
    others = sorted({f"{j} {t}" for j, t in found if f"/job:{j}/task:{t}" != me})
    who = f"lost contact with {', '.join(others)}" if others else "lost contact with a " \
        "worker of the cluster"
    return (f"{who} ({type(e).__name__}); every worker stops. Restart all workers with the "
            f"same command and TF_CONFIG to resume from the last checkpoint")
