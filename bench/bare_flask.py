"""The physical floor of a request: a bare Flask app with one `hello` route, nothing of the `app` package.

Served like the app (`gunicorn -c deploy/gunicorn.conf.py bench.bare_flask:app`) or called in process by
bench/request_overhead.py, it is the baseline the app's own `/bench/hello` and pages are divided by.
"""

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello() -> str:
    """The cheapest page Flask can serve."""
    return "hello"
