"""The rate limits of the API, the billing pages and the account forms, and who a per-user limit counts.

Each limit is read from the configuration at request time, so a test or an operator can change it on a live app.
Log-in (the form and `/auth/token`) is one budget per client address, and failed log-ins have a budget per email
address typed (whichever client types it: many addresses guessing one account's password). Sign-up and the
account-mail forms have a budget per client address, and sign-up one per email address signed up with; reset and
verification mails also have a budget per account they go to (and email-change links a budget per address they go
to): many addresses asking for one person's reset would otherwise fill that person's mailbox. No budget is shared by
the whole site: a few clients spending it would have locked everyone out of signing up and resetting a password
(RATELIMIT_SIGNUP_GLOBAL and RATELIMIT_ACCOUNT_MAIL_GLOBAL are no longer read). RATELIMIT_ENABLED=false turns every
one of them off.
"""

from __future__ import annotations

import hashlib
import math
import time

from flask import current_app, request
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_limiter.util import get_remote_address
from flask_login import current_user
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from app.extensions import limiter
from app.logging import get_logger
from app.urls import is_api_request

log = get_logger(__name__)


def api_limit() -> str:
    """Every API route, per user or address (RATELIMIT_API)."""
    return current_app.config["RATELIMIT_API"]


def billing_limit() -> str:
    """Each route that calls Stripe for a person, API or web (RATELIMIT_BILLING)."""
    return current_app.config["RATELIMIT_BILLING"]


def login_limit() -> str:
    """Every way to log in together, per address (RATELIMIT_LOGIN)."""
    return current_app.config["RATELIMIT_LOGIN"]


#: The scope that makes the log-in form and `/auth/token` one budget.
LOGIN_SCOPE = "login"
DEFAULT_SIGNUP_LIMIT = "5 per minute;20 per hour"
DEFAULT_SIGNUP_EMAIL_LIMIT = "10 per hour"
DEFAULT_ACCOUNT_MAIL_LIMIT = "5 per minute;20 per hour"
DEFAULT_LOGIN_EMAIL_LIMIT = "10 per 15 minutes"


def signup_limit() -> str:
    """Sign-ups per client address (RATELIMIT_SIGNUP)."""
    return current_app.config.get("RATELIMIT_SIGNUP") or DEFAULT_SIGNUP_LIMIT


def signup_email_limit() -> str:
    """Sign-ups with one email address, whoever sends them (RATELIMIT_SIGNUP_EMAIL): each costs a deliberately slow
    password hash, and the address's owner a notice once it has an account (itself capped per account)."""
    return current_app.config.get("RATELIMIT_SIGNUP_EMAIL") or DEFAULT_SIGNUP_EMAIL_LIMIT


def account_mail_limit() -> str:
    """Password-reset, verification and email-change mails asked for, per address and per user (RATELIMIT_ACCOUNT_MAIL)."""
    return current_app.config.get("RATELIMIT_ACCOUNT_MAIL") or DEFAULT_ACCOUNT_MAIL_LIMIT


def login_email_limit() -> str:
    """Failed log-ins with one email address, from any client (RATELIMIT_LOGIN_EMAIL): a short window, so that
    someone typing wrong passwords for another's address keeps its owner out for minutes at most."""
    return current_app.config.get("RATELIMIT_LOGIN_EMAIL") or DEFAULT_LOGIN_EMAIL_LIMIT


