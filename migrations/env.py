"""Alembic environment for both ways of migrating.

- `flask db upgrade` / `flask db downgrade`: Flask-Migrate runs this inside the app it built (current_app exists).
- `alembic upgrade head` / `alembic downgrade -1` from the repository root (alembic.ini there): no app exists yet,
  so this builds one with `create_app()` — the same settings as every other entry point (environment, `.env`,
  production validation) — and migrates inside its context. A database it cannot reach is one line on stderr and
  exit status 1, as `flask db upgrade` says it (`one_line_or_exit`), never the URL's password.

Either way the database URL, the metadata and Flask-Migrate's configure arguments come from the app.
"""

import logging
from logging.config import fileConfig

from alembic import context
from flask import Flask, current_app, has_app_context

from app import create_app
from app.cli import one_line_or_exit

config = context.config
logger = logging.getLogger("alembic.env")


def configure_logging():
    """The ini file's loggers, keeping the app's own loggers alive (tests, `flask db upgrade`)."""
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)


def engine_url(app: Flask) -> str:
    """The app's database URL, password included, escaped for the ini-style config."""
    url = app.extensions["migrate"].db.engine.url
    return url.render_as_string(hide_password=False).replace("%", "%%")


def target_metadata(app: Flask):
    """The models' metadata, which autogenerate compares with the database."""
    target_db = app.extensions["migrate"].db
    if hasattr(target_db, "metadatas"):
        return target_db.metadatas[None]
    return target_db.metadata


def run_migrations_offline(app: Flask):
    """`--sql`: emit the SQL for the configured URL without connecting."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata(app), literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online(app: Flask):
    """Migrate over a connection of the app's engine, with Flask-Migrate's configure arguments."""

    def process_revision_directives(context, revision, directives):
        # An autogenerate that finds no change writes no empty revision file.
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")

    migrate = app.extensions["migrate"]
    conf_args = dict(migrate.configure_args)
    if conf_args.get("process_revision_directives") is None:
        conf_args["process_revision_directives"] = process_revision_directives

    with migrate.db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata(app), **conf_args)
        with context.begin_transaction():
            context.run_migrations()


def run_migrations(app: Flask):
    """Point Alembic at the app's database, then migrate online (or print the SQL with `--sql`)."""
    config.set_main_option("sqlalchemy.url", engine_url(app))
    if context.is_offline_mode():
        run_migrations_offline(app)
    else:
        run_migrations_online(app)


if has_app_context():
    configure_logging()
    run_migrations(current_app._get_current_object())
else:
    standalone_app = create_app()
    configure_logging()
    with standalone_app.app_context():
        # The database out of reach or not answering: the one line `flask db upgrade` prints (its command's
        # `readable_errors` covers the branch above), not SQLAlchemy's traceback.
        with one_line_or_exit():
            try:
                run_migrations(standalone_app)
            finally:
                standalone_app.extensions["migrate"].db.engine.dispose()
