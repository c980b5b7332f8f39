"""The gateway's database thread keeps one connection, replaces it after a failure, closes it."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError, connection

from stations.dbthread import DbThread

pytestmark = pytest.mark.django_db(transaction=True)


def _session_id():
    """The server's id for this thread's connection (the connection object's id on SQLite)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    connection.ensure_connection()
    return id(connection.connection)


def _alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 1


def _terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


async def test_calls_share_one_connection():
    db = DbThread()
    try:
        assert await db.run(_session_id) == await db.run(_session_id)
    finally:
        await db.close()


async def test_a_connection_the_server_dropped_is_replaced_and_close_ends_it():
    if connection.vendor != "postgresql":
        pytest.skip("needs a server that can drop a session (the PostgreSQL pass runs it)")
    db = DbThread()
    first = await db.run(_session_id)
    await database_sync_to_async(_terminate)(first)
    with pytest.raises(OperationalError):
        await db.run(_session_id)  # the call that finds it gone fails: its caller retries
    second = await db.run(_session_id)
    assert second != first
    await db.close()
    for _ in range(100):  # the server ends a session a moment after its client hangs up
        if not await database_sync_to_async(_alive)(second):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the thread's session outlived close()")


async def test_close_twice_is_harmless():
    db = DbThread()
    await db.run(_session_id)
    await db.close()
    await db.close()  # a test that shut its gateway down, then get_gateway() replacing it
