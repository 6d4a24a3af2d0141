"""Typed, validated configs. Flags are parsed into these; library code never reads flags.

Each field's `metadata["help"]` is the flag's help text: the CLI derives its flags from the
dataclass, so a hyperparameter is declared exactly once.
"""

import dataclasses
import json
import math

from tfnas.errors import ConfigError
from tfnas.precision import POLICIES as PRECISIONS


def _f(default, help, choices=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def _need(cfg, cond, name, expected):
    """Raises ConfigError naming the flag, its value and what is expected."""
    if not cond:
        raise ConfigError(f"--{name}={getattr(cfg, name)!r} is invalid: expected {expected}")


SEED_LIMIT = 2 ** 32  # numpy's and Keras's seeds: 0 .. 2**32 - 1
INT_LIMIT = 2 ** 63


def check_seed(value, flag="--seed", allow=()):
    """The one seed rule of every command: an integer in 0 .. 2**32-1 (or one of `allow`,
    e.g. -1 for 'the search's seed')."""
    if value in allow:
        return
    if not isinstance(value, int) or isinstance(value, bool) or \
            not 0 <= value < SEED_LIMIT:
        extra = "".join(f" or {a}" for a in allow)
        raise ConfigError(f"{flag}={value!r} is invalid: expected an integer in 0..{SEED_LIMIT - 1}"
                          f"{extra}")


def check_numbers(cfg, seed_allow=()):
    """Range checks every config shares: integers within 64 bits, floats finite, seeds as
    `check_seed`. Each field-specific rule (`validate`) comes after these."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.name == "seed":
            check_seed(v, allow=seed_allow)
        elif isinstance(f.default, bool):
            continue
        elif isinstance(f.default, int):
            _need(cfg, isinstance(v, int) and -INT_LIMIT < v < INT_LIMIT, f.name,
                  "an integer within 64 bits")
        elif isinstance(f.default, float):
            _need(cfg, isinstance(v, (int, float)) and math.isfinite(v), f.name,
                  "a finite number")


def _check_choices_and_dataset(cfg):
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        if choices:
            _need(cfg, getattr(cfg, f.name) in choices, f.name, "one of " + ", ".join(choices))
    from tfnas.data import DATASETS, dataset_kind
    tails = {"folder": ":PATH", "npz": ":PATH", "tfds": ":NAME"}
    _need(cfg, dataset_kind(cfg.dataset) in DATASETS, "dataset", "one of " + ", ".join(
        n + tails.get(n, "") for n in DATASETS.names()))


@dataclasses.dataclass
class SearchConfig:
    """Hyperparameters of a supernet search (REFERENCE 3 defaults)."""

    # data
    dataset: str = _f("digits", "digits | cifar10 | cifar100 | svhn | folder:PATH | npz:PATH")
    data_dir: str = _f("", "tensorflow-datasets data_dir (default: tfds's own)")
    download: bool = _f(False, "let tensorflow-datasets download the data (needs internet)")
    train_portion: float = _f(0.5, "share of the training set used for weights; the rest "
                                    "trains alpha")
    limit_examples: int = _f(0, "use only the first N training examples (0: all); for smoke "
                                "runs")
    skip_bad_images: bool = _f(False, "folder datasets: skip undecodable images with a "
                                      "warning and a count instead of failing")
    cutout: bool = _f(False, "cutout augmentation (probability ramped up over the epochs)")
    cutout_length: int = _f(16, "cutout square side in pixels")
    cutout_prob: float = _f(1.0, "final cutout probability")
    # model
    space: str = _f("darts", "search space name or path to a space JSON")
    channels: int = _f(16, "initial channels C")
    layers: int = _f(8, "cells (DARTS family) or cells per stage (NB201)")
    skip_zero_ops: bool = _f(False, "skip ops whose mixing weight is exactly zero (tf.cond per "
                                    "op: pays off once edges are decided; selection's scoring "
                                    "graph does it anyway)")
    bn: str = _f("global", "BN statistics under several replicas, for search, selection and "
                           "analysis alike (kept by the run): global (over the global batch: "
                           "what one device computes) | replica (each replica's own share)",
                 ("global", "replica"))
    recompute: bool = _f(False, "recompute each edge's activations in the backward pass "
                                "instead of keeping them: about half the memory of a step, "
                                "~25% slower steps (no effect with --bn=global on several "
                                "replicas); a resume may switch it")
    mixed_op: str = _f("standard", "the registered edge layer of the supernet (standard: the "
                                   "DARTS weighted sum; extensions add others)")
    # optimisation
    epochs: int = _f(50, "search epochs")
    batch_size: int = _f(64, "global batch size (train and alpha batches)")
    lr: float = _f(0.025, "weight learning rate (cosine schedule start)")
    lr_min: float = _f(0.001, "cosine schedule end")
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(3e-4, "coupled L2 on the weights, as PyTorch's SGD")
    grad_clip: float = _f(5.0, "global-norm clip of the weight gradients (0: off)")
    arch_update: str = _f("first_order", "a registered architecture update: first_order | "
                                         "second_order | frozen | sgas (first order plus SGAS's "
                                         "progressive edge decisions)")
    arch_lr: float = _f(3e-4, "Adam learning rate of alpha")
    arch_beta1: float = _f(0.5, "Adam beta_1 of alpha")
    arch_beta2: float = _f(0.999, "Adam beta_2 of alpha")
    arch_weight_decay: float = _f(1e-3, "coupled L2 on alpha, as PyTorch's Adam")
    perturbation: str = _f("none", "a registered alpha perturbation during the weight step: "
                                   "none | random (SDARTS-RS) | adversarial (SDARTS-ADV)")
    epsilon: float = _f(0.3, "SDARTS: final perturbation radius (grows from 0.03; constant "
                             "during PT tuning)")
    sgas_criterion: int = _f(1, "SGAS edge criterion 1 (importance x certainty) or 2 (x "
                                "stability)")
    sgas_warmup: int = _f(9, "SGAS: epochs before the first edge decision")
    sgas_freq: int = _f(5, "SGAS: epochs between edge decisions")
    sgas_op: str = _f("magnitude", "SGAS: op of a chosen edge by alpha (SGAS) or by the PT "
                                   "criterion (SGAS+PT)", ("magnitude", "pt"))
    sgas_pt_batches: int = _f(0, "SGAS+PT: score on the first N alpha batches (0: all)")
    benchmark_table: str = _f("", "NAS-Bench-201 table (CSV) or official benchmark file: log "
                                  "the queried accuracy of the magnitude genotype each epoch")
    # run
    seed: int = _f(2, "seed of weights, alpha init and data order")
    steps_per_epoch: int = _f(0, "cap on steps per epoch (0: a full pass over the weight split)")
    eval_every: int = _f(1, "evaluate on the alpha split every N epochs")
    ckpt_every: int = _f(1, "checkpoint every N epochs")
    ckpt_every_steps: int = _f(0, "also save the state every N steps inside an epoch "
                                  "(partial.npz: a preempted run resumes there, on the same "
                                  "batches; 0: only at epoch ends and on SIGTERM)")
    keep_checkpoints: int = _f(2, "checkpoints kept on disk")
    jit_compile: bool = _f(False, "XLA-compile the step (slower on CPU; try on GPU)")
    mixed_precision: str = _f("float32", "float32, mixed_bfloat16 or mixed_float16: ops in 16 "
                                         "bits with float32 variables, alphas, BN statistics "
                                         "and loss (bfloat16: A100/H100; float16: V100/T4, "
                                         "with dynamic loss scaling)", PRECISIONS)
    steps_per_execution: int = _f(1, "search steps per tf.function call: the host reads the "
                                     "losses once per call, so GPUs are not stalled by a "
                                     "sync per step; a non-finite loss still stops at its "
                                     "own step. Results do not depend on it")

    def validate(self):
        """Raises ConfigError naming the field, the value and what is expected."""
        def need(cond, name, expected):
            _need(self, cond, name, expected)
        check_numbers(self)
        for name in ("epochs", "batch_size", "channels", "layers", "eval_every", "ckpt_every",
                     "keep_checkpoints", "cutout_length", "steps_per_execution"):
            need(getattr(self, name) > 0, name, "a positive integer")
        for name in ("limit_examples", "steps_per_epoch", "ckpt_every_steps"):
            need(getattr(self, name) >= 0, name, "0 or a positive integer")
        need(0.0 < self.train_portion < 1.0, "train_portion", "a number in (0, 1)")
        for name in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip", "arch_lr",
                     "arch_weight_decay"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, name,
                 "a non-negative number")
        need(self.lr_min <= self.lr, "lr_min", f"at most --lr={self.lr}")
        for name in ("arch_beta1", "arch_beta2", "cutout_prob"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "a number in [0, 1]")
        need(self.momentum < 1.0, "momentum", "a number in [0, 1)")
        need(self.epsilon > 0, "epsilon", "a positive number")
        need(self.sgas_criterion in (1, 2), "sgas_criterion", "1 or 2")
        need(self.sgas_warmup >= 0, "sgas_warmup", "0 or a positive integer")
        need(self.sgas_freq > 0, "sgas_freq", "a positive integer")
        need(self.sgas_pt_batches >= 0, "sgas_pt_batches", "0 or a positive integer")
        if self.benchmark_table:
            import os
            need(os.path.exists(self.benchmark_table), "benchmark_table", "an existing file")
        _check_choices_and_dataset(self)
        from tfnas.spaces import get_space
        try:
            get_space(self.space)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"--space={self.space!r} is invalid: {e}") from e
        return self

    def to_json(self):
        return dataclasses.asdict(self)

    @staticmethod
    def migrate(obj):
        """A config.json of an earlier version in today's keys: `sync_bn` (true: global
        statistics; false, the old default: each replica's own) became `bn`."""
        obj = dict(obj)
        if "sync_bn" in obj:
            obj.setdefault("bn", "global" if obj.pop("sync_bn") else "replica")
        return obj

    @classmethod
    def from_json(cls, obj):
        obj = cls.migrate(obj)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}")
        return cls(**obj)

    def dumps(self):
        return json.dumps(self.to_json(), indent=1, sort_keys=True)


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of retraining a genotype from scratch (REFERENCE 5 defaults)."""

    dataset: str = _f("cifar10", "digits | cifar10 | cifar100 | svhn | folder:PATH | npz:PATH")
    data_dir: str = _f("", "tensorflow-datasets data_dir")
    download: bool = _f(False, "let tensorflow-datasets download the data")
    limit_examples: int = _f(0, "use only the first N training examples (0: all)")
    skip_bad_images: bool = _f(False, "folder datasets: skip undecodable images with a "
                                      "warning and a count instead of failing")
    form: str = _f("cifar", "network form", ("cifar", "imagenet", "nb201"))
    channels: int = _f(36, "initial channels C")
    layers: int = _f(20, "cells (cells per stage for nb201)")
    epochs: int = _f(600, "training epochs")
    batch_size: int = _f(96, "global batch size")
    lr: float = _f(0.025, "SGD learning rate")
    lr_schedule: str = _f("cosine", "cosine (to 0) or step (x0.97 per epoch, ImageNet)",
                          ("cosine", "step"))
    momentum: float = _f(0.9, "SGD momentum")
    weight_decay: float = _f(3e-4, "coupled L2 weight decay, added to the gradient after "
                                       "the global clip (PyTorch SGD's weight_decay)")
    grad_clip: float = _f(5.0, "global-norm gradient clip (0: off)")
    cutout: bool = _f(True, "cutout augmentation (cifar form; the imagenet form uses "
                           "RandomResizedCrop, flip and ColorJitter)")
    cutout_length: int = _f(16, "cutout square side")
    auxiliary: bool = _f(True, "auxiliary head after cell 2*layers//3")
    auxiliary_weight: float = _f(0.4, "weight of the auxiliary loss")
    drop_path: float = _f(0.2, "final drop-path rate (ramped linearly over the epochs)")
    label_smoothing: float = _f(0.0, "label smoothing (0.1 for ImageNet)")
    seed: int = _f(2, "seed of weights and data order")
    validation_split: float = _f(0.0, "hold out this fraction of the training set (drawn by "
                                      "--seed) to choose best.keras by its accuracy; 0: no "
                                      "best.keras (the test split never chooses a model)")
    mixed_precision: str = _f("float32", "float32, mixed_bfloat16 or mixed_float16: ops in 16 "
                                         "bits with float32 variables, BN statistics and loss "
                                         "(float16 with dynamic loss scaling)", PRECISIONS)
    steps_per_execution: int = _f(1, "training steps per tf.function call (fewer host "
                                     "round trips); results do not depend on it")

    def validate(self):
        def need(cond, name, expected):
            _need(self, cond, name, expected)
        check_numbers(self)
        for name in ("epochs", "batch_size", "channels", "layers", "cutout_length",
                     "steps_per_execution"):
            need(getattr(self, name) > 0, name, "a positive integer")
        need(self.limit_examples >= 0, "limit_examples", "0 or a positive integer")
        for name in ("lr", "momentum", "weight_decay", "grad_clip", "auxiliary_weight"):
            need(math.isfinite(getattr(self, name)) and getattr(self, name) >= 0, name,
                 "a non-negative number")
        for name in ("drop_path", "label_smoothing", "validation_split"):
            need(0.0 <= getattr(self, name) < 1.0, name, "a number in [0, 1)")
        _check_choices_and_dataset(self)
        return self

    to_json = SearchConfig.to_json
    dumps = SearchConfig.dumps
