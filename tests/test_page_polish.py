"""Small things every page shares: form fields print only the attributes they are given, the icon is vendored."""

from __future__ import annotations

import re

from tests.factories import UserFactory


def test_a_field_without_autocomplete_has_no_autocomplete_attribute(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    auth.login()
    html = client.get("/strategies/new").get_data(as_text=True)
    [name_input] = re.findall(r'<input[^>]*name="name"[^>]*>', html)
    assert "autocomplete" not in name_input and "None" not in name_input
    assert "autofocus" in name_input
    auth.logout()
    [email_input] = re.findall(r'<input[^>]*name="email"[^>]*>', client.get("/login").get_data(as_text=True))
    assert 'autocomplete="email"' in email_input  # a field given one keeps it


def test_every_page_links_the_vendored_icon(seeded, client):
    html = client.get("/pricing").get_data(as_text=True)
    assert '<link rel="icon" href="/static/favicon.ico" sizes="32x32">' in html
    assert '<link rel="icon" href="/static/img/logo.svg" type="image/svg+xml">' in html
    icon = client.get("/static/favicon.ico")
    assert icon.status_code == 200
    assert icon.mimetype in {"image/vnd.microsoft.icon", "image/x-icon"}
    assert icon.data[:4] == b"\x00\x00\x01\x00"  # an ICO file (its images are PNGs)
    assert client.get("/static/img/logo.svg").status_code == 200


def test_favicon_ico_leads_to_the_vendored_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response.headers["Location"] == "/static/favicon.ico"
    icon = client.get("/static/favicon.ico")
    assert icon.status_code == 200 and icon.data[:4] == b"\x00\x00\x01\x00"  # an ICO file
