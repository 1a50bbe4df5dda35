"""The live server of the browser tests closes every response, as gunicorn does, even when the client resets the
connection once it has the response.

What the app does after a response (mail without a task queue: `response.call_on_close`) runs when the server
closes it. Werkzeug's server reads what is left on the socket before closing the response; when the client has reset
the connection by then (Chromium, following a form's 302, sometimes closes the socket with the body unread), that read
raises and the response is never closed: the email-change link of tests/e2e/test_account_email.py was never sent.
The live server is built on `make run`'s own mechanism (app/devserver.py; its test through `make run`'s entry point:
tests/test_dev_server.py).
"""

from __future__ import annotations

import socket
import struct
import threading

from flask import Flask, Response

from tests.conftest import LiveServer


def test_a_response_is_closed_when_the_client_resets_the_connection_after_reading_it():
    app = Flask(__name__)
    reset, closed = threading.Event(), threading.Event()

    @app.post("/form")
    def form():
        def body():
            yield b"sent"
            reset.wait(5)  # the server reads on only once the client has reset the connection

        response = Response(body(), status=302, headers={"Location": "/next", "Content-Length": "4"})
        response.call_on_close(closed.set)
        return response

    server = LiveServer(app)
    try:
        client = socket.create_connection(("127.0.0.1", server.server.server_port))
        client.sendall(b"POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nsent"):  # the whole response has come (the body unread by a browser)
            answer += client.recv(1024)
        assert answer.startswith(b"HTTP/1.1 302")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        client.close()
        reset.set()
        assert closed.wait(5), "the response was never closed: what waits for it (mail) never ran"
    finally:
        server.stop()
