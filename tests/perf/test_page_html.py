"""The logged-in pages' HTML, byte for byte, as the app rendered them before their CPU was cut.

A Pro customer (paid through the emulator's Checkout) and a Free member each view `/account` and `/billing`; the
HTML is compared with the pages kept in `pages_html/` once what differs from one run to the next is masked (the
CSRF token, the emulator's ids and invoice numbers, the dates and the hours of the run). A change that leaves the
bytes of the pages the same passes; a change of the pages themselves rewrites the files (SNAPSHOT_UPDATE=1) and
shows in the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.billing.conftest import Billing

PAGES_HTML = Path(__file__).parent / "pages_html"
#: What differs between two runs of the same page, each masked by its name.
VOLATILE = (
    ("csrf", re.compile(r'(name="csrf_token"(?: type="hidden")? value=")[^"]+(")')),
    ("stripe-id", re.compile(r"\b((?:in|sub|cus|pi|ch|pm|cs|bps|si|price)_)[A-Za-z0-9]{6,}")),
    ("invoice-number", re.compile(r"\b()[A-Z0-9]{4,}-\d{4,}\b()")),
    ("emulator", re.compile(r"()http://127\.0\.0\.1:\d+()")),
    ("date", re.compile(r"\b()\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}\b()")),
)


def masked(html: str) -> str:
    for name, pattern in VOLATILE:
        html = pattern.sub(lambda m, name=name: f"{m.group(1)}<{name}>{m.group(2) if m.lastindex > 1 else ''}", html)
    return html


def the_same_as_kept(name: str, html: str) -> None:
    kept = PAGES_HTML / f"{name}.html"
    page = masked(html)
    if os.environ.get("SNAPSHOT_UPDATE") or not kept.exists():
        kept.write_text(page)
        pytest.skip(f"wrote {kept.name}")
    assert page == kept.read_text(), f"{name} differs from {kept}"


@pytest.fixture
def member_pages(seeded, client, auth, stripe_emulator):
    """View each page once (what a running app keeps is then filled), then return a viewer of them."""

    def view(path: str) -> str:
        response = client.get(path)
        assert response.status_code == 200
        return response.get_data(as_text=True)

    return view


@pytest.mark.parametrize("path", ["/account", "/billing"])
def test_a_free_members_page_is_the_page_it_was(member_pages, auth, path):
    auth.signup()
    member_pages(path)
    the_same_as_kept(f"free{path.replace('/', '-')}", member_pages(path))


@pytest.mark.parametrize("path", ["/account", "/billing"])
def test_a_pro_customers_page_is_the_page_it_was(seeded, client, auth, stripe_emulator, member_pages, path):
    auth.signup()
    assert Billing(seeded, client, auth, stripe_emulator).subscribe("pro", "monthly").status_code == 200
    member_pages(path)
    the_same_as_kept(f"pro{path.replace('/', '-')}", member_pages(path))
