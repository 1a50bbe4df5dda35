"""Entry point for gunicorn (`gunicorn wsgi:app`) and the `flask` command (see .flaskenv)."""

from app import create_app

app = create_app()
