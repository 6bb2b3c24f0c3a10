"""Errors a user can cause. The CLI turns any of these into one line on stderr and exit 2."""


class UserError(ValueError):
    """Bad input from the user: a malformed spec, a bad flag value, a missing file.

    The message must fit on one line and name the bad value.
    """


class SpecError(UserError):
    """An architecture spec that cannot describe a network."""
