"""`make run`'s web server: werkzeug's development server as `flask run` starts it, closing every response.

The WSGI spec asks a server to close the app's response whatever way the request ended (gunicorn does). Werkzeug's
server (3.1, `WSGIRequestHandler.run_wsgi`) reads what is left on the socket before it closes the response; when the
client has reset the connection by then (Chromium, following a form's 302, sometimes closes the socket with the body
unread: 8 in 100 POSTs), that read raises, the server calls `connection_dropped` and never closes the response. What
the app does once the response is closed then never runs: without a task queue that is sending the mail
(`response.call_on_close`, app/services/mail.py), which waits in the outbox until a later request asks for a delivery.

`closed_once` keeps the app's response in the WSGI environ and `ClosingRequestHandler` closes it once the request is
over, however it ended (a second close does nothing). The tests' live server is built on the same two.

`python -m app.devserver --host 127.0.0.1 --port 5000` (scripts/run-dev.sh, the port `make run`'s APP_PORT) starts the
server as `flask run` did: `.flaskenv` and `.env` loaded, the app found by FLASK_APP, debug mode (reloader and
debugger) from FLASK_DEBUG, the same banner; the request log is the app's own line per request (no werkzeug access line).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import click
from flask.cli import ScriptInfo, load_dotenv, show_server_banner
from flask.helpers import get_debug_flag, get_load_dotenv
from werkzeug import serving
from werkzeug.serving import WSGIRequestHandler, is_running_from_reloader, run_simple

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Where `closed_once` leaves the app's response in the WSGI environ, for `ClosingRequestHandler`.
RESPONSE_KEY = "app.devserver.response"


class ClosedOnce:
    """The app's response iterable, closed at most once, whoever closes it first (the server or the handler)."""

    def __init__(self, iterable: Iterable[bytes]):
        self.iterable = iterable
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.iterable)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        close = getattr(self.iterable, "close", None)
        if close is not None:
            close()


def closed_once(app: WSGIApplication) -> WSGIApplication:
    """The WSGI app `app`, its responses kept in the environ so that the handler can close one werkzeug left open."""

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        response = environ[RESPONSE_KEY] = ClosedOnce(app(environ, start_response))
        return response

    return wsgi


class ClosingRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler, closing the app's response (`closed_once`) once the request is over, whatever way
    it ended: sent, the connection reset before werkzeug closed the response (see the module doc), or an error.

    It writes no access line: the app's own `request_completed` line (method, path, status, duration, request and
    user id) says the same, and werkzeug's repeated it, coloured with terminal codes even in a file."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def run_wsgi(self) -> None:
        try:
            super().run_wsgi()
        finally:
            # run_wsgi sets `environ` first thing; a request that failed before has no response to close.
            response = getattr(self, "environ", {}).get(RESPONSE_KEY)
            if response is not None:
                response.close()


def load_app(info: ScriptInfo) -> WSGIApplication:
    """The app, as `flask run` loads it: an app that fails to load stops the server, except under the reloader, where
    the error is printed and answers every request until a change of the code restarts the server."""
    try:
        return info.load_app()
    except Exception as error:
        if not is_running_from_reloader():
            raise
        traceback.print_exc()
        failure = error  # `error` is unbound once the except block ends

        def failed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            raise failure from None

        return failed


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="The interface to bind to.")
@click.option("--port", default=5000, show_default=True, help="The port to bind to.")
def main(host: str, port: int) -> None:
    """Serve the app on werkzeug's development server, as `flask run` does, every response closed."""
    if get_load_dotenv():
        load_dotenv()  # .flaskenv then .env, neither overriding the environment, as the `flask` command loads them
    info = ScriptInfo(app_import_path=os.environ.get("FLASK_APP"))  # sets app.debug from FLASK_DEBUG, as flask run
    app = load_app(info)
    debug = get_debug_flag()
    if not sys.stderr.isatty():
        # Werkzeug colours its banner lines ("WARNING: This is a development server", "Press CTRL+C") with terminal
        # codes whatever its output is; `make run > dev.log` kept them as `[31m[1m…`. Its one switch is this flag.
        serving._log_add_style = False
    show_server_banner(debug, info.app_import_path)
    run_simple(
        host,
        port,
        closed_once(app),
        use_reloader=debug,
        use_debugger=debug,
        threaded=True,
        request_handler=ClosingRequestHandler,
    )


if __name__ == "__main__":
    main()
