"""Sign-up (the same answer whether the address has an account), log-in, passwords (change and reset by mail), email verification, login-email changes by mail,
operator-created accounts.

Reset, verification and email-change links are itsdangerous signed, timed tokens (SECRET_KEY, one salt per
purpose). A reset token names the user and a fingerprint of the current password hash, so it works once: the reset
changes the hash. An email-change token names the user, the login email it replaces, the password fingerprint and
the user's count of "Sign out everywhere", so it works once (the change replaces that email) and dies with a
password change or a sign-out everywhere (the notice mailed to the old address offers both against a change the
owner did not ask for). Every password change and every login-email change ends the user's other sessions and API
token families.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from flask import current_app, g
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.logging import get_logger
from app.models import AuditLog, User, VerifiedEmail, normalize_email, utcnow
from app.ratelimits import count_failed_login, describe_wait, login_wait, may_mail_account, may_mail_address
from app.services import DomainError, mail, sessions, stripe_gateway
from app.services.audit import record
from app.services.strategies import backtests_since_query, month_start, strategies_count_query
from app.urls import external_url

log = get_logger(__name__)

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
#: The bundled list of common passwords (NIST SP 800-63B: refuse passwords known from breaches); where it comes
#: from is at its top.
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt"
#: A reset link is valid this long (and only until the password changes).
RESET_MAX_AGE = 3600
#: A verification link is valid this long.
VERIFY_MAX_AGE = 3 * 24 * 3600
#: An email-change link is valid this long (and only while the login email and password are unchanged and the user
#: did not sign out everywhere).
EMAIL_CHANGE_MAX_AGE = 3600
RESET_SALT, VERIFY_SALT, EMAIL_CHANGE_SALT = "password-reset", "email-verification", "email-change"
#: The answer for an address another account logs in with: the same whenever it is found (request or confirmation).
EMAIL_TAKEN_MESSAGE = "This email cannot be used for your account: choose another address."


class AccountError(DomainError):
    code = "account_error"
    #: The page a web flow sends the person back to with the message (None: the view's own fallback).
    back_to: str | None = None


@cache
def common_passwords() -> frozenset[str]:
    """The bundled list, lower-cased, read once per process."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


@cache
def dummy_hash() -> str:
    """A hash to check a password against when the email names nobody, so both answers take the same time."""
    return generate_password_hash(secrets.token_urlsafe(16))


#: What a new password is refused for (each `weak_password`, shown on the password field), in the order checked.
COMMON_PASSWORD_MESSAGE = "This password is one of the most common ones and easy to guess: choose another."
SIMPLE_PASSWORD_MESSAGE = (
    "This password is only repeated or consecutive characters (like aaaaaaaa, abcd1234 or 87654321) and easy to "
    "guess: choose another."
)
EMAIL_PASSWORD_MESSAGE = (
    "This password contains your email address (or the part before the @) and is easy to guess: choose another."
)
#: A local part shorter than this is not looked for inside a password ("jo@…" would refuse every "jo").
MIN_EMAIL_NAME_IN_PASSWORD = 4
#: The longest group of characters whose mere repetition is refused (abababab, 123123123, xyzwxyzw).
MAX_REPEATED_GROUP = 4


