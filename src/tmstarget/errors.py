"""Exceptions with messages a user can act on.

``InputError`` is for problems the user can fix (a file, a header, a config key): its message names
the file and the fix. The CLI prints it without a traceback and exits with status 2.
``QCFailure`` is for data that is readable but too poor to give a trustworthy target (e.g. too
little data left after censoring); the CLI exits with status 3.
"""


class TmsTargetError(Exception):
    """Base class of tmstarget's own errors."""

    exit_code = 1


class InputError(TmsTargetError, ValueError):
    """A problem with an input file or setting that the user can fix."""

    exit_code = 2


class QCFailure(TmsTargetError):
    """The data were read but fail a quality threshold (the message says which and how to proceed)."""

    exit_code = 3
