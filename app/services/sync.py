"""Stripe → rows: the one writer of `user_subscriptions`, whoever brings a Stripe subscription.

Stripe is the source of truth; `user_subscriptions` is its local copy. `apply_subscription` writes one Stripe
subscription object into its row (auditing each transition and queueing its mail), whoever brings the object:

- `sync_customer` reads all of a customer's subscriptions from Stripe and applies them: the success page, the
  return from the Portal, plan changes and cancellations, Checkout (before opening a second session),
  `flask stripe sync` and the admin's re-sync call it.
- The webhook handlers apply the event's own object when it is newer than what the row last saw, without asking
  Stripe; they ask (`sync_customer_in_transaction`) only when the order is ambiguous (two events of the same
  second), when a completed Checkout's subscription is not known yet and no `customer.subscription.created` will
  bring it, and after a failed payment. An object naming a subscription schedule (a plan change pending, made in
  the app or the Customer Portal) is read again with its schedule, for the mail of that change
  (`scheduled_change_mail`).

So neither the order nor the number of notifications can leave the copy wrong. The pure rules — `Snapshot`,
`transitions`, `subscription_fields`, `plan_change_direction` — take plain values and are importable on their own.
The writer takes the row as an entity (the syncs, which read all of a user's rows) or as values (`RowState`, with
`UserRef` for its user: the webhook handlers, which read one row as a Core row), plans from the cached catalog.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from flask import current_app, has_request_context
from sqlalchemy import Integer, String, Table, bindparam, case, exists, insert, or_, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.orm import joinedload, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from app.extensions import db
from app.logging import get_logger
from app.models import (
    ACCESS_STATUSES,
    BILLING_EMAIL_LENGTH,
    AuditLog,
    MailOutbox,
    SubscriptionPlan,
    User,
    UserConversion,
    UserSubscription,
    utcnow,
)
from app.models.conversion import conversion_columns
from app.services import audit, stripe_gateway
from app.services.catalog import PlanView, losses_between, plan_view, plan_view_by_name, plan_view_for_price
from app.services.entitlements import plan_display_name
from app.services.mail import INSERT_MAIL, OUTBOX_COLUMNS, billing_url, outbox_row
from app.services.signals import SyncResult, commit_billing
from app.services.stripe_gateway import StripeObjectMissing, from_timestamp, id_of
from app.templating import date, money

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# The pure rules
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the audit trail compares: the parts of a subscription a person cares about."""

    status: str
    plan: str
    cycle: str
    cancel_scheduled: bool
    period_end: datetime | None

    @property
    def grants(self) -> bool:
        return self.status in ACCESS_STATUSES

    @classmethod
    def of(cls, row: SubscriptionRow) -> Snapshot:
        return cls(row.status, row.plan.name, row.billing_cycle, row.cancel_at_period_end, row.current_period_end)


@dataclass(frozen=True)
class UserRef:
    """A user as the subscription writer and its mail read it — the id and the login email — for a caller that
    read them as a row (the webhook handlers: no entity, identity map or attribute instrumentation to pay for)."""

    id: int
    email: str


#: The columns of `user_subscriptions` a `RowState` holds, in its fields' order after `plan`.
ROW_COLUMNS = (
    "id",
    "user_id",
    "stripe_subscription_id",
    "plan_id",
    "billing_cycle",
    "status",
    "stripe_price_id",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "canceled_at",
    "ended_at",
    "trial_end",
    "last_event_at",
)


@dataclass(frozen=True)
class RowState:
    """A row of `user_subscriptions` as plain values, its plan from the cached catalog: what the writer compares,
    audits and mails from. The webhook handlers read the row as such (`row_state`); the writer takes a
    `UserSubscription` entity too (the syncs), and gives back what it was given, written."""

    plan: PlanView
    id: int
    user_id: int
    stripe_subscription_id: str
    plan_id: int
    billing_cycle: str
    status: str
    stripe_price_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    trial_end: datetime | None
    last_event_at: int | None

    @property
    def grants_access(self) -> bool:
        return self.status in ACCESS_STATUSES

    @classmethod
    def of(cls, row: UserSubscription) -> RowState:
        """An entity's values (its plan from the catalog, so the entity's own plan is not loaded for it)."""
        return cls(plan_view(row.plan_id), *(getattr(row, name) for name in ROW_COLUMNS))


def row_state(values: Any) -> RowState:
    """A `RowState` from a row of `user_subscriptions`' `ROW_COLUMNS` (a Core result row, or a mapping)."""
    return RowState(plan_view(values.plan_id), *(getattr(values, name) for name in ROW_COLUMNS))


#: What the writer takes and gives back: the entity (the syncs) or its values (the webhook handlers).
SubscriptionRow = UserSubscription | RowState


