"""`gunicorn -c deploy/gunicorn.conf.py wsgi:app`: the settings of the repository root's gunicorn.conf.py (the file
gunicorn reads by itself when started from the root), loaded from there so that both ways run the same config."""

import runpy
from pathlib import Path

globals().update(
    {
        name: value
        for name, value in runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py")).items()
        if not name.startswith("__")
    }
)
