"""The admin dashboard on PostgreSQL: who may see it, and that every figure is what the rows say."""

from __future__ import annotations

import re
from decimal import Decimal

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app.extensions import db
from app.models import AuditLog
from app.services.reporting import (
    activity_history,
    churn,
    conversions,
    failed_payments,
    mrr_history,
    revenue_summary,
)
from tests.admin.conftest import add_audit, add_subscription, days_ago
from tests.factories import UserFactory


def text_of(html: str, name: str) -> str:
    """The text of the element with data-testid=name (tags inside stripped)."""
    match = re.search(rf'data-testid="{re.escape(name)}"[^>]*>(.*?)</(?:div|span|td|h1)>', html, re.S)
    assert match, name
    return re.sub(r"<[^>]+>|\s+", " ", match.group(1)).strip()


# --- access --------------------------------------------------------------------------------------------------

ADMIN_URLS = ("/admin", "/admin/", "/admin/users?email=someone@example.com")


def test_anonymous_visitors_get_404_everywhere(seeded, client):
    for url in ADMIN_URLS:
        assert client.get(url).status_code == 404, url
    assert client.post("/admin/events/evt_1/replay").status_code == 404
    assert client.post("/admin/users/1/sync").status_code == 404


def test_logged_in_non_admins_get_404(seeded, client, auth):
    auth.signup(email="customer@example.com")
    for url in ADMIN_URLS:
        assert client.get(url).status_code == 404, url
    assert client.post("/admin/events/evt_1/replay").status_code == 404
    assert "/admin" not in client.get("/account").get_data(as_text=True)


def test_admins_see_the_dashboard_and_a_link_to_it(admin_client):
    response = admin_client.get("/admin")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Billing overview" in html
    assert "Billing overview" in admin_client.get("/admin/").get_data(as_text=True)  # with the slash too
    assert 'href="/admin"' in admin_client.get("/account").get_data(as_text=True)
    # The charts: vendored library and our script, data in a JSON block (the CSP forbids inline code).
    assert "/static/vendor/chart.js-4.6.1/chart.umd.min.js" in html and "/static/js/admin.js" in html
    assert '<script type="application/json" id="admin-chart-data">' in html
    assert "cdn" not in html.lower()


def test_an_action_without_the_csrf_token_is_refused_even_for_an_admin(admin_client):
    assert admin_client.post("/admin/events/evt_1/replay").status_code == 400


# --- figures -------------------------------------------------------------------------------------------------


def build_book(app):
    """A small but complete book of business, written straight into the tables."""
    with app.app_context():
        users = [UserFactory(email=f"c{i}@example.com") for i in range(8)]
        a, b, c, d, e, f, g, h = users
        add_subscription(a, "starter", "monthly", started=60)  # 19.99
        add_subscription(b, "starter", "monthly", started=10)  # 19.99 (started inside the window)
        add_subscription(c, "pro", "yearly", started=90)  # 479.99 / 12
        add_subscription(d, "pro", "monthly", "past_due", started=50)  # 49.99, still revenue
        add_subscription(e, "pro", "monthly", "canceled", started=70, ended=5)  # churned in the window
        add_subscription(f, "starter", "yearly", "canceled", started=80, ended=45)  # churned before it
        add_subscription(g, "pro", "monthly", "incomplete", started=1)  # never paid: no revenue
        add_subscription(h, "starter", "monthly", "unpaid", started=40)  # Stripe gave up: no revenue
        add_audit(a, "subscription.activated", 60, plan="starter", billing_cycle="monthly", status="active")
        add_audit(b, "subscription.activated", 10, plan="starter", billing_cycle="monthly", status="active")
        add_audit(c, "subscription.activated", 90, plan="starter", billing_cycle="yearly", status="active")
        add_audit(
            c,
            "subscription.plan_changed",
            20,
            from_plan="starter",
            from_cycle="yearly",
            plan="pro",
            billing_cycle="yearly",
        )
        add_audit(d, "subscription.activated", 50, plan="pro", billing_cycle="monthly", status="active")
        add_audit(e, "subscription.activated", 70, plan="pro", billing_cycle="monthly", status="active")
        add_audit(d, "payment.failed", 3, invoice="in_d1", attempt_key="in_d1:1", amount=4999)
        add_audit(d, "payment.failed", 2, invoice="in_d1", attempt_key="in_d1:2", amount=4999)
        add_audit(h, "payment.failed", 9, invoice="in_h1", attempt_key="in_h1:1", amount=1999)
        add_audit(a, "payment.failed", 8, invoice="in_a1", attempt_key="in_a1:1", amount=1999)
        add_audit(a, "payment.succeeded", 7, invoice="in_a1", amount=1999)  # recovered: not outstanding
        return users


EXPECTED_MRR = Decimal("19.99") * 2 + Decimal("479.99") / 12 + Decimal("49.99")


