"""Exceptions the host raises; each carries a one-line, user-facing message."""


class UntiedError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero, no traceback."""


class PluginError(UntiedError):
    """A plugin could not be loaded, or broke a rule of the plugin host (clash, unknown hook)."""


class SpecError(UntiedError):
    """A leaderboard or run spec is malformed: the message names the field path and value."""


class DataError(UntiedError):
    """A dataset could not be found or read."""


class Diverged(UntiedError):
    """A run produced a non-finite loss or metric; it is recorded with status ``diverged``."""
