"""Run in a subprocess (needs its own TF runtime): ReferenceSGD under model.fit on 2 logical
CPUs vs 1 device, with a clip that binds; and Keras's SGD(global_clipnorm) for contrast."""

import json

from tfnas.distribute import split_cpu

split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas.optimizers import ReferenceSGD  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype(np.float32)
y = (rng.normal(size=(64, 3)) * 3).astype(np.float32)
init = [rng.normal(size=(6, 16)).astype(np.float32), np.zeros(16, np.float32),
        rng.normal(size=(16, 3)).astype(np.float32), np.zeros(3, np.float32)]


def train(strategy, make_opt):
    with strategy.scope():
        m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3)])
        m.set_weights(init)
        m.compile(make_opt(), loss="mse")
    m.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return m.get_weights()


def ref():
    return ReferenceSGD(0.05, momentum=0.9, l2=1e-2, clip_global_norm=0.5)


def kopt():
    return keras.optimizers.SGD(0.05, momentum=0.9, global_clipnorm=0.5)


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
one = tf.distribute.OneDeviceStrategy("/cpu:0")
a, b = train(mirrored, ref), train(one, ref)
ka, kb = train(mirrored, kopt), train(one, kopt)
# the clip binds: the first full-batch gradient norm is far above 0.5
with tf.GradientTape() as tape:
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(3)])
    m.set_weights(init)
    loss = tf.reduce_mean(tf.square(m(x[:16]) - y[:16]))
norm = float(tf.linalg.global_norm(tape.gradient(loss, m.trainable_weights)))
print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "clipped": norm > 0.5,
                  "diff": max(float(np.abs(u - v).max()) for u, v in zip(a, b)),
                  "keras_diff": max(float(np.abs(u - v).max()) for u, v in zip(ka, kb))}))
