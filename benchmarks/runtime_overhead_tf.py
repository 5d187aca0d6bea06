"""Overhead of the runtime trap on TensorFlow / Keras 3 training steps.

Prints, from ONE run, time per step and the ratio to plain TensorFlow for:
plain, stabcheck default (`stabcheck run` / `stabcheck.trap()`), and
`tf.debugging.enable_check_numerics()`, under `model.fit` and under a
`tf.function` custom loop (GradientTape + optimizer.apply_gradients), on a
small and a larger model (4 x Dense + LayerNormalization + GELU). Variants are
interleaved round by round, in short blocks (other work on the machine then
slows all variants alike); every variant traces its step function afresh and
warms up inside its own context before it is timed. A step's time under `fit`
is the interval between consecutive `on_train_batch_end` calls (so the fixed
cost of a `fit` call, ~0.1 s for data adapters and callbacks, is not counted;
like the default progress bar, a batch callback reads the logs every batch);
in the custom loop, the time of one call with its loss read back. Each figure
is the median over all timed steps of all rounds.

    python benchmarks/runtime_overhead_tf.py [--rounds 10] [--quick]

Target (issue #6): stabcheck default at most 1.2x under model.fit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import stabcheck  # noqa: E402

TARGETS = {("small", "fit", "stabcheck"): 1.20, ("larger", "fit", "stabcheck"): 1.20}

MODELS = {  # name: (input width, hidden width, batch, timed steps)
    "small": (32, 64, 16, 60),
    "larger": (512, 1024, 256, 12),
}


def build(width_in, width):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((width_in,))]
    for _ in range(4):
        layers += [keras.layers.Dense(width), keras.layers.LayerNormalization(), keras.layers.Activation("gelu")]
    layers.append(keras.layers.Dense(10))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@contextlib.contextmanager
def check_numerics():
    tf.debugging.enable_check_numerics()
    try:
        yield
    finally:
        tf.debugging.disable_check_numerics()


VARIANTS = {
    "plain": contextlib.nullcontext,
    "stabcheck": lambda: stabcheck.trap(quiet=True),
    "check_numerics": check_numerics,
}


class Case:
    def __init__(self, name, run):
        width_in, width, batch, steps = MODELS[name]
        self.name, self.run, self.batch, self.steps = name, run, batch, steps
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(batch * steps, width_in)).astype("float32")
        self.y = rng.integers(0, 10, size=(batch * steps,)).astype("int32")
        self.model = build(width_in, width)
        if run == "tf.function loop":
            model, opt = self.model, self.model.optimizer
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            def train_step(x, y):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            self.py_step = train_step
            self.batches = [(tf.constant(self.x[i * batch:(i + 1) * batch]),
                             tf.constant(self.y[i * batch:(i + 1) * batch])) for i in range(steps)]

    def block(self, steps, callbacks=()):
        if self.run == "model.fit":
            n = steps * self.batch
            self.model.fit(self.x[:n], self.y[:n], batch_size=self.batch, epochs=1, shuffle=False, verbose=0,
                           callbacks=list(callbacks))
        else:
            loss = None
            for x, y in self.batches[:steps]:
                loss = self.train_step(x, y)
            float(loss)  # wait for the last step

    def fresh(self) -> None:
        """New traces for the variant about to run: a trace made under enable_check_numerics keeps its
        checks after disable_check_numerics(), and would slow down whatever runs next."""
        if self.run == "model.fit":
            self.model.train_function = None
        else:
            self.train_step = tf.function(self.py_step)

    def measure(self, variant) -> list:
        with VARIANTS[variant]():
            self.fresh()
            self.block(3)  # warm-up: traces (or retraces) under this variant
            if self.run == "model.fit":
                timer = StepTimer()
                self.block(self.steps, [timer])
                return timer.samples_ms()
            times = []
            for x, y in self.batches[:self.steps]:
                start = time.perf_counter()
                float(self.train_step(x, y))
                times.append((time.perf_counter() - start) * 1e3)
            return times


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.stamps = []

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())

    def samples_ms(self) -> list:
        return list(np.diff(self.stamps[1:]) * 1e3)  # the first batch of a fit call pays the iterator's start-up


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one round, fewer steps (smoke test)")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    if args.quick:
        for key, (w_in, w, batch, steps) in MODELS.items():
            MODELS[key] = (w_in, w, batch, max(6, steps // 4))
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} CPU threads, "
          f"{rounds} interleaved rounds, median ms/step over all rounds")
    cases = [Case(name, run) for run in ("model.fit", "tf.function loop") for name in MODELS]
    samples: dict = {}
    for _ in range(rounds):
        for case in cases:
            for variant in VARIANTS:
                samples.setdefault((case.name, case.run, variant), []).extend(case.measure(variant))
    best = {key: float(np.median(values)) for key, values in samples.items()}
    header = f"{'model':<8} {'run':<17} {'variant':<15} {'ms/step':>8} {'x plain':>8}  target"
    print(header)
    print("-" * len(header))
    ok = True
    for case in cases:
        plain = best[(case.name, case.run, "plain")]
        for variant in VARIANTS:
            ms = best[(case.name, case.run, variant)]
            ratio = ms / plain
            target = TARGETS.get((case.name, "fit" if case.run == "model.fit" else "loop", variant))
            mark = ""
            if target is not None:
                good = ratio <= target
                ok &= good
                mark = f"<= {target:.2f}x  {'ok' if good else 'MISSED'}"
            print(f"{case.name:<8} {case.run:<17} {variant:<15} {ms:8.3f} {ratio:7.2f}x  {mark}".rstrip())
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
