"""What a request costs in CPU instructions, counted by Valgrind's callgrind: the same count whatever else the machine
is doing, so that a change of a few per cent shows, where wrk's rates move by more than that between runs. Each phase
runs twice and the smaller count is shown.

The app runs as bench/request_overhead.py builds it (production settings, JSON logs written to /dev/null) and is
called through its WSGI callable, as is bench/bare_flask.py; each phase runs N requests, and callgrind's counters are
dumped between phases (`callgrind_control`), so each phase's count excludes start-up. `--pages` adds the Pro user's
logged-in `/account` and `/billing` (paid through the bundled emulator, which this script runs outside Valgrind;
logged in through the form from the same address and browser as the pages' requests, so that the session cookie,
as a browser's, stays the same from view to view). `--ablate` adds one phase per before-, after- and teardown hook
of the app, with that hook removed: what each one costs, on `--ablate-path` (the bare route by default). `--keep DIR`
keeps callgrind's dumps (for `callgrind_annotate`: the C functions a phase spends in, such as zlib's or libpq's).
Instruction counts leave out the kernel (the socket's send, the log line's write) and weigh a cache miss like a hit:
they say where the app's own code spends, not how fast a server is (that is bench/run.py's).

    .venv/bin/python bench/instructions.py [--requests 100] [--pages] [--ablate [--ablate-path PATH]] [--keep DIR]
        (needs valgrind: scripts/install-bench-deps.sh)
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stripe_emulator.testing import EmulatorServer  # noqa: E402

PATHS = ("/bench/hello", "/pricing")
#: The Pro user's logged-in pages (bench/request_overhead.py's: paid through the bundled emulator's Checkout, the
#: emulator run by this script's parent process, outside Valgrind), with `--pages`.
PAGES = ("/account", "/billing")


def environ_for(path: str, cookie: str | None = None) -> dict:
    """A request as the load balancer forwards it (HTTPS, from a trusted proxy), with `cookie` when given."""
    from werkzeug.test import EnvironBuilder

    headers = {"User-Agent": "wrk", "X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.1"}
    if cookie:
        headers["Cookie"] = cookie
    environ = EnvironBuilder(path=path, base_url="https://bench.example.com", headers=headers).get_environ()
    environ["REMOTE_ADDR"] = "127.0.0.1"
    return environ


def serve(app, environ: dict, requests: int) -> None:
    def start_response(status, headers, exc_info=None):
        return None

    for _ in range(requests):
        each = dict(environ)
        each["wsgi.input"] = io.BytesIO(b"")
        body = app(each, start_response)
        for _chunk in body:
            pass
        if hasattr(body, "close"):
            body.close()


def session_cookie(app) -> str:
    """The Cookie header of the Pro user, paid through the emulator's Checkout and logged in through the form."""
    from bench.request_overhead import logged_in_client, pay_in_emulator

    pay_in_emulator(app, os.environ["BENCH_EMULATOR_URL"])  # the parent's emulator, outside Valgrind
    # The browser of `environ_for`: Flask-Login's session protection finds the log-in's address and user agent.
    browser = {
        key: value for key, value in environ_for("/").items() if key in ("HTTP_USER_AGENT", "HTTP_X_FORWARDED_FOR")
    }
    client = logged_in_client(app, "https://bench.example.com", browser)
    # The page the log-in form sends to: its forms' CSRF token is kept in the session, whose cookie then stays as
    # it is (as a browser's, and wrk's in bench/run.py, after their first page).
    client.get("/account", base_url="https://bench.example.com")
    return "; ".join(f"{cookie.key}={cookie.value}" for cookie in client._cookies.values())


