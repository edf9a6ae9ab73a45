#!/usr/bin/env python3
"""A dependency-update job runner that records one usage event per finished job
through the `spool` command line: plain Python, no SDK, no pip install.

    python3 examples/python/job_runner.py run --owner acme --project web --package-manager pip
    python3 examples/python/job_runner.py run --owner acme --project web --fail "lockfile conflict"
    python3 examples/python/job_runner.py validate config.json      # sends nothing
    JOBRUNNER_TELEMETRY_DISABLED=1 python3 examples/python/job_runner.py run --owner a --project b

`spool` is found as $SPOOL_BIN, else on PATH (`cargo build` puts it in target/debug).
Where events go: `spool --app jobrunner config set endpoint URL`, or
JOBRUNNER_TELEMETRY_ENDPOINT. See them with `spool --app jobrunner list`.

Telemetry never changes the job: a missing or failing `spool`, or an endpoint that
is down, leaves the output and the exit code exactly as they would be without it.
"""

import argparse
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

APP = "jobrunner"
VERSION = "1.0.0"
SPOOL = os.environ.get("SPOOL_BIN") or "spool"
# What jobrunner declares it sends (the Rust and Node job runners use the same file):
# `spool` refuses anything else, and `spool --app jobrunner schema` prints it.
CATALOG = os.environ.get("SPOOL_CATALOG") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "catalogs", "jobrunner.json")
# The same names as Node's process.arch, which the published table shows.
ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "i686": "ia32"}


def spool(*args):
    """Runs `spool --app jobrunner ARGS…`; its stdout, or None if it failed in any way."""
    # Each event is its own POST, as in the original, unless the user says otherwise;
    # a queued "batch" of one also makes the flush below due after every job.
    env = {"SPOOL_BATCH_SIZE": "1", **os.environ}
    try:
        r = subprocess.run([SPOOL, "--app", APP, "--quiet", "--catalog", CATALOG, *args],
                           env=env, text=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def in_docker():
    """True if and only if this looks like a Docker container."""
    if os.path.exists("/.dockerenv"):
        return True
    try:
        with open("/proc/1/cgroup", encoding="utf-8") as f:
            return "docker" in f.read()
    except OSError:
        return False


def usage_event(job, started, duration_ms, error):
    """The one event of a finished job, with exactly the fields of the published table."""
    machine = platform.machine().lower()
    return {
        "tool": f"{APP}@{VERSION}",
        "trigger": job.trigger,
        "provider": job.provider,
        "owner": job.owner,
        "project": job.project,
        "package-manager": job.package_manager,
        "multi-ecosystem-update": job.multi_ecosystem,
        "id": job.id,
        "started": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "duration": duration_ms,
        "success": error is None,
        "error.message": None if error is None else error[:1000],
        "host.platform": sys.platform,
        "host.release": platform.release(),
        "host.arch": ARCH.get(machine, machine),
        "host.machine-hash": hashlib.sha256(socket.gethostname().encode()).hexdigest(),
        "host.docker-container": in_docker(),
    }


def report(properties):
    """Records the event, then starts a background send if one is due; never raises."""
    # A hash looks like a secret to the scrubber: it is passed with -u, unscrubbed, on purpose.
    machine_hash = properties.pop("host.machine-hash")
    out = spool("track", "job_finished", "--json", "--tool", f"{APP}@{VERSION}",
                "--props", json.dumps(properties), "-u", f"host.machine-hash={machine_hash}")
    # Opted out (or no spool): nothing was recorded, so there is nothing to send.
    if out is None or '"id"' not in out:
        return
    spool("flush", "--detach", "--if-due", "--json")


def run(job):
    started = datetime.now(timezone.utc)
    t = time.monotonic()
    time.sleep(job.work_ms / 1000)  # the job's work
    error = job.fail
    if error is None:
        print(f"job {job.id}: updated {job.owner}/{job.project} ({job.package_manager})")
    else:
        print(f"job {job.id}: failed: {error}", file=sys.stderr)
    sys.stdout.flush()
    report(usage_event(job, started, round((time.monotonic() - t) * 1000), error))
    return 0 if error is None else 1


def validate(path):
    # Validation runs no job, so it records nothing.
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as e:
        print(f"jobrunner: error: {path}: {e}", file=sys.stderr)
        return 2
    print(f"{path}: valid")
    return 0


def main():
    cli = argparse.ArgumentParser(prog="job_runner.py", description="Runs dependency-update jobs")
    sub = cli.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one update job")
    r.add_argument("--trigger", choices=["user", "service"], default="user")
    r.add_argument("--provider", default="github")
    r.add_argument("--owner", required=True)
    r.add_argument("--project", required=True)
    r.add_argument("--package-manager", default="pip")
    r.add_argument("--multi-ecosystem", action="store_true")
    r.add_argument("--id", default=str(uuid.uuid4()))
    r.add_argument("--fail", metavar="MESSAGE")
    r.add_argument("--work-ms", type=int, default=20)
    v = sub.add_parser("validate", help="check a configuration file (records nothing)")
    v.add_argument("config")
    args = cli.parse_args()
    return run(args) if args.command == "run" else validate(args.config)


if __name__ == "__main__":
    sys.exit(main())
