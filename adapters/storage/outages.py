"""What "the database is unreachable" looks like from asyncpg, said once for the storage layer.

The projection runner must tell an outage (retry later: nothing is wrong with the events) from a
projection that cannot apply an event (a data problem: stop there and say which event), and the
background loops restart after an outage. adapters/http/problems.py keeps a list of its own for
mapping a request's outage to 503 (it should import this one).
"""

from __future__ import annotations

import asyncpg

# Refused, closed pool, connection lost mid-query, admin shutdown (pg_terminate_backend, a
# restart), cannot connect now, too many connections: the open transaction rolled back and the
# same work may simply be done again once the server answers.
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    OSError,  # also TimeoutError, ConnectionRefusedError and ConnectionResetError
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    # A connection the server terminated mid-query can be used in the moment between the FATAL
    # message and the socket's end, and asyncpg then refuses with "cannot switch to state N;
    # another operation (2) is in progress" (MagicStack/asyncpg#1069): the connection is dead.
    asyncpg.InternalClientError,
)


class ListenerLost(ConnectionError):
    """The connection a loop listened on closed under it (the server restarted or terminated
    the session): the loop must start again on a new one or it would never be woken again."""
