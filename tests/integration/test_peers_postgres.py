"""Smoke test: the PostgreSQL peer is a real server that SQLAlchemy (psycopg 3) can use."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.peers.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def test_postgres_round_trips_a_table_through_sqlalchemy(postgres: PostgresServer) -> None:
    url = postgres.create_database(f"smoke_{uuid.uuid4().hex[:8]}")
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    ticks = sa.Table(
        "ticks",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("symbol", sa.String(16), nullable=False),
        sa.Column("price", sa.Numeric(12, 4), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                ticks.insert(),
                [{"symbol": "AAPL", "price": "187.1250"}, {"symbol": "MSFT", "price": "402.5"}],
            )
        with engine.connect() as conn:
            assert (
                conn.execute(
                    sa.text("select current_setting('server_version_num')::int")
                ).scalar_one()
                >= 120000
            )
            rows = conn.execute(sa.select(ticks.c.symbol, ticks.c.price).order_by(ticks.c.id)).all()
            stamped = conn.execute(
                sa.select(sa.func.count()).where(ticks.c.at.is_not(None))
            ).scalar_one()
        assert [(s, str(p)) for s, p in rows] == [("AAPL", "187.1250"), ("MSFT", "402.5000")]
        assert stamped == 2
        # A constraint violation is PostgreSQL's error surfaced through SQLAlchemy, not silently accepted.
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(ticks.insert(), [{"symbol": None, "price": "1"}])
    finally:
        engine.dispose()


def test_postgres_refuses_a_wrong_password(postgres: PostgresServer) -> None:
    engine = sa.create_engine(postgres.url.replace(postgres.password, "not-the-password"))
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()
