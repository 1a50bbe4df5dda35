"""The templates' url_for (app/templating.py) answers as Flask's does, while remembering what it built."""

from __future__ import annotations

from flask import render_template_string


def test_a_remembered_url_follows_the_request_script_root(app):
    template = "{{ url_for('account.show_account') }} {{ url_for('static', filename='css/app.css') }}"
    with app.test_request_context("/account"):
        assert render_template_string(template) == "/account /static/css/app.css"
    with app.test_request_context("/account", base_url="http://localhost/ssb/"):
        assert render_template_string(template) == "/ssb/account /ssb/static/css/app.css"
    with app.test_request_context("/account"):
        assert render_template_string(template) == "/account /static/css/app.css"


def test_arguments_options_and_relative_endpoints_answer_as_flask_does(app):
    with app.test_request_context("/pricing", base_url="https://ssb.example.com"):
        cases = [
            "{{ url_for('pricing.show_pricing', checkout='left', plan='pro') }}",
            "{{ url_for('pricing.show_pricing', plan='pro', checkout='left') }}",
            "{{ url_for('pricing.show_pricing', _anchor='plan-pro') }}",
            "{{ url_for('pricing.show_pricing', _external=True) }}",
            "{{ url_for('.show_pricing') }}",
            "{{ url_for('pricing.show_pricing', plan=['pro', 'starter']) }}",
        ]
        expected = [
            "/pricing?checkout=left&amp;plan=pro",
            "/pricing?plan=pro&amp;checkout=left",
            "/pricing#plan-pro",
            "https://ssb.example.com/pricing",
            "/pricing",
            "/pricing?plan=pro&amp;plan=starter",
        ]
        for _ in range(2):  # built, then remembered
            assert [render_template_string(case) for case in cases] == expected


def test_outside_a_request_urls_are_flasks_external_ones(app):
    app.config["SERVER_NAME"] = "ssb.example.com"
    with app.app_context():
        assert render_template_string("{{ url_for('pricing.show_pricing') }}") == "http://ssb.example.com/pricing"


def test_equal_arguments_of_other_types_are_not_taken_for_each_other(app):
    """`1 == True` in Python: a remembered URL is keyed by its arguments' types too."""
    with app.test_request_context("/pricing"):
        for _ in range(2):
            assert render_template_string("{{ url_for('pricing.show_pricing', page=1) }}") == "/pricing?page=1"
            assert render_template_string("{{ url_for('pricing.show_pricing', page=True) }}") == "/pricing?page=True"
