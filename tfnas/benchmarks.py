"""NAS-Bench-201 look-ups behind one adapter: a CSV table or the official benchmark file.

CSV format (one row per architecture; `../shared/data/nb201/nb201_12epoch.csv` is one):

    index,arch_str,cifar10_valid_12ep,cifar10_test_12ep,cifar100_valid_12ep,...
    0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|...|,63.364,69.55,...

`index` and `arch_str` are required; every other column is a metric (accuracy in %). A
metric's dataset is its name's first token: `cifar10`, `cifar100` or `imagenet16`.

Official files (`NAS-Bench-201-v1_*.pth`, or a NATS-Bench `tss` folder) are read with their own
Python API (`nas_201_api` or `nats_bench`) when it is installed; we never parse its text.
"""

import csv
import os

from tfnas.errors import UsageError

DATASETS = ("cifar10", "cifar100", "imagenet16")


class BenchmarkError(UsageError):
    """A benchmark file that cannot be used, or an architecture it does not hold."""


def canonical_arch_str(arch_str):
    """The NB201 string with op names validated, as the benchmarks spell it."""
    from tfnas.genotype import Genotype
    try:
        return Genotype.from_nb201_string(arch_str.strip()).to_nb201_string()
    except UsageError as e:
        raise BenchmarkError(str(e)) from None


class CsvTable:
    """A NAS-Bench-201 table as CSV (see the module docstring)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                missing = {"index", "arch_str"} - set(fields)
                if missing:
                    raise BenchmarkError(f"benchmark table {path}: missing column(s) "
                                         f"{sorted(missing)}; expected index,arch_str,<metrics>")
                self.metrics = [c for c in fields if c not in ("index", "arch_str")]
                self.rows = {}
                for n, row in enumerate(reader, start=2):
                    try:
                        values = {m: float(row[m]) for m in self.metrics if row[m] != ""}
                        self.rows[row["arch_str"].strip()] = (int(row["index"]), values)
                    except (TypeError, ValueError) as e:
                        raise BenchmarkError(f"benchmark table {path} line {n}: {e}") from None
        except OSError as e:
            raise BenchmarkError(f"benchmark table {path}: {e.strerror}") from None
        if not self.rows:
            raise BenchmarkError(f"benchmark table {path} has no rows")

    def query(self, arch_str):
        """{"index": int, metric: value, ...} of one architecture."""
        key = canonical_arch_str(arch_str)
        if key not in self.rows:
            raise BenchmarkError(f"architecture {key} is not in {self.path} "
                                 f"({len(self.rows)} rows)")
        index, values = self.rows[key]
        return {"index": index, **values}


class OfficialApi:
    """The official NAS-Bench-201 / NATS-Bench file through its own package."""

    QUERIES = (("cifar10", "cifar10-valid", "valid"), ("cifar10", "cifar10", "test"),
               ("cifar100", "cifar100", "valid"), ("cifar100", "cifar100", "test"),
               ("imagenet16", "ImageNet16-120", "valid"), ("imagenet16", "ImageNet16-120",
                                                           "test"))

    def __init__(self, path):
        self.path = path
        try:
            from nas_201_api import NASBench201API
            self.api = NASBench201API(path, verbose=False)
        except ImportError:
            try:
                from nats_bench import create
            except ImportError:
                raise BenchmarkError(
                    f"{path} is not a CSV table, and reading an official NAS-Bench-201 file "
                    f"needs its package: pip install nas-bench-201 (or nats_bench)") from None
            self.api = create(path, "tss", fast_mode=True, verbose=False)

    def query(self, arch_str):
        key = canonical_arch_str(arch_str)
        index = self.api.query_index_by_arch(key)
        if index is None or index < 0:
            raise BenchmarkError(f"architecture {key} is not in {self.path}")
        out = {"index": int(index)}
        for name, dataset, split in self.QUERIES:
            info = self.api.get_more_info(index, dataset, hp="200", is_random=False)
            value = info.get(f"{split}-accuracy")
            if value is not None:
                out[f"{name}_{split}"] = float(value)
        return out


class Benchmark:
    """Queries NB201 genotypes against `source` (CSV table or official file)."""

    def __init__(self, path):
        if not os.path.exists(path):
            raise BenchmarkError(f"benchmark file {path} does not exist")
        self.source = CsvTable(path) if path.endswith(".csv") else OfficialApi(path)

    def query(self, arch_str):
        return self.source.query(arch_str)

    def query_genotype(self, genotype, prefix=""):
        """Metrics of an NB201 genotype, keys prefixed (e.g. "bench_")."""
        row = self.query(genotype.to_nb201_string())
        return {prefix + k: v for k, v in row.items()}


def open_benchmark(path, space=None):
    """A Benchmark for `path`; `space` (when given) must be NB201-shaped."""
    if space is not None and space.family != "nb201":
        raise BenchmarkError(f"--benchmark_table needs an nb201-family space, not "
                             f"{space.name!r}")
    return Benchmark(path)


def format_result(arch_str, row):
    """A small text table: one line per dataset, one column per split."""
    lines = [f"architecture {canonical_arch_str(arch_str)}", f"index {row['index']}"]
    metrics = [k for k in row if k != "index"]
    for ds in DATASETS:
        cols = [k for k in metrics if k.split("_")[0] == ds]
        if cols:
            lines.append(f"{ds:<11} " + "  ".join(f"{k[len(ds) + 1:]} {row[k]:.2f}"
                                                  for k in cols))
    return "\n".join(lines)
