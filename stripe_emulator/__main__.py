"""``python -m stripe_emulator --port 12111 [--state PATH] [--api-key sk_test_... | --any-test-key]
[--webhook URL --webhook-secret whsec_...]``"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from werkzeug.serving import make_server

from .billing import DEFAULT_API_KEY, Config
from .emulator import Emulator
from .errors import masked_key
from .server import create_app


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m stripe_emulator",
        description="Stateful offline Stripe emulator (API, hosted pages, webhooks, clock).",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=12111)
    ap.add_argument(
        "--state",
        default=os.path.join("instance", "stripe_emulator.json"),
        help="JSON state file (default: instance/stripe_emulator.json); ':memory:' keeps nothing",
    )
    keys = ap.add_mutually_exclusive_group()
    keys.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="SK_TEST_KEY",
        help=f"the secret key clients must send (repeatable; default: {DEFAULT_API_KEY}, the key the app uses "
        "without STRIPE_SECRET_KEY); any other key gets Stripe's 401",
    )
    keys.add_argument(
        "--any-test-key",
        action="store_true",
        help="accept any sk_test_... key (a mistyped key then goes unnoticed until real Stripe refuses it)",
    )
    ap.add_argument(
        "--public-url", default=None, help="base URL for hosted pages (default: the address the client used)"
    )
    ap.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="deliver every event to URL (repeatable, pairs with --webhook-secret)",
    )
    ap.add_argument(
        "--webhook-secret",
        action="append",
        default=[],
        metavar="WHSEC",
        help="signing secret for the matching --webhook",
    )
    ap.add_argument(
        "--failed-renewal-outcome",
        choices=["canceled", "unpaid"],
        default="canceled",
        help="subscription status after the last failed payment attempt",
    )
    ap.add_argument("--payment-attempts", type=int, default=3, help="charge attempts per invoice")
    ap.add_argument("--retry-interval-days", type=int, default=3, help="days between payment attempts")
    ap.add_argument(
        "--webhook-retry-schedule",
        default="0.5,1,2,4",
        help="seconds between webhook delivery attempts (comma separated)",
    )
    ap.add_argument("--webhook-max-attempts", type=int, default=5)
    ap.add_argument("--quiet", action="store_true", help="no request log")
    args = ap.parse_args(argv)
    if len(args.webhook_secret) not in (0, len(args.webhook)) or (args.webhook and not args.webhook_secret):
        ap.error("give one --webhook-secret per --webhook")
    for key in args.api_key or ():
        if not key.startswith("sk_test_") or len(key) <= len("sk_test_"):
            ap.error(f"--api-key must be a test secret key (sk_test_...), not {masked_key(key)}")
    return args


def accepted_keys(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The keys answered: those given, the default one, or None (any test key) with ``--any-test-key``."""
    if args.any_test_key:
        return None
    return tuple(args.api_key or (DEFAULT_API_KEY,))


def main(argv=None) -> int:
    args = parse_args(argv)
    config = Config(
        public_url=args.public_url,
        failed_renewal_outcome=args.failed_renewal_outcome,
        payment_attempts=args.payment_attempts,
        retry_interval_days=args.retry_interval_days,
        webhooks=list(zip(args.webhook, args.webhook_secret, strict=True)),
        api_keys=accepted_keys(args),
    )
    state = None if args.state == ":memory:" else args.state
    emulator = Emulator(
        state_path=state,
        config=config,
        retry_schedule=[float(x) for x in args.webhook_retry_schedule.split(",")],
        max_attempts=args.webhook_max_attempts,
    )
    emulator.store.save()
    app = create_app(emulator)
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(args.host, args.port, app, threaded=True)
    print(
        f"Stripe emulator on http://{args.host}:{args.port} (state: {state or 'memory'}; "
        f"webhooks: {', '.join(args.webhook) or 'none'}; API keys: "
        f"{', '.join(map(masked_key, config.api_keys)) if config.api_keys is not None else 'any sk_test_ key'})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
