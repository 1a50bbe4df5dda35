"""The data model; importing this package registers every table on `db.metadata`."""

from app.models.alert import SIGNAL_DELIVERIES, SIGNAL_SIDES, AlertSignal, AlertWatch
from app.models.audit import AuditLog
from app.models.auth import AUTH_SESSION_KINDS, AuthSession, VerifiedEmail
from app.models.base import utcnow
from app.models.conversion import UserConversion
from app.models.daily import DailyCount, DailySubscriptionChange
from app.models.mail import MAIL_KINDS, MailOutbox
from app.models.plan import BILLING_CYCLES, PlanFeature, SubscriptionPlan
from app.models.strategy import AlertSettings, Backtest, Strategy
from app.models.stripe_event import StripeEvent
from app.models.subscription import ACCESS_STATUSES, LIVE_STATUSES, STATUSES, UserSubscription
from app.models.user import BILLING_EMAIL_LENGTH, User, normalize_email

__all__ = [
    "ACCESS_STATUSES",
    "AUTH_SESSION_KINDS",
    "AuthSession",
    "MAIL_KINDS",
    "MailOutbox",
    "AlertSettings",
    "AlertSignal",
    "AlertWatch",
    "AuditLog",
    "Backtest",
    "BILLING_CYCLES",
    "DailyCount",
    "DailySubscriptionChange",
    "LIVE_STATUSES",
    "PlanFeature",
    "SIGNAL_DELIVERIES",
    "SIGNAL_SIDES",
    "STATUSES",
    "Strategy",
    "StripeEvent",
    "SubscriptionPlan",
    "User",
    "UserConversion",
    "UserSubscription",
    "VerifiedEmail",
    "normalize_email",
    "BILLING_EMAIL_LENGTH",
    "utcnow",
]
