"""The migrations build exactly the models' schema, and go down and up again, on both backends."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.models import Base


@pytest.mark.parametrize("backend_name", ["postgresql", "sqlite"])
def test_upgrade_downgrade_upgrade_leaves_no_autogenerate_difference(
    backend_name: str, create_database: Callable[[str], str], alembic_cfg: Callable[[str], Config]
) -> None:
    url = create_database(backend_name)
    cfg = alembic_cfg(url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = create_engine(url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []
