"""Error pages: HTML for people, JSON `{"error", "message"}` for everything under API_PREFIX."""

from __future__ import annotations

from flask import Flask, current_app, g, jsonify, render_template
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from app.extensions import db
from app.logging import get_logger, redact_text
from app.ratelimits import describe_wait, seconds_until_allowed
from app.security import FormRefused
from app.services import DomainError, metrics
from app.services.entitlements import UpgradeRequired
from app.urls import is_api_request

log = get_logger(__name__)

#: How much of the driver's message a `database_unavailable` line keeps (its first line, e.g. "connection to server
#: at "db", port 5432 failed: Connection refused").
DATABASE_MESSAGE_MAX = 240

#: What a 404 says to an API client, which asked for an endpoint or a resource rather than a page.
API_NOT_FOUND = "No such API endpoint or resource."


def error_code(exc: HTTPException) -> str:
    """`Not Found` -> `not_found`."""
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def database_error_text(exc: OperationalError | InterfaceError) -> str:
    """`OperationalError (psycopg.OperationalError): connection … failed: Connection refused`: SQLAlchemy's class, the
    driver's and the first line of the driver's message, redacted and cut short (never the SQL or its parameters)."""
    driver = exc.orig if exc.orig is not None else exc
    lines = [" ".join(line.split()) for line in str(driver).splitlines() if line.strip()]
    message = redact_text(lines[0] if lines else "")[:DATABASE_MESSAGE_MAX]
    kind = type(driver)
    return f"{type(exc).__name__} ({kind.__module__}.{kind.__name__}): {message}"


def render_error(status: int, code: str, message: str):
    if is_api_request():
        return jsonify(error=code, message=message), status
    return render_template("errors/error.html", status=status, code=code, message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        if exc.code and exc.code >= 500:
            db.session.rollback()
        messages = {
            404: "We could not find that page.",
            405: "That method is not allowed here.",
            413: "The request is too large.",
            429: "Too many attempts. Please wait a moment and try again.",
        }
        if is_api_request():
            messages[404] = API_NOT_FOUND
        wait = seconds_until_allowed() if exc.code == 429 else None
        if wait is not None:  # a person (and an API client's log) is told how long, as Retry-After tells a program
            messages[429] = f"Too many attempts. Please wait {describe_wait(wait)} and try again."
        message = messages.get(exc.code or 500, exc.description or exc.name)
        body, status = render_error(exc.code or 500, error_code(exc), message)
        response = current_app.make_response((body, status))
        for name in ("Retry-After", "Allow"):  # keep what tells a client when or how to try again
            value = exc.get_response().headers.get(name)
            if value:
                response.headers[name] = value
        if wait is not None:
            response.headers["Retry-After"] = str(wait)
            g.retry_after = wait  # Flask-Limiter's after-request hook rewrites it, rounded down: put back last
        return response

    def keep_told_wait(response):
        """A 429's Retry-After as its page says it: Flask-Limiter's after-request hook sets it again from the same
        reset time, truncated (58 for a page's 59): a client obeying it would be refused once more."""
        if response.status_code == 429:  # (`g` looked up only then: every other answer skips it)
            wait = g.get("retry_after")
            if wait is not None:
                response.headers["Retry-After"] = str(wait)
        return response

    # Flask runs after-request hooks last-registered first: first in the list, this one runs after every other
    # (Flask-Limiter's included, whatever the order the extensions were set up in).
    app.after_request_funcs.setdefault(None, []).insert(0, keep_told_wait)

    @app.errorhandler(CSRFError)
    def handle_csrf_error(exc: CSRFError):
        if isinstance(exc, FormRefused) and exc.description:  # the form's source refused, and why
            return render_error(400, "csrf_failed", exc.description)
        return render_error(400, "csrf_failed", "Your form expired or was not sent from this site. Please try again.")

    @app.errorhandler(DomainError)
    def handle_domain_error(exc: DomainError):
        message = API_NOT_FOUND if exc.status == 404 and is_api_request() else exc.message
        return render_error(exc.status, exc.code, message)

    @app.errorhandler(UpgradeRequired)
    def handle_upgrade_required(exc: UpgradeRequired):
        """A DomainError that also names the feature and the cheapest plan that has it."""
        if is_api_request():
            return jsonify(exc.to_json()), exc.status
        return render_template("entitlements/upgrade_required.html", exc=exc), exc.status

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        # Roll back first: a failed flush must not poison the next request on this connection.
        db.session.rollback()
        if isinstance(exc, (OperationalError, InterfaceError)):  # the database is down or unreachable
            metrics.DATABASE_ERRORS.inc()
            # One short line, not a 4 KB traceback per request: an outage of 20 s wrote 174 of them, all the same
            # cause. Every other error keeps its traceback.
            log.warning("database_unavailable", error=database_error_text(exc))
        else:
            current_app.logger.exception("unhandled_exception")
        return render_error(500, "internal_error", "Something went wrong on our side. Please try again.")