def test_figures_match_the_rows(seeded):
    build_book(seeded)
    with seeded.app_context():
        summary = revenue_summary()
        assert summary.mrr == EXPECTED_MRR
        assert summary.arr == Decimal("19.99") * 24 + Decimal("479.99") + Decimal("49.99") * 12
        assert {(r.plan, r.cycle): r.subscriptions for r in summary.by_plan} == {
            ("starter", "monthly"): 2,
            ("pro", "monthly"): 1,
            ("pro", "yearly"): 1,
        }

        window = churn(30)
        # Live 30 days ago: a, c, d, e (b started since, f had ended, g/h are not revenue statuses).
        assert (window.churned, window.active_at_start) == (1, 4)
        assert window.rate == Decimal("0.25")

        paths = {c.path: c for c in conversions(30)}
        assert (paths["free_starter"].recent, paths["free_starter"].converted_users) == (1, 3)
        assert (paths["free_pro"].recent, paths["free_pro"].converted_users) == (0, 2)
        assert (paths["starter_pro"].recent, paths["starter_pro"].converted_users) == (1, 1)
        assert paths["free_starter"].base_users == 8 and paths["starter_pro"].base_users == 3

        failed = failed_payments()
        assert (failed.past_due, failed.unpaid) == (1, 1)
        assert (failed.open_invoices, failed.open_amount_cents) == (2, 4999 + 1999)

        history = mrr_history(90)
        assert len(history) == 90
        assert history[-1].value == summary.mrr  # today's point is the gauge's figure
        # 40 days ago: a, c, d, e live and f (ended 45 days ago) gone; b had not started.
        forty = next(p for p in history if p.day == days_ago(40).date())
        assert forty.value == Decimal("19.99") + Decimal("479.99") / 12 + Decimal("49.99") * 2

        activity = activity_history(30)
        assert len(activity) == 30 and activity[-1].day == days_ago(0).date()
        assert sum(d.signups for d in activity) == 8  # the factory's users were created now
        assert sum(d.conversions for d in activity) == 2  # b's activation and c's Starter→Pro


def test_the_page_shows_the_figures(seeded, admin_client):
    build_book(seeded)
    html = admin_client.get("/admin").get_data(as_text=True)
    assert text_of(html, "kpi-mrr") == f"${EXPECTED_MRR:,.2f}"
    assert text_of(html, "kpi-active") == "4"
    assert text_of(html, "kpi-churn") == "25.0%"
    assert text_of(html, "kpi-churn-detail") == "1 ended of 4 active 30 days ago"
    assert text_of(html, "kpi-failed") == "2"
    assert text_of(html, "kpi-failed-detail").startswith("$69.98 unpaid · 1 past due · 1 unpaid subs")
    counts = dict(re.findall(r'data-testid="by-plan-(\w+-\w+)">.*?data-testid="count">(\d+)<', html, re.S))
    assert counts == {"starter-monthly": "2", "pro-monthly": "1", "pro-yearly": "1"}
    assert re.search(r'data-testid="conversion-starter_pro".*?data-testid="rate">33\.3%', html, re.S)
    assert 'data-testid="audit-log"' in html and "payment.failed" in html


def metric_value(client, name: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exported")


def test_the_arr_card_says_how_its_figure_is_made(seeded, admin_client):
    """The book's exact MRR is $129.969…: shown $129.97, whose × 12 ($1,559.64) is a cent more than the yearly
    revenue billed ($1,559.63). The card shows the billed figure and says so, rather than "MRR × 12"."""
    build_book(seeded)
    html = admin_client.get("/admin").get_data(as_text=True)
    assert text_of(html, "kpi-mrr") == "$129.97"
    assert text_of(html, "kpi-arr") == "$1,559.63"
    assert Decimal("19.99") * 24 + Decimal("49.99") * 12 + Decimal("479.99") == Decimal("1559.63")
    assert text_of(html, "kpi-arr-note") == "Monthly plans × 12 + yearly plans"


def test_mrr_on_the_page_equals_the_metrics_gauge(seeded, admin_client):
    build_book(seeded)
    html = admin_client.get("/admin").get_data(as_text=True)
    exact = Decimal(re.search(r'data-testid="kpi-mrr" data-value="([0-9.]+)"', html).group(1))
    gauge = metric_value(admin_client, "billing_mrr_dollars")
    assert exact == EXPECTED_MRR
    assert round(Decimal(str(gauge)), 2) == round(exact, 2)
    assert text_of(html, "kpi-mrr") == f"${Decimal(str(gauge)):,.2f}"


def test_an_empty_book_renders(admin_client):
    html = admin_client.get("/admin").get_data(as_text=True)
    assert text_of(html, "kpi-mrr") == "$0.00"
    assert text_of(html, "kpi-churn") == "—"
    assert "No webhook events yet." in html and "No paying subscriptions yet." in html


def test_the_audit_log_shows_the_latest_fifty(seeded, admin_client):
    with seeded.app_context():
        user = UserFactory(email="busy@example.com")
        db.session.add_all(
            [
                AuditLog(user_id=user.id, action=f"test.action_{i:02d}", details={}, created_at=days_ago(i / 100))
                for i in range(60)
            ]
        )
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id))) == 60
    html = admin_client.get("/admin").get_data(as_text=True)
    shown = re.findall(r"test\.action_(\d\d)", html)
    assert shown == [f"{i:02d}" for i in range(50)]