def check_new_password(password: str, email: str | None = None) -> None:
    """Raise AccountError (`weak_password`) for a new password that NIST SP 800-63B (§5.1.1.2) says to refuse:
    too short or too long, in the bundled list of common passwords (also with only digits or symbols added at
    its ends: Password1!, 2024football), only repeated or consecutive characters, or containing the account's
    email or the name before its @. Compared case-insensitively; reading nothing but the password, the email and
    the list, it answers the same whether or not the address has an account. Existing passwords are never checked
    again: log-in takes them as they are."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.", code="weak_password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"Password must be at most {MAX_PASSWORD_LENGTH} characters.", code="weak_password")
    lowered = password.strip().lower()
    if is_common_password(lowered):
        raise AccountError(COMMON_PASSWORD_MESSAGE, code="weak_password")
    if is_simple_pattern(lowered):
        raise AccountError(SIMPLE_PASSWORD_MESSAGE, code="weak_password")
    if email and contains_email(lowered, normalize_email(email)):
        raise AccountError(EMAIL_PASSWORD_MESSAGE, code="weak_password")


def is_common_password(lowered: str) -> bool:
    """Whether the (lower-cased) password is in the list, as it is or once the digits and symbols at its ends are
    taken off ("password1!" is "password" to whoever guesses)."""
    common = common_passwords()
    return lowered in common or _letters_within(lowered) in common


def _letters_within(text: str) -> str:
    """`text` without the characters other than letters at its start and end."""
    start, end = 0, len(text)
    while start < end and not text[start].isalpha():
        start += 1
    while end > start and not text[end - 1].isalpha():
        end -= 1
    return text[start:end]


def is_simple_pattern(text: str) -> bool:
    """Whether `text` is one run of a repeated character or of consecutive ones (aaaaaaaa, abcdefgh, 98765432), two
    such runs joined (aaaa1111, abcd1234, 1234zyxw), or a short group repeated (abababab, 123123123)."""
    # Two runs joined: the longest run it starts with and the longest it ends with cover it (a part of a run is one).
    if _run_length(text) + _run_length(text[::-1]) >= len(text):
        return True
    return any(
        len(text) % size == 0 and text == text[:size] * (len(text) // size) for size in range(1, MAX_REPEATED_GROUP + 1)
    )


def _run_length(text: str) -> int:
    """The length of the longest start of `text` whose characters each repeat their predecessor, or each come just
    after it, or each just before it (in code points: abc, 321)."""
    if len(text) < 2:
        return len(text)
    step = ord(text[1]) - ord(text[0])
    if step not in (-1, 0, 1):
        return 1
    length = 2
    while length < len(text) and ord(text[length]) - ord(text[length - 1]) == step:
        length += 1
    return length


def contains_email(lowered: str, email: str) -> bool:
    """Whether the password contains the address, or the name before its @ (with or without its dots, dashes and
    +tag) when that name is long enough to mean something."""
    if email in lowered:
        return True
    name = email.partition("@")[0]
    bare = re.sub(r"[^a-z0-9]", "", lowered)
    for candidate in {name, name.partition("+")[0]}:
        if len(candidate) < MIN_EMAIL_NAME_IN_PASSWORD:
            continue
        squeezed = re.sub(r"[^a-z0-9]", "", candidate)
        if candidate in lowered or (len(squeezed) >= MIN_EMAIL_NAME_IN_PASSWORD and squeezed in bare):
            return True
    return False


def find_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == normalize_email(email)))


def create_user(email: str, password: str, is_admin: bool = False) -> User:
    """Create an account; raises AccountError when the email is taken or the password too weak."""
    email = normalize_email(email)
    check_new_password(password, email)
    if find_user_by_email(email) is not None:
        raise AccountError("An account with this email already exists.", code="email_taken", status=409)
    user = User(email=email, is_admin=is_admin)
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:  # a concurrent sign-up with the same email won the race
        db.session.rollback()
        raise AccountError("An account with this email already exists.", code="email_taken", status=409) from None
    db.session.add(AuditLog(user_id=user.id, action="user.created", details={"is_admin": is_admin}))
    db.session.commit()
    return user


def sign_up(email: str, password: str, plan: str | None = None, cycle: str | None = None) -> str:
    """Open an account and mail the link that confirms its address (leading on to the paid plan chosen on the way,
    `plan` and `cycle`); for an address an account already logs in with, mail that account's owner a notice instead.

    The caller answers both alike ("check your email"), so that sign-up tells nobody which addresses have an
    account, as log-in, the token endpoint and the reset form tell nobody: the password is hashed either way (the
    same time), and either mail leaves after the response. A password too weak is refused (AccountError
    `weak_password`) before the address is looked at, whichever it is. Returns the normalised address.
    """
    email = normalize_email(email)
    check_new_password(password, email)
    existing = find_user_by_email(email)
    if existing is None:
        try:
            user = create_user(email, password)
        except AccountError as error:
            if error.code != "email_taken":
                raise
            existing = find_user_by_email(email)  # a concurrent sign-up with the address won the race
        else:
            send_verification(user, plan, cycle)
            return email
    generate_password_hash(password)  # the time creating the account takes, which the answer must not tell apart
    if existing is not None:
        send_signup_notice(existing)
    return email


def authenticate(email: str, password: str) -> User | None:
    """The user with this email and password, or None (the same answer, in the same time, for a wrong email).

    Failed log-ins are counted per email address typed, whichever client sends them (RATELIMIT_LOGIN_EMAIL): once
    they are spent, AccountError (429, `too_many_requests`, as the per-client limit answers) until the window ends,
    whether or not an account uses the address, and without checking the password (so in the same time either way).
    The window is short: someone spending another's budget keeps its owner out for minutes, not for good."""
    wait = login_wait(email)
    if wait is not None:
        g.retry_after = wait  # the answer's Retry-After (app.errors.keep_told_wait), as its message says
        raise AccountError(
            f"Too many attempts. Please wait {describe_wait(wait)} and try again.", code="too_many_requests", status=429
        )
    user = find_user_by_email(email)
    if user is None:
        check_password_hash(dummy_hash(), password)
    elif user.check_password(password):
        return user
    count_failed_login(email)
    return None


