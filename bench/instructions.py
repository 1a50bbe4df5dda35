"""What a request costs in CPU instructions, counted by Valgrind's callgrind: the same count whatever else the machine
is doing, so that a change of a few per cent shows, where wrk's rates move by more than that between runs. Each phase
runs twice and the smaller count is shown.

The app runs as bench/request_overhead.py builds it (production settings, JSON logs written to /dev/null) and is
called through its WSGI callable, as is bench/bare_flask.py; each phase runs N requests, and callgrind's counters are
dumped between phases (`callgrind_control`), so each phase's count excludes start-up. `--ablate` adds one phase per
before-, after- and teardown hook of the app, with that hook removed: what each one costs. Instruction counts leave
out the kernel (the socket's send, the log line's write) and weigh a cache miss like a hit: they say where the
app's own code spends, not how fast a server is (that is bench/run.py's).

    .venv/bin/python bench/instructions.py [--requests 100] [--ablate]    (needs valgrind: scripts/install-bench-deps.sh)
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
PATHS = ("/bench/hello", "/pricing")


def environ_for(path: str) -> dict:
    """A request as the load balancer forwards it (HTTPS, from a trusted proxy)."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path=path,
        base_url="https://bench.example.com",
        headers={"User-Agent": "wrk", "X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.1"},
    ).get_environ()
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


def child(sync: Path, requests: int, ablate: bool) -> None:
    """Runs under callgrind: the phases, each followed by a wait for the parent to dump the counters."""
    sys.path.insert(0, str(ROOT))
    from bench.bare_flask import app as bare
    from bench.request_overhead import production_app

    app = production_app(os.environ["TEST_DATABASE_URL"], os.environ["TEST_REDIS_URL"])
    environs = {path: environ_for(path) for path in PATHS}
    bare_environ = environ_for("/hello")
    for path in PATHS:  # warm: caches filled, templates compiled
        serve(app, environs[path], 20)
    serve(bare, bare_environ, 20)

    # A first phase whose count is not shown: callgrind's first dump after instrumentation is switched on can miss
    # its trigger name.
    phases = [("(start)", lambda: serve(bare, bare_environ, 1))]
    phases += [("bare Flask /hello", lambda: serve(bare, bare_environ, requests))]
    phases += [(path, lambda path=path: serve(app, environs[path], requests)) for path in PATHS]
    if ablate:
        hello = environs["/bench/hello"]

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
                phases.append((f"/bench/hello without {kind} {name}", without(hooks, hook)))

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
    parser.add_argument("--child", metavar="SYNC_DIR", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(Path(options.child), options.requests, options.ablate)
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
            *(["--ablate"] if options.ablate else []),
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
                    subprocess.run(["callgrind_control", *arguments, str(process.pid)], capture_output=True)
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
        per_request: dict[str, float] = {}
        for _, name, total in counts:
            if name != "(start)":
                per_request[name] = min(per_request.get(name, total), total)
        per_request = {name: total / options.requests / 1000 for name, total in per_request.items()}
        bare = per_request.get("bare Flask /hello")
        hello = per_request.get("/bench/hello")
        print(f"thousands of instructions per request ({options.requests} requests a phase, callgrind):")
        for name, value in per_request.items():
            against = f"  bare Flask ÷ this {bare / value:.3f}" if bare and not name.startswith("bare") else ""
            saved = f"  ({value - hello:+.1f})" if hello and " without " in name else ""
            print(f"  {name:70s} {value:8.1f}{against}{saved}")
        return 0
    finally:
        subprocess.run([str(ROOT / "scripts/test-services.sh"), "stop", str(services)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
