"""The app factory: one Flask app serving Stripe's API, the hosted pages and the control API.

The API lives in ``api/`` (one module per resource) over the shared request
handling in ``plumbing.py``; hosted pages in ``pages.py``; the test control
API in ``control.py``; the instance itself in ``emulator.py``.
"""

from __future__ import annotations

from typing import Optional

from flask import Flask, request

from . import api, control, declared, pages
from .emulator import Emulator
from .plumbing import unrecognized_url


def create_app(emulator: Optional[Emulator] = None, **kwargs) -> Flask:
    """Build the Flask app serving ``emulator`` (or a new ``Emulator(**kwargs)``)."""
    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["stripe_emulator"] = emulator or Emulator(**kwargs)
    declared.operations()  # read the library's declarations now rather than during the first request
    api.register(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(control.bp)

    @app.errorhandler(404)
    def not_found(_exc):
        if request.path.startswith("/v1/"):
            return unrecognized_url()
        return pages.not_found_page()

    @app.errorhandler(405)
    def not_allowed(_exc):
        return unrecognized_url()

    return app


__all__ = ["Emulator", "create_app"]
