"""The errors a user can cause: bad config or arguments, unreadable or mismatched files, a run that
diverged. The CLI reports exactly these as one line and exit status 2; anything else is a bug and
keeps its traceback. Torch-free: the Snakefile and the CLI import it before any stage runs."""

from __future__ import annotations


class UserError(Exception):
    """Base of every error the user can fix (their input, their files, their hyperparameters)."""


class InputError(UserError, ValueError):
    """A bad value: a config key, an argument, a shape that does not fit."""


class ConfigError(InputError):
    """A config value the schema cannot catch; the message names the key."""


class UnknownArchitecture(InputError):
    """An architecture name the registry does not know."""


class ArtifactError(UserError, RuntimeError):
    """An input file that is missing, unreadable or inconsistent; the message names the file."""


class DataSourceError(UserError, RuntimeError):
    """A raw dataset that cannot be read from its root."""


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or Inf; no result is written for that run."""


class NonFiniteResult(UserError, FloatingPointError):
    """A stage produced non-finite values (e.g. synthetic images); nothing was written."""
