"""The deployment guide's seeding script: `python scripts/seed_plans.py` (same code as `flask seed-plans`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click  # noqa: E402
from dotenv import load_dotenv  # noqa: E402

from app import create_app  # noqa: E402
from app.cli import readable_errors, run_seed  # noqa: E402


def main() -> int:
    load_dotenv(Path(__file__).resolve().parent.parent / ".env")
    app = create_app()
    with app.app_context():
        try:
            with readable_errors():  # the database down or not migrated: one line, as `flask seed-plans` says it
                run_seed()
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