def change_password(
    user: User, current: str, new: str, keep_session: str | None = None, renew_session: timedelta | None = None
) -> str | None:
    """Set a new password after checking the current one; every other session and token of the user ends.

    With `renew_session` (the browser's session lifetime) the session it was changed in ends too, and a new web
    session replaces it in the same commit: its id is returned for the browser's cookie. A copy of the old cookie
    (which may be why the password is being changed) then opens nothing, while this browser stays logged in."""
    if not user.check_password(current):
        raise AccountError("The current password is incorrect.", code="wrong_password")
    return set_new_password(
        user, new, reason="password_changed", keep_session=keep_session, renew_session=renew_session
    )


def set_new_password(
    user: User, new: str, reason: str, keep_session: str | None = None, renew_session: timedelta | None = None
) -> str | None:
    """Hash and store `new`, end the user's sessions (but `keep_session`), audit, commit. With `renew_session`,
    every session ends and a new web session of that lifetime is started: its id is returned."""
    check_new_password(new, user.email)
    user.set_password(new)
    sessions.revoke_all(user.id, reason, keep=None if renew_session is not None else keep_session)
    renewed = sessions.start(user.id, sessions.WEB, renew_session) if renew_session is not None else None
    record(f"user.{reason}", user.id)
    db.session.commit()
    return renewed.id if renewed is not None else None


def sign_out_everywhere(user: User) -> None:
    """End every session and API token family of the user, and every login-email change link mailed so far: the
    notice to the old address tells its owner that this makes a change they did not ask for impossible."""
    user.logouts_everywhere = User.logouts_everywhere + 1
    sessions.revoke_all(user.id, "logout_everywhere")
    db.session.commit()


def serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def password_fingerprint(user: User) -> str:
    """Changes whenever the password does: binds a reset link to the password it replaces."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:32]


def password_reset_token(user: User) -> str:
    return serializer(RESET_SALT).dumps({"user": user.id, "password": password_fingerprint(user)})


def user_for_reset_token(token: str) -> User | None:
    """The user a reset link is for, while it is under an hour old and the password unchanged; else None."""
    try:
        data = serializer(RESET_SALT).loads(token, max_age=RESET_MAX_AGE)
    except BadData:
        return None
    user = user_from_token_data(data)
    if user is None or not secrets.compare_digest(str(data.get("password")), password_fingerprint(user)):
        return None
    return user


def reset_password(token: str, new: str) -> User:
    """Set the password a valid reset link allows; every session and token of the user ends."""
    user = user_for_reset_token(token)
    if user is None:
        raise AccountError("This reset link is invalid, used or expired: ask for a new one.", code="invalid_link")
    set_new_password(user, new, reason="password_reset")
    return user


def email_verification_token(user: User) -> str:
    return serializer(VERIFY_SALT).dumps({"user": user.id, "email": user.email})


def verify_email(token: str) -> User:
    """Record that the user owns the address a verification link was sent to (still their login email)."""
    try:
        data = serializer(VERIFY_SALT).loads(token, max_age=VERIFY_MAX_AGE)
    except BadData:
        data = None
    user = user_from_token_data(data)
    if user is None or data.get("email") != user.email:
        raise AccountError("This verification link is invalid or expired: ask for a new one.", code="invalid_link")
    row = db.session.get(VerifiedEmail, user.id)
    if row is None:
        db.session.add(VerifiedEmail(user_id=user.id, email=user.email, verified_at=utcnow()))
    elif row.email != user.email:
        row.email, row.verified_at = user.email, utcnow()
    record("user.email_verified", user.id)
    db.session.commit()
    return user


def is_email_verified(user: User) -> bool:
    row = db.session.get(VerifiedEmail, user.id)
    return row is not None and row.email == user.email


@dataclass(frozen=True)
class AccountFacts:
    """What the account page shows beyond the user and their plan: whether the login email is confirmed, and the
    usage counted against the plan's limits (`strategies_max`, `backtests_per_month`)."""

    email_verified: bool
    used: dict[str, int]


