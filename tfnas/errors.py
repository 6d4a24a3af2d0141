"""The exception hierarchy of tfnas.

Library code raises these; the CLI turns them into one readable line on stderr and a
non-zero exit code (2 for usage errors, 1 for runtime errors).
"""


class TfnasError(Exception):
    """Base class of every error tfnas raises on purpose."""

    exit_code = 1


class UsageError(TfnasError, ValueError):
    """A bad argument, flag or configuration value given by the user."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value is out of range or inconsistent."""


class RegistryError(UsageError, KeyError):
    """An unknown or duplicate name in a registry."""

    def __str__(self):  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class SpaceError(UsageError):
    """A malformed search-space definition."""


class GenotypeError(UsageError):
    """A malformed or inconsistent genotype."""


class DataError(TfnasError):
    """A dataset that cannot be found, read or prepared."""


class CheckpointError(TfnasError):
    """A checkpoint or run directory that cannot be read or is inconsistent."""


class WorkdirError(UsageError):
    """A run directory that conflicts with the requested run."""


class TrainingError(TfnasError):
    """Training diverged (NaN/inf loss) or otherwise cannot continue."""
