"""The deployment guide's seeding script: `python scripts/seed_plans.py` (same code as `flask seed-plans`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dotenv import load_dotenv  # noqa: E402

from app import create_app  # noqa: E402
from app.cli import one_line_or_exit, run_seed  # noqa: E402


def main() -> int:
    load_dotenv(Path(__file__).resolve().parent.parent / ".env")
    app = create_app()
    with app.app_context(), one_line_or_exit():  # the database down or not migrated: one line, as `flask seed-plans`
        run_seed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
