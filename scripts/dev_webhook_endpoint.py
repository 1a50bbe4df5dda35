"""`make run`: register this app's webhook endpoint in the bundled emulator as an operator does in Stripe
(`flask stripe webhook-endpoint`), and keep its signing secret as the development STRIPE_WEBHOOK_SECRET in
`instance/dev-secrets.json` — so `flask doctor` finds the endpoint, and the secret the app checks is the one the
endpoint signs with.

The endpoint lives in the emulator's state file: while it is there it is reused; when the state is gone (or the
secret kept for it is), the endpoints at this URL are deleted and a new one is registered.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dotenv import load_dotenv  # noqa: E402

from app import create_app  # noqa: E402
from app.services import (
    DomainError,  # noqa: E402
    stripe_gateway,  # noqa: E402
)
from app.services.doctor import webhook_url  # noqa: E402
from app.services.stripe_admin import create_webhook_endpoint  # noqa: E402
from app.services.stripe_gateway import operator_message  # noqa: E402


def main() -> int:
    load_dotenv(Path(__file__).resolve().parent.parent / ".env")
    app = create_app()
    secrets_path = Path(app.instance_path) / "dev-secrets.json"
    stored = json.loads(secrets_path.read_text())
    with app.app_context():
        url = webhook_url()
        try:
            mine = [e for e in stripe_gateway.list_webhook_endpoints() if e.get("url") == url]
            if any(e["id"] == stored.get("STRIPE_WEBHOOK_ENDPOINT_ID") for e in mine):
                print(f"Webhook endpoint {stored['STRIPE_WEBHOOK_ENDPOINT_ID']} → {url}")
                return 0
            for endpoint in mine:  # registered before, its secret not kept: replaced
                stripe_gateway.delete_webhook_endpoint(endpoint["id"])
            endpoint, _created = create_webhook_endpoint(url)
        except DomainError as error:
            # The cause and its fix (the key refused, the emulator not answering), not the customer's message.
            print(f"could not register the webhook endpoint: {operator_message(error)}", file=sys.stderr)
            return 1
    stored.update(STRIPE_WEBHOOK_SECRET=endpoint["secret"], STRIPE_WEBHOOK_ENDPOINT_ID=endpoint["id"])
    secrets_path.write_text(json.dumps(stored, indent=2))
    secrets_path.chmod(0o600)
    print(f"Webhook endpoint {endpoint['id']} registered → {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
