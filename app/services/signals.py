"""What a billing commit tells the rest of the app: one signal, sent after the commit that made it true.

`commit_billing(result)` is the one place a billing transaction ends: it commits, then sends
`subscription_changed` with the `SyncResult`. The modules that keep something derived from the billing state
offer a receiver — the entitlements cache (`entitlements`), the account page's plan outlook (`billing_summary`),
the mail outbox (`mail`) and the counters (`metrics`) — which `create_app` connects, in that order; so the writers
(the sync, the webhook endpoint, checkout, plan changes, the admin) need not know any of them, and this module
imports none of them. A rolled-back transaction sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from blinker import NamedSignal
from flask import current_app
from ordered_set import OrderedSet

from app.extensions import db


class OrderedSignal(NamedSignal):
    """A blinker signal that calls its receivers in the order they were connected (blinker's own set has none)."""

    set_class = OrderedSet  # type: ignore[assignment]  # blinker types it as type[set]; any mutable set works


#: Sent after every billing commit that concerned a user (`change.user_id` set), changed or not: receivers take
#: `(sender, change)`, the sender being the Flask app, and run in the order `create_app` connects them.
subscription_changed = OrderedSignal("subscription-changed")


@dataclass
class SyncResult:
    """What a sync or a webhook changed: the user, and the audit actions written (empty when nothing changed)."""

    user_id: int | None
    actions: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    #: One of metrics.PLAN_CHANGE_DIRECTIONS per `subscription.plan_changed` action.
    plan_change_directions: list[str] = field(default_factory=list)
    mail_queued: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def announce(change: SyncResult) -> None:
    """Tell the subscribers about a committed change of the user's billing state (nothing for no user)."""
    if change.user_id is None:
        return
    app = cast(Any, current_app)._get_current_object()  # the app itself, not the request-bound proxy
    subscription_changed.send(app, change=change)


def commit_billing(change: SyncResult) -> None:
    """Commit the billing transaction, then announce it: caches, mail and counters follow only what is stored."""
    db.session.commit()
    announce(change)
