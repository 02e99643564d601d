"""The advisory locks sidecars and applications take on the checkpoint database.

Each lock is a pair of keys: a fixed one per purpose (arbitrary, spelling the purpose
in ASCII) and ``hashtext(schema)``, so that stores in different schemas of one database
never wait for each other. Every statement takes the two as parameters, in that order.
"""

from __future__ import annotations

from typing import Final

# Serialises `setup()` across replicas starting at once: LangGraph's migrations
# are not safe to run concurrently. Waiters poll with the try- form: a session
# blocked inside pg_advisory_lock() would hold a snapshot that the migrations'
# CREATE INDEX CONCURRENTLY waits for (deadlock).
SETUP_LOCK_KEY: Final = 0x6C67_6370  # "lgcp"
TRY_SETUP_LOCK: Final = "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS acquired"
RELEASE_SETUP_LOCK: Final = "SELECT pg_advisory_unlock(%s, hashtext(%s))"

# Leader election among sidecars watching one database and schema: the leader
# holds this session-level advisory lock on a connection of its own, and
# PostgreSQL releases it the moment that session ends. The same round trip
# reads the server's version, so the check doubles as the ping.
LEADER_LOCK_KEY: Final = 0x6C67_6C64  # "lgld"
TRY_LEADER_LOCK: Final = (
    "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS acquired,"
    " current_setting('server_version') AS version"
)
# A stopping leader hands over at once rather than when its backend exits.
RELEASE_LEADER_LOCK: Final = "SELECT pg_advisory_unlock(%s, hashtext(%s))"

# Held for one canary probe: sidecars probing at once (a leader handing over, or
# election off) would see each other's canary half-pruned.
CANARY_LOCK_KEY: Final = 0x6C67_6361  # "lgca"
LOCK_CANARY: Final = "SELECT pg_advisory_lock(%s, hashtext(%s))"
UNLOCK_CANARY: Final = "SELECT pg_advisory_unlock(%s, hashtext(%s))"