def child(sync: Path, requests: int, ablate: bool, ablate_path: str, pages: bool) -> None:
    """Runs under callgrind: the phases, each followed by a wait for the parent to dump the counters."""
    sys.path.insert(0, str(ROOT))
    from bench.bare_flask import app as bare
    from bench.request_overhead import production_app

    app = production_app(
        os.environ["TEST_DATABASE_URL"], os.environ["TEST_REDIS_URL"], os.environ.get("BENCH_EMULATOR_URL")
    )
    environs = {path: environ_for(path) for path in PATHS}
    if pages:
        cookie = session_cookie(app)
        environs.update((path, environ_for(path, cookie)) for path in PAGES)
    bare_environ = environ_for("/hello")
    for path in environs:  # warm: caches filled, templates compiled
        serve(app, environs[path], 20)
    serve(bare, bare_environ, 20)

    # A first phase whose count is not shown: callgrind's first dump after instrumentation is switched on can miss
    # its trigger name.
    phases = [("(start)", lambda: serve(bare, bare_environ, 1))]
    phases += [("bare Flask /hello", lambda: serve(bare, bare_environ, requests))]
    phases += [(path, lambda path=path: serve(app, environs[path], requests)) for path in environs]
    if ablate:
        hello = environs[ablate_path]

        def without(hooks: list, hook):
            def run():
                at = hooks.index(hook)
                hooks.pop(at)
                try:
                    serve(app, hello, requests)
                finally:
                    hooks.insert(at, hook)

            return run

        for kind, hooks in (
            ("before", app.before_request_funcs.get(None, [])),
            ("after", app.after_request_funcs.get(None, [])),
            ("teardown", app.teardown_request_funcs.get(None, [])),
            ("app teardown", app.teardown_appcontext_funcs),
        ):
            for hook in list(hooks):
                name = getattr(hook, "__qualname__", repr(hook)).replace(".<locals>", "")
                phases.append((f"{ablate_path} without {kind} {name}", without(hooks, hook)))

    def handshake(name: str) -> None:
        (sync / "ready").write_text(name)
        while not (sync / "go").exists():
            time.sleep(0.02)
        (sync / "go").unlink()

    handshake("start")
    # Every phase twice, and the smaller count kept: under Valgrind the app runs some fifty times slower, so its
    # timed work (a cache's expiry, a connection's ping after idling) lands in some phase now and then.
    for index, (name, run) in enumerate(phases * 2):
        run()
        handshake(f"phase{index}:{name}")
    (sync / "done").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per phase (default 100)")
    parser.add_argument("--ablate", action="store_true", help="also each hook's cost (a phase without it)")
    parser.add_argument(
        "--ablate-path", default="/bench/hello", help="the path --ablate requests (default /bench/hello)"
    )
    parser.add_argument("--pages", action="store_true", help="also the Pro user's logged-in /account and /billing")
    parser.add_argument("--keep", metavar="DIR", help="keep callgrind's dumps in DIR (for callgrind_annotate)")
    parser.add_argument("--child", metavar="SYNC_DIR", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(Path(options.child), options.requests, options.ablate, options.ablate_path, options.pages)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: run scripts/install-bench-deps.sh", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="ssb-instructions-"))
    work.chmod(0o755)  # PostgreSQL runs as `postgres` (test-services.sh) and must reach its directory below
    services = work / "services"
    started = subprocess.run(
        [str(ROOT / "scripts/test-services.sh"), "start", str(services)], capture_output=True, text=True
    )
    if started.returncode != 0:
        print(f"scripts/test-services.sh start failed:\n{started.stdout}{started.stderr}", file=sys.stderr)
        return 1
    env = {**os.environ, **dict(re.findall(r"^export (\w+)=(.*)$", started.stdout, re.M))}
    sync = work / "sync"
    sync.mkdir()
    emulator = EmulatorServer() if options.pages or options.ablate_path in PAGES else None
    if emulator is not None:
        emulator.start()
        env["BENCH_EMULATOR_URL"] = emulator.url
    try:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={work}/callgrind.%p",
            sys.executable,
            __file__,
            "--child",
            str(sync),
            "--requests",
            str(options.requests),
            *(["--ablate", "--ablate-path", options.ablate_path] if options.ablate else []),
            *(["--pages"] if options.pages or options.ablate_path in PAGES else []),
        ]
        with open(work / "child.log", "w") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        names: dict[str, str] = {}  # "phase3" -> what it measured (callgrind's dump names take no spaces or /)
        while process.poll() is None:
            ready = sync / "ready"
            if ready.exists():
                name = ready.read_text()
                ready.unlink()
                if name == "start":
                    control = [["-z"], ["-i", "on"]]
                else:
                    phase, _, names[phase] = name.partition(":")
                    control = [["-d", phase]]
                for arguments in control:
                    # callgrind_control reaches the child through vgdb, which can time out on a loaded machine: tried
                    # again, and a phase whose counters could not be switched on or dumped is an error, not a 0.
                    for _ in range(5):
                        done = subprocess.run(["callgrind_control", *arguments, str(process.pid)], capture_output=True)
                        if done.returncode == 0:
                            break
                        time.sleep(0.5)
                    else:
                        process.kill()
                        print(
                            f"callgrind_control {' '.join(arguments)} failed: {done.stderr.decode()}", file=sys.stderr
                        )
                        return 1
                (sync / "go").write_text("")
            time.sleep(0.05)
        if process.returncode != 0:
            print((work / "child.log").read_text()[-3000:], file=sys.stderr)
            return 1
        counts: list[tuple[int, str, int]] = []
        for dump in work.glob("callgrind.*"):
            text = dump.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: (?:Client Request: )?dump phase(\d+)$", text, re.M)
            total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if trigger and total:
                counts.append((int(trigger.group(1)), names[f"phase{trigger.group(1)}"], int(total.group(1))))
        counts.sort()
        if options.keep:
            Path(options.keep).mkdir(parents=True, exist_ok=True)
            for dump in work.glob("callgrind.*"):
                shutil.copy(dump, Path(options.keep) / dump.name)
        per_request: dict[str, float] = {}
        for _, name, total in counts:
            if name != "(start)":
                per_request[name] = min(per_request.get(name, total), total)
        if not per_request or not all(per_request.values()):
            print(f"callgrind counted nothing for some phase: {per_request}", file=sys.stderr)
            return 1
        per_request = {name: total / options.requests / 1000 for name, total in per_request.items()}
        bare = per_request.get("bare Flask /hello")
        hello = per_request.get(options.ablate_path)
        print(f"thousands of instructions per request ({options.requests} requests a phase, callgrind):")
        for name, value in per_request.items():
            against = f"  bare Flask ÷ this {bare / value:.3f}" if bare and not name.startswith("bare") else ""
            saved = f"  ({value - hello:+.1f})" if hello and " without " in name else ""
            print(f"  {name:70s} {value:8.1f}{against}{saved}")
        return 0
    finally:
        if emulator is not None:
            emulator.stop()
        subprocess.run([str(ROOT / "scripts/test-services.sh"), "stop", str(services)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
