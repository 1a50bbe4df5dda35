"""The admin dashboard `/admin`: revenue, churn, conversions, failed payments, webhooks, audit, user lookup.

Only users with `is_admin` see it; to everyone else (anonymous included) it does not exist (404).
"""

from app.admin.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