#: The account page's usage counts and confirmed address: columns over `:user_id` and `:since`
#: (`account_fact_params`), which the log-in check reads on that page (`viewer.read_with_login_check`).
ACCOUNT_FACT_COLUMNS = (
    strategies_count_query(bindparam("user_id")).scalar_subquery(),
    backtests_since_query(bindparam("user_id"), bindparam("since")).scalar_subquery(),
    select(VerifiedEmail.email).where(VerifiedEmail.user_id == bindparam("user_id")).scalar_subquery(),
)
#: The same columns in one statement of their own, built once.
_ACCOUNT_FACTS = select(*ACCOUNT_FACT_COLUMNS)


def account_fact_params() -> dict[str, Any]:
    """The parameters of ACCOUNT_FACT_COLUMNS besides `user_id`: backtests count from the start of the month."""
    return {"since": month_start()}


def account_facts(user: User, read: Sequence[Any] | None = None) -> AccountFacts:
    """The account page's confirmation state and usage counts: from the values of ACCOUNT_FACT_COLUMNS already
    `read` (with the log-in check), else in one statement."""
    if read is None:
        read = db.session.execute(_ACCOUNT_FACTS, {"user_id": user.id, **account_fact_params()}).one()
    strategies, backtests, email = read
    return AccountFacts(
        email_verified=email is not None and email == user.email,
        used={"strategies_max": strategies or 0, "backtests_per_month": backtests or 0},
    )


def email_confirmation_pending(user: User) -> bool:
    """Whether the user must still confirm their login email before paying.

    REQUIRE_VERIFIED_EMAIL turns the requirement off (it is off by default only under ENVIRONMENT=testing, whose
    tests pay right after signing up); Free works either way.
    """
    required = current_app.config.get("REQUIRE_VERIFIED_EMAIL")
    if required is None:
        required = current_app.config["ENVIRONMENT"] != "testing"
    return bool(required) and not is_email_verified(user)


def require_verified_email(user: User) -> None:
    """Raise AccountError (`email_unverified`, 403) before a payment by a user whose login email is unconfirmed."""
    if email_confirmation_pending(user):
        error = AccountError(
            f"Confirm your email before upgrading: open the link we sent to {user.email} (“Mail the link again” "
            "on your account page sends a new one).",
            code="email_unverified",
            status=403,
        )
        error.back_to = "account.show_account"  # where the web flow shows the message
        raise error


def user_from_token_data(data: object) -> User | None:
    """The user a signed token's payload names (the signature already vouches for the payload)."""
    if not isinstance(data, dict) or not isinstance(data.get("user"), int):
        return None
    return db.session.get(User, data["user"])


