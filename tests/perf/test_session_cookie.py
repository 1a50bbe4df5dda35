"""The session cookie is verified once per process: the same cookie again costs no signature check, and decides
exactly what a full check would (expiry, tampering, key rotation, and no value shared between requests)."""

from __future__ import annotations

from datetime import timedelta

from itsdangerous import Signer
from werkzeug.http import parse_cookie

from app.security import SiteSessionInterface
from tests.perf.test_request_path import calls_to


def logged_in(client, auth) -> None:
    auth.signup()
    assert client.get("/account").status_code == 200


def test_a_cookie_verified_before_is_not_verified_again(seeded, client, auth):
    logged_in(client, auth)
    assert client.get("/account").status_code == 200  # the cookie as the first view's CSRF token left it
    with calls_to(Signer.verify_signature, parse_cookie) as counted:
        for _ in range(3):
            assert client.get("/account").status_code == 200
    assert counted["Signer.verify_signature"] == 0  # (before: one per view)
    assert counted["parse_cookie"] == 0  # the same Cookie header: not parsed again either


def remembered(app, client) -> bool:
    """Whether the client's session cookie is among those this process verified and remembers (under the Cookie
    header it came in)."""
    name = app.config["SESSION_COOKIE_NAME"]
    value = client.get_cookie(name).value
    return any(f"{name}={value}" in header.split("; ") for _, _, header in app.session_interface._verified)


def test_a_remembered_cookie_past_the_session_lifetime_is_refused(seeded, client, auth):
    logged_in(client, auth)
    assert client.get("/account").status_code == 200  # opened and remembered: the next view takes the memo's path
    assert remembered(seeded, client)
    seeded.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=-1)  # every cookie is now too old
    response = client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_cookie_changed_by_one_byte_is_verified_and_refused(seeded, client, auth):
    logged_in(client, auth)
    name = seeded.config["SESSION_COOKIE_NAME"]
    cookie = client.get_cookie(name)
    payload, signature = cookie.value.rsplit(".", 1)
    forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    client.set_cookie(name, forged, domain=cookie.domain, path=cookie.path)
    response = client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_new_secret_key_refuses_the_cookies_remembered_under_the_old_one(seeded, client, auth):
    logged_in(client, auth)
    assert client.get("/account").status_code == 200
    assert remembered(seeded, client)
    seeded.secret_key = seeded.config["SECRET_KEY"] = "another secret key, not a fallback of the first" * 2
    response = client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_no_request_can_change_what_the_next_one_reads_from_a_remembered_cookie(seeded):
    interface = SiteSessionInterface()
    serializer = interface.get_signing_serializer(seeded)
    name = seeded.config["SESSION_COOKIE_NAME"]
    plain = serializer.dumps({"_user_id": "7", "_fresh": True})
    flashes = serializer.dumps({"_user_id": "7", "_flashes": [["info", "Saved."]]})
    for cookie in (plain, flashes):
        opened = []
        for _ in range(2):
            with seeded.test_request_context("/", headers={"Cookie": f"{name}={cookie}"}) as ctx:
                session = interface.open_session(seeded, ctx.request)
                opened.append(dict(session))
                session["_user_id"] = "8"
                session.get("_flashes", []).append(["danger", "Changed by this request."])
        assert opened[0] == opened[1] and opened[0]["_user_id"] == "7"
    # the session holding a list was not remembered
    assert list(interface._verified) == [(serializer, name, f"{name}={plain}")]
