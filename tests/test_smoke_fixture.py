"""The database fixtures give each test a real, separate PostgreSQL database."""

import psycopg


def test_each_test_gets_its_own_database(dsn: str, admin_dsn: str) -> None:
    """The per-test database is reachable and is not the administrative one."""
    with psycopg.connect(dsn) as conn, psycopg.connect(admin_dsn) as admin:
        mine = conn.execute("SELECT current_database()").fetchone()
        theirs = admin.execute("SELECT current_database()").fetchone()
    assert mine is not None
    assert theirs is not None
    assert mine[0].startswith("test_")
    assert mine[0] != theirs[0]
