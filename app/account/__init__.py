"""Sign-up, log-in, log-out and the account page."""

from app.account.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
