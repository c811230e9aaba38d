"""Alembic environment: the URL comes from Accord's settings unless the caller set one."""

from __future__ import annotations

from alembic import context

from services.db import Base, make_engine
from services.settings import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().sqlalchemy_url

engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()  # leave no pooled connection behind