def send_password_reset(email: str) -> None:
    """Mail a reset link when the email names an account; nothing otherwise. The caller answers the same, and as
    soon: the mail leaves on the task queue or after the response, never inside the request (SMTP's time would tell
    which emails have an account). An account whose reset mails of the hour are spent (RATELIMIT_ACCOUNT_MAIL_RECIPIENT)
    gets none either: asking from many addresses must not fill one person's mailbox, and the answer stays the same."""
    user = find_user_by_email(email)
    if user is None:
        return
    if not may_mail_account(user.id, "password_reset"):
        log.warning("account_mail_capped", kind="password_reset", user_id=user.id)
        return
    link = external_url("account.reset_password", token=password_reset_token(user))
    mail.queue_mail("password_reset", secrets.token_hex(8), user, link=link, minutes=RESET_MAX_AGE // 60)
    db.session.commit()
    mail.request_delivery()


def send_verification(user: User, plan: str | None = None, cycle: str | None = None) -> bool:
    """Mail a link that proves the user owns their login email; with the paid plan they chose on the way (`plan`,
    `cycle`), the link leads on to reviewing it once the address is confirmed (Checkout waits for that).

    False, and no mail, once the account's verification mails of the hour are spent: the login email of an account
    not yet confirmed may be anyone's, and asking again from many addresses must not fill that mailbox."""
    if not may_mail_account(user.id, "verify_email"):
        log.warning("account_mail_capped", kind="verify_email", user_id=user.id)
        return False
    choice = {"plan": plan, "cycle": cycle} if plan and cycle else {}
    link = external_url("account.verify_email", token=email_verification_token(user), **choice)
    mail.queue_mail("verify_email", secrets.token_hex(8), user, link=link, days=VERIFY_MAX_AGE // 86400)
    db.session.commit()
    mail.request_delivery()
    return True


def send_signup_notice(user: User) -> None:
    """Tell an account's owner that someone tried to sign up with their address, and how to get in (log in, or
    reset the password): it may be the owner, who forgot the account. Within the account's own cap of such mails
    (RATELIMIT_ACCOUNT_MAIL_RECIPIENT): signing up with one address over and over must not fill its mailbox."""
    if not may_mail_account(user.id, "signup_attempt"):
        log.warning("account_mail_capped", kind="signup_attempt", user_id=user.id)
        return
    mail.queue_mail(
        "signup_attempt",
        secrets.token_hex(8),
        user,
        login_url=external_url("account.login"),
        reset_url=external_url("account.forgot_password"),
    )
    record("user.signup_attempted", user.id)
    db.session.commit()
    mail.request_delivery()


# ---------------------------------------------------------------------------------------------------------------
# Changing the login email: a link to the new address, a notice to the old one, nothing changes until it is opened
# ---------------------------------------------------------------------------------------------------------------


def email_taken(email: str, user: User) -> bool:
    """Whether another account logs in with `email`."""
    return db.session.scalar(select(User.id).where(User.email == email, User.id != user.id)) is not None


def email_change_token(user: User, new_email: str) -> str:
    """A link's token for moving the user from their current login email to `new_email` (see the module doc)."""
    payload = {
        "user": user.id,
        "from": user.email,
        "to": new_email,
        "password": password_fingerprint(user),
        "logouts": user.logouts_everywhere,
    }
    return serializer(EMAIL_CHANGE_SALT).dumps(payload)


def request_email_change(user: User, password: str, new_email: str) -> str:
    """Mail a confirmation link to `new_email` and a notice to the current address; the login email stays as it is.

    The current password is asked (a session left open is not enough). An address another account uses is
    answered alike, as sign-up answers it (any visitor can open an account, so a refusal here told anyone which
    addresses have one): its owner is mailed a notice that nothing changed instead of a link, and the requester's
    current address its usual notice. A change is refused once the links of the hour to that address, or from that
    account, are spent (`mail_capped`, RATELIMIT_ACCOUNT_MAIL_RECIPIENT), whichever the address. Returns the
    normalised address.
    """
    if not user.check_password(password):
        raise AccountError("The current password is incorrect.", code="wrong_password")
    new_email = normalize_email(new_email)
    if new_email == user.email:
        raise AccountError("This is already your login email.", code="same_email")
    # Each mail within its recipient's cap, as reset and verification mails are: the link's address (any number
    # of accounts could name it) and the account (its notice goes to the current address).
    if not (may_mail_address(new_email, "email_change") and may_mail_account(user.id, "email_change")):
        log.warning("account_mail_capped", kind="email_change", user_id=user.id)
        raise AccountError(
            f"We already sent several links for this change this hour: open the newest one at {new_email}, or ask "
            "again later.",
            code="mail_capped",
            status=429,
        )
    key = secrets.token_hex(8)
    old_email, minutes = user.email, EMAIL_CHANGE_MAX_AGE // 60
    if email_taken(new_email, user):
        mail.queue_mail(
            "email_change_taken",
            key,
            user,
            recipient=new_email,
            login_url=external_url("account.login"),
            reset_url=external_url("account.forgot_password"),
        )
    else:
        mail.queue_mail(
            "email_change",
            key,
            user,
            recipient=new_email,
            link=external_url("account.confirm_email_change", token=email_change_token(user, new_email)),
            old_email=old_email,
            new_email=new_email,
            minutes=minutes,
        )
    mail.queue_mail(
        "email_change_notice",
        key,
        user,
        account_url=external_url("account.show_account"),
        old_email=old_email,
        new_email=new_email,
        minutes=minutes,
    )
    record("user.email_change_requested", user.id)
    db.session.commit()
    mail.request_delivery()
    return new_email


def email_change_from_token(token: str) -> tuple[User, str]:
    """The (locked) user and new address a change link is for, while it is under an hour old, the user's login
    email and password are still the ones it was made for and they did not sign out everywhere since; AccountError
    (`invalid_link`) otherwise. A link made before links counted sign-outs (no `logouts`) counts as made under 0."""
    try:
        data = serializer(EMAIL_CHANGE_SALT).loads(token, max_age=EMAIL_CHANGE_MAX_AGE)
    except BadData:
        data = None
    user = user_from_token_data(data)
    if user is not None:
        db.session.refresh(user, with_for_update=True)
    if (
        user is None
        or not isinstance(data.get("to"), str)
        or data.get("from") != user.email
        or not secrets.compare_digest(str(data.get("password")), password_fingerprint(user))
        or data.get("logouts", 0) != user.logouts_everywhere
    ):
        db.session.rollback()
        raise AccountError("This link is invalid, used or expired: ask for the change again.", code="invalid_link")
    return user, data["to"]


def confirm_email_change(token: str, keep_session: str | None = None) -> User:
    """Make the address a change link was mailed to the user's login email (and their Stripe customer's email).

    Opening the link proves the address, so it counts as verified. Stripe is asked first: when it cannot be
    reached nothing changes, and the link (still valid) can be opened again. Every session and API token of the
    user but `keep_session` ends, as a password change does: the login identity changed, and a session someone
    opened with the old one must not outlive it.
    """
    user, new_email = email_change_from_token(token)
    if email_taken(new_email, user):
        db.session.rollback()
        raise AccountError(EMAIL_TAKEN_MESSAGE, code="email_taken", status=409)
    if user.stripe_customer_id:
        update_customer_email(
            user, user.stripe_customer_id, new_email, idempotency_key=f"customer-email-{user.id}-{token[-16:]}"
        )
    return switch_login_email(user, new_email, keep_session)


def update_customer_email(user: User, customer_id: str, new_email: str, idempotency_key: str) -> None:
    """Give the user's Stripe customer the new address, before the login email changes (the row stays locked).

    A customer Stripe no longer has is no reason to refuse (there is nothing to update); Stripe out of reach is:
    the change is rolled back with a message, and the link, still valid, can be opened again.
    """
    try:
        customer = stripe_gateway.update_customer_email(customer_id, new_email, idempotency_key=idempotency_key)
    except stripe_gateway.StripeObjectMissing:
        log.warning("email_change_customer_missing", user_id=user.id, customer=customer_id)
        return
    except DomainError:
        db.session.rollback()
        raise AccountError(
            "Billing could not be updated just now, so your email is unchanged: open the link again in a few minutes.",
            code="billing_unavailable",
            status=503,
        ) from None
    user.billing_email = customer.get("email") or new_email


def switch_login_email(user: User, new_email: str, keep_session: str | None) -> User:
    """Store the new login email as verified, end the other sessions, audit, commit."""
    user.email = new_email
    try:
        db.session.flush()
    except IntegrityError:  # an account took the address since the check
        db.session.rollback()
        raise AccountError(EMAIL_TAKEN_MESSAGE, code="email_taken", status=409) from None
    row = db.session.get(VerifiedEmail, user.id)
    if row is None:
        db.session.add(VerifiedEmail(user_id=user.id, email=new_email, verified_at=utcnow()))
    else:
        row.email, row.verified_at = new_email, utcnow()
    sessions.revoke_all(user.id, "email_changed", keep=keep_session)
    record("user.email_changed", user.id, source="verified_link")
    db.session.commit()
    return user
