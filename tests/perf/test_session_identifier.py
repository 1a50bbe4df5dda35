"""Flask-Login's session protection with the identifier of each client worked out once per process
(`SiteLoginManager`): the same identifier as Flask-Login's, no SHA-512 on a logged-in view, and a browser whose
address or user agent changed is still told apart."""

from __future__ import annotations

import flask_login.utils
import pytest
from flask_login import session_protected

from app.extensions import login_manager
from tests.perf.test_logged_in_pages import CEILINGS, calls_of, pro_client  # noqa: F401


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_works_out_no_session_identifier(pro_client, path):  # noqa: F811
    """The browser's identifier was worked out at its log-in. (Before: a SHA-512 of its address and user agent on
    every view.)"""
    assert calls_of(flask_login.utils._create_identifier, lambda: pro_client.get(path)) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"},
        {"User-Agent": "curl/8.5.0", "X-Forwarded-For": "203.0.113.9, 10.0.0.2"},
        {"X-Forwarded-For": "203.0.113.10"},
    ],
)
def test_the_identifier_is_flask_logins(app, headers):
    for remote in ("192.0.2.1", "192.0.2.2"):
        with app.test_request_context("/account", headers=headers, environ_base={"REMOTE_ADDR": remote}):
            expected = flask_login.utils._create_identifier()
            assert login_manager._session_identifier_generator() == expected
            assert login_manager._session_identifier_generator() == expected  # the remembered one


def test_a_browser_whose_user_agent_changed_is_told_apart(app, pro_client):  # noqa: F811
    """Basic protection: the session stops being fresh, as Flask-Login has it, for a request from another browser;
    the browser it was opened in is not."""
    protected: list[object] = []

    def record(sender, **extra):
        protected.append(sender)

    with session_protected.connected_to(record, app):
        assert pro_client.get("/account").status_code == 200
        assert protected == []
        response = pro_client.get("/account", headers={"User-Agent": "another browser"})
        assert response.status_code == 200 and protected == [app]
