"""Exceptions raised by the toolkit.

Every message is one line that names the value at fault and the fix, so a
task can print it as it is and exit non-zero.
"""


class OpsError(Exception):
    """An operation failed; the message says what failed and what to do next."""


class ConfigError(OpsError):
    """A configuration value or secret is missing or invalid."""


class RemoteError(OpsError):
    """A command or file transfer on a server failed."""


class VerificationError(OpsError):
    """A change was made but the service did not come back as expected."""


class LockHeldError(OpsError):
    """Another operator holds the change lock on a server."""
