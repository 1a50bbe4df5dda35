"""The billing page parses its query string only when there is one (the Portal's return link, `?from=portal`)."""

from __future__ import annotations

from werkzeug.sansio.request import Request

from tests.perf.test_logged_in_pages import calls_of, pro_client  # noqa: F401


def test_the_billing_page_parses_no_absent_query_string(pro_client):  # noqa: F811
    """(Before: `request.args` built from the empty query on every view.)"""
    assert calls_of(Request.args.fget, lambda: pro_client.get("/billing")) == 0
    assert calls_of(Request.args.fget, lambda: pro_client.get("/billing?from=portal")) == 1
