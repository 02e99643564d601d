"""Why the database could not be reached, in a word an operator can act on.

A pool that cannot connect reports only that it timed out waiting; the driver's
own error says why (nothing listens, the password is wrong, every slot is
taken). :func:`cause_of` names that reason from the error itself, so health,
readiness and the outage log say what is wrong rather than how long they waited.
"""

from __future__ import annotations

from typing import Final

import psycopg
from psycopg import errors
from psycopg_pool import PoolTimeout

CONNECTION_REFUSED: Final = "connection_refused"
AUTHENTICATION_FAILED: Final = "authentication_failed"
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
DATABASE_NOT_FOUND: Final = "database_not_found"
SERVER_STARTING_OR_STOPPING: Final = "server_starting_or_stopping"
HOST_NOT_FOUND: Final = "host_not_found"
TIMEOUT: Final = "timeout"
CONNECTION_LOST: Final = "connection_lost"
ERROR: Final = "error"
CAUSES: Final = (
    CONNECTION_REFUSED,
    AUTHENTICATION_FAILED,
    TOO_MANY_CONNECTIONS,
    DATABASE_NOT_FOUND,
    SERVER_STARTING_OR_STOPPING,
    HOST_NOT_FOUND,
    TIMEOUT,
    CONNECTION_LOST,
    ERROR,
)

# SQLSTATE classes and codes the server sends when it refuses a session.
_BY_SQLSTATE: Final = {
    "28000": AUTHENTICATION_FAILED,  # invalid_authorization_specification (no such role)
    "28P01": AUTHENTICATION_FAILED,  # invalid_password
    "53300": TOO_MANY_CONNECTIONS,  # too_many_connections
    "3D000": DATABASE_NOT_FOUND,  # invalid_catalog_name
    "57P03": SERVER_STARTING_OR_STOPPING,  # cannot_connect_now
    "57P01": SERVER_STARTING_OR_STOPPING,  # admin_shutdown
}

# libpq reports a refused session as text only (no SQLSTATE reaches the client):
# the server's FATAL line, or the client's own socket error. Checked in order.
_BY_MESSAGE: Final = (
    ("connection refused", CONNECTION_REFUSED),
    ("no such file or directory", CONNECTION_REFUSED),  # a Unix socket nobody serves
    ("password authentication failed", AUTHENTICATION_FAILED),
    ("authentication failed", AUTHENTICATION_FAILED),
    ("no pg_hba.conf entry", AUTHENTICATION_FAILED),
    ("password is required", AUTHENTICATION_FAILED),
    ("role", AUTHENTICATION_FAILED),  # role "x" does not exist
    ("too many connections", TOO_MANY_CONNECTIONS),
    ("too many clients", TOO_MANY_CONNECTIONS),
    ("connection slots are reserved", TOO_MANY_CONNECTIONS),
    ("database", DATABASE_NOT_FOUND),  # database "x" does not exist
    ("the database system is", SERVER_STARTING_OR_STOPPING),
    ("could not translate host name", HOST_NOT_FOUND),
    ("name or service not known", HOST_NOT_FOUND),
    ("timeout expired", TIMEOUT),
    ("timed out", TIMEOUT),
    ("server closed the connection", CONNECTION_LOST),
    ("connection is closed", CONNECTION_LOST),
    ("consuming input failed", CONNECTION_LOST),
)


def cause_of(exc: BaseException) -> str:
    """One of :data:`CAUSES` for an error met while reaching or asking the database."""
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, TimeoutError | PoolTimeout | errors.QueryCanceled):
        return TIMEOUT
    if isinstance(exc, psycopg.Error):
        known = _BY_SQLSTATE.get(exc.sqlstate or "")
        if known is not None:
            return known
    if isinstance(exc, psycopg.OperationalError | OSError):
        text = str(exc).lower()
        # "does not exist" marks the server's FATAL lines about roles and databases only.
        for needle, cause in _BY_MESSAGE:
            if needle in text and (needle not in {"role", "database"} or "does not exist" in text):
                return cause
        if isinstance(exc, OSError):
            return CONNECTION_LOST
    return ERROR
