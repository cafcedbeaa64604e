"""Typed errors of hubproxy's operations (admin, cache, identity, policy, repositories).

Operations raise these; one place per front end maps them: the admin API to HTTP statuses, the
command line to one line on stderr and an exit code, the Hub routes to Hub-style errors.
"""

from __future__ import annotations


class OperationError(Exception):
    """An operation cannot be done as asked; the message says why, for the person who asked."""

    status = 400
    #: Exit code of a command that fails with this error.
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(OperationError):
    """The input is malformed or breaks a rule (a bad name, a bad pattern, a bad value)."""

    status = 400


class Forbidden(OperationError):
    """The caller may not do this (not an admin, not a maintainer, a read-only token)."""

    status = 403


class NotFound(OperationError):
    """What the operation names does not exist."""

    status = 404


class Conflict(OperationError):
    """The operation clashes with what exists (a duplicate name, the last admin)."""

    status = 409
