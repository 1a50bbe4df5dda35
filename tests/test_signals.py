"""After a billing commit, one signal: its receivers, their order, and what they do."""

from __future__ import annotations

import redis

from app.services.billing_summary import forget_changed_outlook
from app.services.entitlements import forget_changed_entitlements
from app.services.mail import deliver_queued
from app.services.metrics import count_subscription_change
from app.services.signals import SyncResult, commit_billing, subscription_changed


def test_the_caches_then_mail_then_the_counters_follow_a_billing_commit(app):
    receivers = list(subscription_changed.receivers_for(app))
    expected = [forget_changed_entitlements, forget_changed_outlook, deliver_queued, count_subscription_change]
    assert [r for r in receivers if r in expected] == expected


def test_a_commit_for_a_user_drops_the_users_cached_entitlements_and_one_for_no_user_sends_nothing(app, redis_url):
    store = redis.Redis.from_url(redis_url)
    store.set("entitlements:41", "{}")
    store.set("entitlements:42", "{}")
    sent = []

    def note(sender, change, **_):
        sent.append(change.user_id)

    subscription_changed.connect(note)
    try:
        with app.app_context():
            commit_billing(SyncResult(None))
            commit_billing(SyncResult(42))
    finally:
        subscription_changed.disconnect(note)
    assert sent == [42]
    assert store.exists("entitlements:41") and not store.exists("entitlements:42")