def email_digest(email: str) -> str:
    """The key of a budget counted per email address: a digest of the address as accounts store it (trimmed,
    lower-cased), so that no address is written into the limit storage's keys."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def posted_email() -> str:
    """The key of a form's budget per email address typed into it (its `email` field), `-` for a post without one
    (refused by the form anyway: such posts share one budget, which no address's owner needs)."""
    email = request.form.get("email", "")
    return email_digest(email) if email.strip() else "-"


#: The scope of the failed log-ins counted per email address.
LOGIN_EMAIL_SCOPE = "login-email"


def login_wait(email: str) -> int | None:
    """Seconds until log-in with `email` is allowed again once its failed log-ins are spent; None while allowed.
    The same for an address no account uses: the answer tells nobody which addresses have one."""
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return None
    key = email_digest(email)
    items = parse_many(login_email_limit())
    try:
        strategy = limiter.limiter
        spent = [item for item in items if not strategy.test(item, LOGIN_EMAIL_SCOPE, key)]
    except Exception as error:  # noqa: BLE001 - any storage failure: counted in this process meanwhile
        log.warning("rate_limit_budget_unavailable", scope=LOGIN_EMAIL_SCOPE, error=type(error).__name__)
        strategy = in_memory_limiter()
        spent = [item for item in items if not strategy.test(item, LOGIN_EMAIL_SCOPE, key)]
    if not spent:
        return None
    try:
        reset_at = max(strategy.get_window_stats(item, LOGIN_EMAIL_SCOPE, key).reset_time for item in spent)
    except Exception:  # noqa: BLE001 - the window cannot be read: the longest the limit can mean
        return max(item.get_expiry() for item in spent)
    return max(1, math.ceil(reset_at - time.time()))


def count_failed_login(email: str) -> None:
    """Spend one of `email`'s failed log-ins (RATELIMIT_LOGIN_EMAIL)."""
    _spend(login_email_limit(), LOGIN_EMAIL_SCOPE, email_digest(email))


DEFAULT_ACCOUNT_MAIL_RECIPIENT_LIMIT = "3 per hour"


def account_mail_recipient_limit() -> str:
    """Password-reset mails, and verification mails, sent to one account whoever asks (RATELIMIT_ACCOUNT_MAIL_RECIPIENT)."""
    return current_app.config.get("RATELIMIT_ACCOUNT_MAIL_RECIPIENT") or DEFAULT_ACCOUNT_MAIL_RECIPIENT_LIMIT


def may_mail_account(user_id: int, kind: str) -> bool:
    """Spend one of the account's mails of this kind (`password_reset`, `verify_email`, `signup_attempt`,
    `email_change`); False once they are spent. Counted per account, not per address asking: the per-address budgets
    cannot stop many addresses asking for one person's mail."""
    return _spend(account_mail_recipient_limit(), f"account-mail-to-{kind}", user_id)


def may_mail_address(email: str, kind: str) -> bool:
    """`may_mail_account` for an address no account logs in with yet (the new address of an email change, which
    any number of accounts could name): counted per address, under a digest of it (no address in the limit
    storage's keys)."""
    digest = hashlib.sha256(email.encode()).hexdigest()[:32]
    return _spend(account_mail_recipient_limit(), f"address-mail-to-{kind}", digest)


DEFAULT_STRIPE_REFRESH_LIMIT = "4 per minute;30 per hour"


def stripe_refresh_limit() -> str:
    """Pages that read Stripe again for one user (the Portal's return, Checkout's success page), per user
    (RATELIMIT_STRIPE_REFRESH): a customer reloading them cannot spend the account's Stripe rate limit."""
    return current_app.config.get("RATELIMIT_STRIPE_REFRESH") or DEFAULT_STRIPE_REFRESH_LIMIT


def may_refresh_from_stripe(user_id: int) -> bool:
    """Spend one of the user's Stripe refreshes; False once they are spent (the page then shows the local copy)."""
    return _spend(stripe_refresh_limit(), "stripe-refresh", user_id)


#: The budgets of the pages' reads of Stripe, one per kind of read: a read that keeps failing on one page (a
#: subscription Stripe does not know: the account page's look-up caches nothing) never spends another page's.
BILLING_SUMMARY_READS, PLAN_OUTLOOK_READS = "stripe-read-billing", "stripe-read-outlook"


def may_read_stripe(user_id: int, scope: str) -> bool:
    """Spend one of the user's reads of Stripe for a page (RATELIMIT_BILLING, per `scope`): the billing page's card
    and invoices, the scheduled change the account page shows, read only when the cache has none. False once they
    are spent: the page then shows the local copy. A page served from the cache spends nothing, so reloading a page
    is never refused (a 429 on the eleventh look at one's own billing page protected nothing: Stripe was not
    asked)."""
    return _spend(billing_limit(), scope, user_id)


#: Where the budgets are counted while the limit storage (Redis) fails: in this process's memory, as Flask-Limiter's
#: own limits fall back to it (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED). Made at the first failure: the memory storage
#: runs a timer thread, which a process that never needs it should not start (nor a server's master fork).
_FALLBACK: list[FixedWindowRateLimiter] = []


def in_memory_limiter() -> FixedWindowRateLimiter:
    if not _FALLBACK:
        _FALLBACK.append(FixedWindowRateLimiter(MemoryStorage()))
    return _FALLBACK[0]


def _spend(limit: str, scope: str, user_id: int | str) -> bool:
    """Hit each of `limit`'s windows for the user in `scope`; False once one is spent. The limit storage being
    down is no reason to refuse, nor to read Stripe or send mail without limit (Redis down, the pages' cache is down
    too, and every view would read Stripe): the budget is counted in this process's memory meanwhile.
    With RATELIMIT_ENABLED false, as Flask-Limiter's own limits, these count nothing and never refuse."""
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return True
    items = parse_many(limit)
    try:
        return all(limiter.limiter.hit(item, scope, str(user_id)) for item in items)
    except Exception as error:  # noqa: BLE001 - any storage failure
        log.warning("rate_limit_budget_unavailable", scope=scope, error=type(error).__name__)
        return all(in_memory_limiter().hit(item, scope, str(user_id)) for item in items)


def seconds_until_allowed() -> int | None:
    """How long until this request's spent Flask-Limiter limits let the next request through: the latest reset of
    those it breached (a minute's window and an hour's both spent: the hour's), at least a second. None when it
    breached none (or their windows cannot be read: the storage failed meanwhile)."""
    try:
        breached = [limit for limit in limiter.current_limits if limit.breached]
        if not breached:
            return None
        return max(1, max(limit.reset_at for limit in breached) - int(time.time()))
    except Exception as error:  # noqa: BLE001 - any storage failure: the answer stays a 429 without the wait
        log.warning("rate_limit_reset_unavailable", error=type(error).__name__)
        return None


def describe_wait(seconds: int) -> str:
    """`45` -> "45 seconds", `200` -> "4 minutes", `7200` -> "2 hours": rounded up, never promising too short a wait."""
    if seconds <= 90:
        amount, unit = seconds, "second"
    elif seconds <= 90 * 60:
        amount, unit = math.ceil(seconds / 60), "minute"
    else:
        amount, unit = math.ceil(seconds / 3600), "hour"
    return f"{amount} {unit}{'' if amount == 1 else 's'}"


def rate_limit_identity() -> str:
    """Who a per-user rate limit counts: the logged-in user (pages), the bearer token's user (the API, which never
    looks at the session cookie: a browser's cookie sent along with another user's token counted that call to the
    cookie's user, and loaded that user for nothing), else the address."""
    if not is_api_request() and current_user.is_authenticated:
        return f"user:{current_user.id}"
    try:
        verified = verify_jwt_in_request(optional=True)
    except Exception:  # an invalid token is refused by the view itself; count it by address here
        verified = None
    if verified:
        return f"user:{get_jwt_identity()}"
    return f"addr:{get_remote_address()}"