def transitions(old: Snapshot | None, new: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    """The audit actions between two snapshots; none when nothing a person cares about changed."""
    if old is None:
        if new.grants:
            return [("subscription.activated", {"plan": new.plan, "billing_cycle": new.cycle, "status": new.status})]
        if new.status == "canceled":
            return [("subscription.canceled", {"plan": new.plan})]
        return [("subscription.updated", {"status": new.status, "plan": new.plan})]
    actions: list[tuple[str, dict[str, Any]]] = []
    if not old.grants and new.grants:
        actions.append(("subscription.activated", {"plan": new.plan, "billing_cycle": new.cycle, "status": new.status}))
    elif old.status != "canceled" and new.status == "canceled":
        actions.append(("subscription.canceled", {"plan": new.plan, "previous_status": old.status}))
    elif old.status != new.status:
        actions.append(("subscription.updated", {"from_status": old.status, "status": new.status}))
    if (old.plan, old.cycle) != (new.plan, new.cycle):
        actions.append(
            (
                "subscription.plan_changed",
                {"from_plan": old.plan, "from_cycle": old.cycle, "plan": new.plan, "billing_cycle": new.cycle},
            )
        )
    if new.status != "canceled":
        if not old.cancel_scheduled and new.cancel_scheduled:
            actions.append(("subscription.cancel_scheduled", {"plan": new.plan, "ends_at": iso(new.period_end)}))
        elif old.cancel_scheduled and not new.cancel_scheduled:
            actions.append(("subscription.resumed", {"plan": new.plan}))
        if old.period_end and new.period_end and new.period_end > old.period_end and old.status == new.status:
            actions.append(("subscription.updated", {"renewed_until": iso(new.period_end)}))
    return actions


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def subscription_fields(sub: dict[str, Any]) -> dict[str, Any] | None:
    """The columns of `user_subscriptions` from a Stripe subscription (pinned API shape: periods on the item)."""
    items = (sub.get("items") or {}).get("data") or []
    if not items:
        return None
    item = items[0]
    price_id = subscription_price_id(sub)
    found = plan_view_for_price(price_id)
    if found is None:
        return None
    plan, cycle = found
    cancel_scheduled = bool(sub.get("cancel_at_period_end")) or (
        sub.get("cancel_at") is not None and sub.get("status") not in ("canceled", "incomplete_expired")
    )
    return {
        "plan_id": plan.id,
        "plan": plan,
        "billing_cycle": cycle,
        "status": sub["status"],
        "stripe_price_id": price_id,
        "current_period_start": from_timestamp(item.get("current_period_start")),
        "current_period_end": from_timestamp(item.get("current_period_end")),
        "cancel_at_period_end": cancel_scheduled,
        "canceled_at": from_timestamp(sub.get("canceled_at")),
        "ended_at": from_timestamp(sub.get("ended_at")),
        "trial_end": from_timestamp(sub.get("trial_end")),
    }


def subscription_price_id(sub: dict[str, Any]) -> str | None:
    """The price of a Stripe subscription's first item (the plan: one item per subscription here)."""
    items = (sub.get("items") or {}).get("data") or []
    return id_of(items[0].get("price") or {}) if items else None


def plan_change_direction(from_plan: str, to_plan: PlanView | SubscriptionPlan) -> str:
    """upgrade / downgrade by the plans' tiers (sort_order); the same plan in another cycle is a cycle_change. The
    one rule for a change seen here (the plan-change counter, metrics.PLAN_CHANGE_DIRECTIONS) and one asked for (the
    API's `kind`, subscriptions.PlanChange). It says what the change is, not when it takes effect: a higher tier on a
    shorter cycle is an upgrade that waits for the period end (subscriptions.scheduled_at_period_end)."""
    if from_plan == to_plan.name:
        return "cycle_change"
    previous = plan_view_by_name(from_plan)
    return "upgrade" if previous is None or to_plan.sort_order > previous.sort_order else "downgrade"


def customer_id_of(obj: dict[str, Any]) -> str | None:
    """The customer id of a Stripe object whose `customer` may be expanded."""
    return id_of(obj.get("customer"))


# ---------------------------------------------------------------------------------------------------------------
# Customers → users
# ---------------------------------------------------------------------------------------------------------------


#: The user linked to a Stripe customer (`customer_id`), and the same locked: built once, so that SQLAlchemy keeps
#: their cache keys along with their compiled forms (the webhook handlers look a user up at each event).
USER_OF_CUSTOMER = select(User).where(User.stripe_customer_id == bindparam("customer_id"))
LOCKED_USER_OF_CUSTOMER = USER_OF_CUSTOMER.with_for_update()


def find_user_for_customer(customer_id: str, lock: bool = True) -> User | None:
    """The user linked to a Stripe customer; links one by the customer's `metadata.user_id` if not yet linked.

    The lookup by id needs no Stripe call; only an unlinked customer costs one (to read its metadata).
    """
    user = db.session.scalar(LOCKED_USER_OF_CUSTOMER if lock else USER_OF_CUSTOMER, {"customer_id": customer_id})
    if user is not None:
        return user
    try:
        customer = stripe_gateway.retrieve_customer(customer_id)
    except StripeObjectMissing:  # not a customer of this account: nothing to link, and retrying cannot help
        log.warning("stripe_customer_not_found", customer=customer_id)
        return None
    return link_customer(customer, (customer.get("metadata") or {}).get("user_id"), lock=lock)


def link_customer(customer: dict[str, Any], user_id: Any, lock: bool = True) -> User | None:
    """Link a Stripe customer to our user `user_id` unless the user already has another customer."""
    if customer.get("deleted"):
        return None
    user_id = str(user_id or "")
    if not user_id.isdigit():
        return None
    user = db.session.get(User, int(user_id), with_for_update=lock)
    if user is None or user.stripe_customer_id not in (None, customer["id"]):
        log.warning("stripe_customer_link_refused", customer=customer["id"], user_id=user_id)
        return None
    if user.stripe_customer_id is None:
        user.stripe_customer_id = customer["id"]
        audit.record("customer.linked", user.id, customer=customer["id"])
    apply_billing_contact(user, customer)
    return user


#: The longest name `users.name` holds (Stripe allows 256 characters).
BILLING_NAME_LENGTH = 255


def contact_value(customer: dict[str, Any], key: str, max_length: int) -> str | None:
    """A customer's `email` or `name` as we keep it: a string, trimmed, None when empty, unset or too long."""
    value = customer.get(key)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and len(value) <= max_length else None


def apply_billing_contact(user: User, customer: dict[str, Any]) -> list[str]:
    """Copy the customer's email and name into the user's billing contact; the fields that changed.

    Only `billing_email` and `name` are written, never the login email: Stripe's email is whatever the Portal or the
    Dashboard set, unverified, so it is stored as Stripe holds it (even one that is not a valid address: it is
    Stripe's data, shown as such) and never logged in with. A key missing from the object (an id-only reference)
    leaves its field as it is; an explicit null clears it.
    """
    changed = []
    if "email" in customer:
        email = contact_value(customer, "email", BILLING_EMAIL_LENGTH)
        if email != user.billing_email:
            user.billing_email = email
            changed.append("email")
    if "name" in customer:
        name = contact_value(customer, "name", BILLING_NAME_LENGTH)
        if name != user.name:
            user.name = name
            changed.append("name")
    return changed


# ---------------------------------------------------------------------------------------------------------------
# Stripe → database
# ---------------------------------------------------------------------------------------------------------------


def event_horizon() -> int | None:
    """`created` of Stripe's newest event, read *before* a sync reads the subscriptions.

    Every event created before the read is at most this old, so a sync stamps its rows with it: a late delivery of
    an older event is then skipped instead of re-applying a state the sync has already moved past (which would
    audit a transition twice), an event of the same second is re-checked with Stripe, and a newer one applies.
    """
    newest = stripe_gateway.list_events(limit=1)
    return int(newest[0]["created"]) if newest else None


def apply_subscription(
    user: User | UserRef,
    sub: dict[str, Any],
    row: SubscriptionRow | None,
    result: SyncResult,
    event_at: int | None = None,
) -> SubscriptionRow | None:
    """Write one Stripe subscription into its row (no commit); audit and queue mail for each transition.

    The row is written together with its transitions' audit entries (`write_subscription`). A new row (`row` None)
    is inserted only if no other transaction inserted it since the caller looked: None then, and nothing written;
    the caller reads that row and decides (a sync applies onto it, a webhook compares the event's age first).
    `row` is the entity (the syncs) or its values (the webhook handlers): what is given back, written, is of the
    same kind (a new row: an entity for a `User`, values for a `UserRef`).
    """
    fields = subscription_fields(sub)
    if fields is None:
        log.warning("stripe_subscription_unknown_price", subscription=sub.get("id"))
        return row
    state = RowState.of(row) if isinstance(row, UserSubscription) else row
    old = Snapshot.of(state) if state is not None else None
    changes = {name: value for name, value in fields.items() if state is None or getattr(state, name) != value}
    if event_at is not None and (state is None or (state.last_event_at or 0) < event_at):
        changes["last_event_at"] = event_at
    plan = fields["plan"]
    new = Snapshot(
        fields["status"],
        plan.name,
        fields["billing_cycle"],
        fields["cancel_at_period_end"],
        fields["current_period_end"],
    )
    moves = transitions(old, new)
    ended_for = (sub.get("cancellation_details") or {}).get("reason")
    mails = [transition_mail(action, user, sub["id"], fields, ended_for=ended_for, previous=old) for action, _ in moves]
    outbox = [mail for mail in mails if mail is not None]
    # A mail keyed by its transition's audit entry: the entry's place among `moves` (its id ends the key).
    follows: list[int | None] = [
        n if mail["kind"] in KEYED_BY_AUDIT_ENTRY else None for n, mail in enumerate(mails) if mail is not None
    ]
    scheduled = scheduled_change_mail(user, sub, fields)
    if scheduled is not None:
        outbox.append(scheduled)
        follows.append(None)
    written = write_subscription(user, sub["id"], row, changes, moves, outbox, follows)
    if written is None:
        return None
    result.mail_queued |= scheduled is not None
    for (action, details), mail in zip(moves, mails, strict=True):
        result.actions.append(action)
        result.plans.append(plan.name)
        result.mail_queued |= mail is not None
        if action == "subscription.plan_changed":
            result.plan_change_directions.append(plan_change_direction(details["from_plan"], plan))
    return written


def execute_values(statement: Any, params: dict[str, Any]) -> Any:
    """Run a Core statement (on tables: its rows are values, nothing is loaded into the session) in the session's
    transaction; its result. On PostgreSQL it is sent on the session's connection: the session's execution adds
    nothing to a Core statement there (no autoflush, no entities; its one hook, app/sqlite_locking.py, is SQLite's)
    but about 25 µs of CPU, paid twice per event on the queue worker's hot path. Elsewhere through the session, for
    that hook."""
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        return connection.execute(statement, params)
    return db.session.execute(statement, params)


def write_subscription(
    user: User | UserRef,
    subscription_id: str,
    row: SubscriptionRow | None,
    changes: dict[str, Any],
    moves: list[tuple[str, dict[str, Any]]],
    mails: list[dict[str, Any]] | None = None,
    follows: list[int | None] | None = None,
) -> SubscriptionRow | None:
    """Write the row's `changes` (insert it when `row` is None), one audit entry per transition in `moves` and the
    outbox rows of their `mails` (`mail.outbox_row`; one whose (dedupe_key, kind) is there is not added).

    `follows[i]`, when not None, is the place in `moves` of the transition mail `i` follows: its key ends with that
    transition's audit entry's id (written in the same statement), so the mail is there exactly once per transition
    — the audit entry's rule (a transition is found, under the user's lock, by comparing the row with Stripe's
    state, and written once) — and a transition made again later is mailed again.

    On PostgreSQL it is one statement: the row's INSERT (unless the row is there) or UPDATE, and the audit entries,
    the mails and the user's conversion row (app/models/conversion.py) written from its RETURNING, so they exist
    exactly when the row was written. None when the insert found the row there already (nothing written): the caller
    holds the user's lock, which every writer of the user's rows takes first, so only one committed before the
    lock was granted can be there. An entity given (or made, for a `User`) is then set to what was written, as a
    flush would; values given (or made, for a `UserRef`) are given back with the changes. Elsewhere (SQLite) the
    ORM writes the same rows, one statement each. (Built from generic constructs, not the dialect's ON CONFLICT,
    so SQLAlchemy caches its compiled form; built once per shape, `subscription_write_statement`, so it keeps its
    cache key too.)
    """
    mails = mails or []
    follows = follows or [None] * len(mails)
    if row is not None and not changes:
        for mail in mails:  # a mail that follows no transition (a scheduled change's): once per key, as any mail
            execute_values(INSERT_MAIL, mail)
        return row
    if db.engine.dialect.name != "postgresql":
        entries: list[AuditLog] = []
        written = write_subscription_with_orm(user, subscription_id, row, changes, moves, entries)
        if written is None:
            return None
        if any(n is not None for n in follows):
            db.session.flush()  # the entries' ids
        for mail, n in zip(mails, follows, strict=True):
            keyed = mail if n is None else {**mail, "dedupe_key": f"{mail['dedupe_key']}{entries[n].id}"}
            db.session.execute(INSERT_MAIL, keyed)
        return written
    now = utcnow()
    values = {name: value for name, value in changes.items() if name != "plan"}
    values["updated_at"] = now
    if row is None:
        values.setdefault("last_event_at", None)
        values.update(user_id=user.id, stripe_subscription_id=subscription_id, created_at=now)
    converted = sorted({column for action, details in moves for column in conversion_columns(action, details)})
    statement = subscription_write_statement(row is None, tuple(values), len(moves), tuple(converted), tuple(follows))
    params: dict[str, Any] = {f"new_{name}": value for name, value in values.items()}
    params.update(owner_id=user.id, subscription_id=subscription_id, row_id=row.id if row else None, at=now)
    for n, (action, details) in enumerate(moves):
        params[f"audit_{n}_action"] = action
        params[f"audit_{n}_details"] = {"subscription": subscription_id, **details}
    for n, mail in enumerate(mails):
        params.update({f"mail_{n}_{name}": value for name, value in mail.items()})
    row_id = execute_values(statement, params).scalar()
    if row_id is None:
        return None
    if row is None and not isinstance(user, User):
        return RowState(changes["plan"], row_id, *(values[name] for name in ROW_COLUMNS[1:]))
    if row is None:
        row = UserSubscription(id=row_id, **values, plan=plan_entity(changes["plan"]))
        make_transient_to_detached(row)
        db.session.add(row)
        return row
    if isinstance(row, RowState):
        return replace(row, **changes)
    for name, value in {**changes, "updated_at": now}.items():
        set_committed_value(row, name, plan_entity(value) if name == "plan" else value)
    return row


def plan_entity(plan: PlanView) -> SubscriptionPlan | None:
    """The session's entity of a catalog plan, for an entity's `plan` (loaded unless the session has it)."""
    return db.session.get(SubscriptionPlan, plan.id)


@functools.lru_cache(maxsize=256)
def subscription_write_statement(
    insert_row: bool,
    columns: tuple[str, ...],
    audits: int,
    converted: tuple[str, ...],
    mails: tuple[int | None, ...] = (),
) -> Any:
    """`write_subscription`'s statement for one shape — insert or update, the columns written, the number of audit
    entries, the conversion columns set, the mails (each the place of the audit entry whose id ends its key, or None)
    — with every value a bind parameter. Built once per shape: SQLAlchemy keeps a statement's cache key on it, so
    only the first write of a shape builds it and computes its key (most of the write's CPU otherwise).

    The binds: `new_<column>` per column written; `owner_id`, the user (not `user_id`: an UPDATE takes a bind
    named after one of its columns as that column's new value); `subscription_id`; `row_id` (an update's row);
    `at`; `audit_<n>_action` and `audit_<n>_details` per entry; `mail_<n>_<column>` per mail."""
    table = subscription_table()
    binds = {name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns}
    statement: Any
    if insert_row:
        absent = select(*binds.values()).where(
            ~exists().where(table.c.stripe_subscription_id == bindparam("subscription_id", type_=String()))
        )
        statement = insert(table).from_select(list(columns), absent)
    else:
        statement = update(table).where(table.c.id == bindparam("row_id", type_=Integer())).values(binds)
    written = statement.returning(table.c.id).cte("written_row")
    entries = [audit_entry(written, n) for n in range(audits)]
    ctes = [*entries]
    ctes += [outbox_entry(written, n, None if entry is None else entries[entry]) for n, entry in enumerate(mails)]
    if converted:
        ctes += conversion_writes(written, list(converted))
    return select(written.c.id).add_cte(*ctes)


def subscription_table() -> Table:
    """The table of `UserSubscription` (a Core statement on it takes bind parameters as such, not as rows)."""
    return cast(Table, UserSubscription.__table__)


def audit_entry(written: Any, n: int) -> Any:
    """The audit entry of the `n`th transition (binds `audit_<n>_action`, `audit_<n>_details`, `owner_id`, `at`),
    inserted once per row `written` returns (a CTE returning its id)."""
    table = cast(Table, AuditLog.__table__)
    return (
        insert(table)
        .from_select(
            ["user_id", "action", "details", "created_at"],
            select(
                bindparam("owner_id", type_=table.c.user_id.type),
                bindparam(f"audit_{n}_action", type_=table.c.action.type),
                bindparam(f"audit_{n}_details", type_=table.c.details.type),
                bindparam("at", type_=table.c.created_at.type),
            ).select_from(written),
        )
        .returning(table.c.id)
        .cte(f"audit_{n}")
    )


def outbox_entry(written: Any, n: int, entry: Any = None) -> Any:
    """The `n`th mail's outbox row (binds `mail_<n>_<column>`), inserted once per row `written` returns unless its
    (dedupe_key, kind) is there. NOT EXISTS rather than ON CONFLICT (whose compiled form SQLAlchemy does not
    cache): the writer holds the user's lock, which every writer of a subscription's transition mail takes first,
    so no other transaction adds the same mail meanwhile (and the unique key stays the last guard).

    A mail that follows a transition's audit entry (`entry`, its CTE) is inserted once per entry, its key the bound
    one followed by the entry's id: new with the entry, so nothing to look for."""
    table = cast(Table, MailOutbox.__table__)
    binds: dict[str, Any] = {name: bindparam(f"mail_{n}_{name}", type_=table.c[name].type) for name in OUTBOX_COLUMNS}
    if entry is not None:
        binds["dedupe_key"] = binds["dedupe_key"].concat(cast_(entry.c.id, String))
        rows = select(*binds.values()).select_from(entry)
    else:
        absent = ~exists().where(table.c.dedupe_key == binds["dedupe_key"], table.c.kind == binds["kind"])
        rows = select(*binds.values()).select_from(written).where(absent)
    return insert(table).from_select(list(OUTBOX_COLUMNS), rows).cte(f"mail_{n}")


def conversion_writes(written: Any, columns: list[str]) -> list[Any]:
    """The user's conversion row (the earliest time of each move, bind `at`) written once per row `written`
    returns (two CTEs: update it if it is there, insert it if not — both see the same snapshot, so exactly one
    acts): the ORM's listener on AuditLog does it for entries added through the session."""
    table = cast(Table, UserConversion.__table__)
    user_id = bindparam("owner_id", type_=table.c.user_id.type)
    at = {column: bindparam("at", type_=table.c[column].type) for column in columns}
    earliest = {
        column: case(
            (or_(table.c[column].is_(None), table.c[column] > at[column]), at[column]),
            else_=table.c[column],
        )
        for column in columns
    }
    mine = table.c.user_id == user_id
    updated = update(table).where(mine, exists(select(written.c.id))).values(earliest).cte("conversion_update")
    inserted = insert(table).from_select(
        ["user_id", *columns],
        select(user_id, *at.values()).select_from(written).where(~exists().where(mine)),
    )
    return [updated, inserted.cte("conversion_insert")]


#: The id of our row of a Stripe subscription, if there is one.
SUBSCRIPTION_ID_OF_STRIPE_ID = select(UserSubscription.id).where(
    UserSubscription.stripe_subscription_id == bindparam("subscription_id")
)


def write_subscription_with_orm(
    user: User | UserRef,
    subscription_id: str,
    row: SubscriptionRow | None,
    changes: dict[str, Any],
    moves: list[tuple[str, dict[str, Any]]],
    entries: list[AuditLog] | None = None,
) -> SubscriptionRow | None:
    """`write_subscription` through the session, for databases without data-modifying CTEs (SQLite); None when a
    row to insert is there already (nothing written). The audit entries added are appended to `entries`."""
    entity = db.session.get(UserSubscription, row.id) if isinstance(row, RowState) else row
    # Every value first (the plan's look-up may flush the session), then a new row joins the session whole.
    values = {name: plan_entity(value) if name == "plan" else value for name, value in changes.items()}
    if entity is None:
        if db.session.scalar(SUBSCRIPTION_ID_OF_STRIPE_ID, {"subscription_id": subscription_id}) is not None:
            return None  # there already: as the PostgreSQL statement, the insert writes nothing
        entity = UserSubscription(user_id=user.id, stripe_subscription_id=subscription_id)
        db.session.add(entity)
    for name, value in values.items():
        setattr(entity, name, value)
    for action, details in moves:
        entry = audit.record(action, user.id, subscription=subscription_id, **details)
        if entries is not None:
            entries.append(entry)
    return replace(row, **changes) if isinstance(row, RowState) else entity


#: The settings `billing_url` reads outside a request besides the URL map: its address stays the same while they do.
BILLING_URL_SETTINGS = ("APP_BASE_URL", "APPLICATION_ROOT", "SERVER_NAME", "PREFERRED_URL_SCHEME")


def mail_billing_url() -> str:
    """The billing page's address for a mail (`mail.billing_url`), built once per app and settings outside a request.

    Outside a request (a queue worker applying webhook events, the CLI's sync) `billing_url` builds a test request
    context for its `url_for` — most of a subscription event's mail CPU in the worker — for an address that depends
    only on the URL map and BILLING_URL_SETTINGS. In a request it depends on the request too (its host, outside
    production): built each time."""
    if has_request_context():
        return billing_url()
    known = current_app.extensions.setdefault("mail_billing_urls", {})
    settings = tuple(current_app.config.get(name) for name in BILLING_URL_SETTINGS)
    url = known.get(settings)
    if url is None:
        url = known[settings] = billing_url()
    return url


#: The mails keyed by their transition's audit entry (its id ends the key): a transition that can be undone and made
#: again within one period (a cancellation withdrawn, then made again) is mailed each time it is made, and never
#: twice for one — the entry is written once per transition, whoever finds it (the app's own sync, a webhook, two
#: servers). The others name what happens once: a period's start, the subscription's end.
KEYED_BY_AUDIT_ENTRY = frozenset({"cancellation_scheduled"})


def transition_mail(
    action: str,
    user: User | UserRef,
    subscription_id: str,
    fields: dict[str, Any],
    ended_for: str | None = None,
    previous: Snapshot | None = None,
) -> dict[str, Any] | None:
    """The outbox row of the mail that follows a transition (None: it has none), keyed by the transition so that
    none is ever sent twice. `fields` are the row's columns once written (`subscription_fields`).

    `ended_for` is Stripe's `cancellation_details.reason`: a subscription ended because its payment failed after
    every retry gets one mail saying so (the last failed attempt sends no dunning mail of its own). `previous` is
    the row before the change: a plan change that starts with a new period is a scheduled change taking effect.
    """
    plan, cycle = fields["plan"], fields["billing_cycle"]
    period_start, period_end = fields["current_period_start"], fields["current_period_end"]
    common = {"plan": plan.display_name, "cycle": cycle, "billing_url": mail_billing_url()}
    if action == "subscription.activated":
        return outbox_row(
            "subscription_activated",
            f"{subscription_id}:activated:{iso(period_start)}",
            user,
            renews=date(period_end),
            **common,
        )
    if action == "subscription.cancel_scheduled":
        return outbox_row(
            "cancellation_scheduled",
            f"{subscription_id}:cancel:{iso(period_end)}:audit-",  # + the transition's audit entry's id
            user,
            date=date(period_end),
            **common,
        )
    if action == "subscription.plan_changed" and took_effect_at_renewal(previous, period_start):
        assert previous is not None  # took_effect_at_renewal answers False without it
        return outbox_row(
            "scheduled_change_applied",
            f"{subscription_id}:plan:{iso(period_start)}",
            user,
            previous_plan=plan_display_name(previous.plan),
            amount=f"{money(plan.price_for(cycle))} a {'year' if cycle == 'yearly' else 'month'}",
            renews=date(period_end),
            **common,
        )
    if action == "subscription.canceled":
        return outbox_row(
            "subscription_ended",
            f"{subscription_id}:ended",
            user,
            payment_failed=ended_for == "payment_failed",
            **common,
        )
    return None


def took_effect_at_renewal(previous: Snapshot | None, period_start: datetime | None) -> bool:
    """A plan change whose new period (starting at `period_start`) starts where the old one ended: a change
    scheduled for the period end (a schedule's next phase) has just applied, unlike a change made now, which keeps
    the period or restarts it mid-way."""
    if previous is None or previous.period_end is None or period_start is None:
        return False
    return period_start >= previous.period_end


#: Statuses of a subscription that is over: its schedule, if any, is canceled with it.
ENDED_STATUSES = ("canceled", "incomplete_expired")


def scheduled_price_changes(sub: dict[str, Any]) -> list[tuple[str, int | None]]:
    """The prices the subscription's schedule (expanded) will move it to, each with the start of its phase, soonest
    first: the phases still to come whose price is not the current one. None without an active schedule (a
    subscription's `schedule` is its id unless expanded: none then either).

    A phase still to come starts at or after the end of the current one (Stripe's `current_phase`; none before the
    schedule starts): a phase that has begun is the plan the customer is on, and one that is over is history,
    which the schedule keeps until it is released.
    """
    schedule = sub.get("schedule")
    if not isinstance(schedule, dict) or schedule.get("status") not in ("active", "not_started"):
        return []
    current_price = subscription_price_id(sub)
    current_phase = schedule.get("current_phase") if schedule.get("status") == "active" else None
    upcoming = [
        phase
        for phase in schedule.get("phases") or []
        if current_phase is None or (phase.get("start_date") or 0) >= (current_phase.get("end_date") or 0)
    ]
    changes = []
    for phase in sorted(upcoming, key=lambda phase: phase.get("start_date") or 0):
        items = phase.get("items") or []
        price_id = id_of(items[0].get("price")) if items else None
        if price_id and price_id != current_price:
            changes.append((price_id, phase.get("start_date")))
    return changes


def scheduled_change_key(subscription_id: str, schedule_id: str, price_id: str, at: datetime | None) -> str:
    """The outbox key of the "plan_change_scheduled" mail: one mail per subscription schedule, new price and date,
    whoever scheduled the change (the app's plan change, the Customer Portal, the Dashboard) and however often a
    webhook or a sync reads it. The schedule names the change as made: one withdrawn (its schedule released: "Keep",
    a cancellation, a change made now) and asked for again is a new schedule, mailed again."""
    on = at.astimezone(UTC).isoformat() if at else "period-end"
    return f"{subscription_id}:scheduled:{price_id}:{on}:{schedule_id}"


def plan_change_scheduled_row(
    user: User | UserRef,
    subscription_id: str,
    schedule_id: str,
    price_id: str,
    current: tuple[PlanView | SubscriptionPlan, str],
    new: tuple[PlanView | SubscriptionPlan, str],
    at: datetime | None,
) -> dict[str, Any]:
    """The outbox row of the "plan_change_scheduled" mail: the subscription moves from `current` to `new` (each a
    plan and its cycle) at `at`, the end of the paid period, by the subscription schedule `schedule_id` — when, what
    it will cost, what it takes away, and where to keep the current plan. The app's plan change queues it as it
    schedules the change, the sync when it finds a change scheduled elsewhere (`scheduled_change_mail`); the key
    (`scheduled_change_key`) keeps it to one."""
    (plan, cycle), (previous, previous_cycle) = new, current
    price = plan.price_for(cycle)
    return outbox_row(
        "plan_change_scheduled",
        scheduled_change_key(subscription_id, schedule_id, price_id, at),
        user,
        plan=plan.display_name,
        cycle=cycle,
        previous_plan=previous.display_name,
        previous_cycle=previous_cycle,
        date=date(at) if at else "the end of your current period",
        amount=f"{money(price)} a {'year' if cycle == 'yearly' else 'month'}" if price is not None else None,
        losses=losses_between(previous.name, plan.name),
        billing_url=mail_billing_url(),
    )


def scheduled_change_mail(user: User | UserRef, sub: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any] | None:
    """The "plan_change_scheduled" mail of the plan change the subscription's schedule will make, whoever scheduled
    it; None when no schedule is attached or it changes no price we sell. The Customer Portal schedules a cheaper
    plan at the period end (`schedule_at_period_end`) as the app does: its change reaches us only as
    `customer.subscription.updated` (the schedule attached) or in a sync, and is mailed as the app's own is. A
    change the app made was mailed as it was made, under the same key (the same schedule): the outbox keeps one. A
    withdrawn change sends nothing, as a withdrawn cancellation does not; asked for again, it is a new schedule,
    mailed again.

    Only a subscription with a schedule attached costs anything (rare: from a change being scheduled until the
    schedule's last phase ends and releases it): a sync lists subscriptions with their schedules expanded; a
    webhook's object names its schedule only, which is read with the subscription (one Stripe call per such event). The mail joins the row's write (no query of its own), or, when
    the row has nothing to write, is inserted alone unless its key is there.
    """
    if not sub.get("schedule") or fields["status"] in ENDED_STATUSES:
        return None
    live = sub if isinstance(sub["schedule"], dict) else stripe_gateway.retrieve_subscription(sub["id"], ["schedule"])
    current = plan_view_for_price(subscription_price_id(live))
    if current is None:
        return None
    for price_id, start in scheduled_price_changes(live):
        new = plan_view_for_price(price_id)
        if new is not None:
            schedule_id = live["schedule"]["id"]
            return plan_change_scheduled_row(
                user, sub["id"], schedule_id, price_id, current, new, from_timestamp(start)
            )
    return None


def rows_by_subscription_id(user: User | UserRef) -> dict[str, SubscriptionRow]:
    # populate_existing: rows this session loaded before the user's lock was granted may be stale, and an old
    # snapshot would audit a transition another transaction already audited. Their plans come along (the
    # snapshots read them).
    return {
        row.stripe_subscription_id: row
        for row in db.session.scalars(
            select(UserSubscription)
            .where(UserSubscription.user_id == user.id)
            .options(joinedload(UserSubscription.plan))
            .execution_options(populate_existing=True)
        )
    }


def sync_customer_in_transaction(
    customer_id: str, result: SyncResult | None = None, user: User | UserRef | None = None
) -> SyncResult:
    """`sync_customer` without the commit, for callers that own the transaction (the webhook endpoint). A caller
    holding the customer's user, locked, passes it (`user`) instead of having it looked up again."""
    result = result or SyncResult(None)
    user = user or find_user_for_customer(customer_id)
    if user is None:
        log.warning("stripe_customer_unknown", customer=customer_id)
        return result
    sync_user_rows(user, customer_id, result)
    return result


def sync_user_rows(
    user: User | UserRef, customer_id: str, result: SyncResult, rows: dict[str, SubscriptionRow] | None = None
) -> dict[str, SubscriptionRow]:
    """Apply the customer's subscriptions from Stripe to the rows of `user` (locked by the caller); the rows after,
    by Stripe id. A caller that has read the user's rows since taking the lock passes them (`rows`)."""
    result.user_id = user.id
    rows = rows_by_subscription_id(user) if rows is None else rows
    horizon = event_horizon()
    # Schedules expanded: a pending plan change is read with its subscription (`scheduled_change_mail`).
    subscriptions = stripe_gateway.every(
        "subscriptions.list", customer=customer_id, status="all", limit=100, expand=["data.schedule"]
    )
    for sub in subscriptions:
        row = apply_subscription(user, sub, rows.get(sub["id"]), result, event_at=horizon)
        if row is None and sub["id"] not in rows:  # inserted by another transaction since: Stripe's state wins
            row = apply_subscription(user, sub, locked_row(sub["id"]), result, event_at=horizon)
        if row is not None:
            rows[sub["id"]] = row
    return rows


def locked_row(subscription_id: str) -> UserSubscription | None:
    """Our row of a Stripe subscription, locked, as committed now (not as this session last saw it)."""
    return db.session.scalar(
        select(UserSubscription)
        .where(UserSubscription.stripe_subscription_id == subscription_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def sync_customer(customer_id: str) -> SyncResult:
    """Read the customer's subscriptions from Stripe and make `user_subscriptions` equal to them.

    Serialised per user by a row lock taken before reading Stripe, so of two concurrent syncs the later one
    reads the later state. Idempotent: a second call changes nothing and audits nothing. Commits, then sends
    `subscription_changed`.
    """
    result = sync_customer_in_transaction(customer_id)
    commit_billing(result)
    return result
