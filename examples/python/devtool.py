#!/usr/bin/env python3
"""A development server with journey events at its milestones (`cli_invoked`,
`setup_completed`, `first_request`, `dashboard_viewed`, `cli_uninstall`) and one
`session` summary on exit, recorded through the `spool` command line: plain Python,
no SDK, no pip install.

    python3 examples/python/devtool.py dev --requests 5 --errors 1 --open-dashboard
    python3 examples/python/devtool.py dev --until-signal          # Ctrl-C to stop
    python3 examples/python/devtool.py uninstall
    DEVTOOL_TELEMETRY=false python3 examples/python/devtool.py dev  # opted out
    spool --app devtool disable                                     # opted out for good

`spool` is found as $SPOOL_BIN, else on PATH. Run it in a project directory: the
tool looks at ./package.json, ./node_modules and the lockfile, as the original does.
Recording is a `spool track` call of a few milliseconds; sending is left to a
detached `spool flush --detach --if-due`, so exiting never waits for the network.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import uuid

APP = "devtool"
VERSION = "0.9.1"
SPOOL = os.environ.get("SPOOL_BIN") or "spool"
# What devtool declares it sends (the Rust and Node dev tools use the same file):
# `spool` refuses anything else, and `spool --app devtool schema` prints it.
CATALOG = os.environ.get("SPOOL_CATALOG") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "catalogs", "devtool.json")
FRAMEWORKS = {"next": "nextjs", "express": "express", "nuxt": "nuxt", "@remix-run/node": "remix"}
ADAPTERS = ["prisma", "drizzle-orm", "mongoose", "pg", "redis"]
LOCKS = {"pnpm-lock.yaml": "pnpm", "yarn.lock": "yarn", "bun.lockb": "bun", "package-lock.json": "npm"}
# The same names as Node's process.arch, so both SDKs report alike.
ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "i686": "ia32"}
DATA_DIR = os.path.join(os.path.expanduser("~"), ".devtool")  # the tool's own data


def uuid7():
    """A UUIDv7 (time-ordered): 48 bits of Unix milliseconds, then random bits."""
    b = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(b)))


SESSION_ID = uuid7()  # one per process: every event of this run shares it
T0 = time.monotonic()
telemetry_on = True  # until `spool` says otherwise (opted out) or cannot run


def since_start():
    return round((time.monotonic() - T0) * 1000)


def spool(*args, input=None):
    """Runs `spool --app devtool ARGS…`; its stdout, or None if it failed in any way."""
    try:
        r = subprocess.run([SPOOL, "--app", APP, "--quiet", "--catalog", CATALOG, *args],
                           input=input, text=True,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def track(*events):
    """Records events, (name, properties) pairs, in one `spool track --stdin` call."""
    global telemetry_on
    if not telemetry_on:
        return
    lines = "".join(json.dumps({"event": e, "properties": p}) + "\n" for e, p in events)
    out = spool("track", "--stdin", "--json", "--session-id", SESSION_ID,
                "--tool", f"{APP}@{VERSION}", input=lines)
    # `{"recorded":false,…}`: opted out (DEVTOOL_TELEMETRY=false, `"telemetry": false`).
    telemetry_on = out is not None and '"id"' in out


def detect_project():
    """What the project in the current directory uses, read from its files."""
    deps = {}
    try:
        with open("package.json", encoding="utf-8") as f:
            pkg = json.load(f)
        deps = {**pkg.get("dependencies", {}), **pkg.get("devDependencies", {})}
    except (OSError, ValueError, AttributeError):
        pass  # no or unreadable package.json: nothing detected
    adapters = [n for n in deps if n in ADAPTERS]
    framework = next((FRAMEWORKS[n] for n in deps if n in FRAMEWORKS), None)
    lock = next((f for f in LOCKS if os.path.exists(f)), None)
    return {
        "has_package_json": os.path.exists("package.json"),
        "framework": framework,
        "candidates": [n for n in deps if n in FRAMEWORKS or n in ADAPTERS],
        # An adapter is hooked when its package is installed; listed but missing, it failed.
        "detected": [a for a in adapters if os.path.exists(os.path.join("node_modules", a))],
        "failed": [a for a in adapters if not os.path.exists(os.path.join("node_modules", a))],
        "package_manager": LOCKS[lock] if lock else None,
    }


def past_sessions():
    """How many sessions this machine has had (0 if none), without writing."""
    try:
        with open(os.path.join(DATA_DIR, "state.json"), encoding="utf-8") as f:
            return json.load(f).get("sessions", 0)
    except (OSError, ValueError, AttributeError):
        return 0


def serve_request(i, opts, project):
    """One simulated request: its status, duration and what the tool saw in it."""
    return {
        "failed": i < opts.errors,
        "duration_ms": 40 + (i * 137) % 600,
        "queries": 0 if not project["detected"] else 3 if i % 4 == 3 else 1,
        "fetches": i % 2,
        "endpoint": f"/api/items/{i % 5}",  # counted, never sent
    }


def bucket(ms):
    for limit, name in ((100, "0-100ms"), (500, "100-500ms"), (1000, "500-1000ms"),
                        (2000, "1000-2000ms")):
        if ms < limit:
            return name
    return "2000ms+"


def dev(opts):
    track(("cli_invoked", {"command": "dev", "has_package_json": os.path.exists("package.json"),
                           "cwd_has_node_modules": os.path.exists("node_modules")}))
    setup_start = time.monotonic()
    project = detect_project()
    setup_ms = round((time.monotonic() - setup_start) * 1000)
    track(("setup_completed", {"framework": project["framework"],
                               "framework_detection_candidates": project["candidates"],
                               "adapters_detected": project["detected"],
                               "adapters_failed": project["failed"],
                               "setup_duration_ms": setup_ms}))

    # A signal only asks the loop to stop, so the summary is still recorded.
    stop_signal = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, _frame: stop_signal.append(signum))

    first_session = past_sessions() == 0
    seen = {"requests": 0, "errors": 0, "queries": 0, "fetches": 0, "total_ms": 0, "slowest_ms": 0}
    endpoints, insights = set(), []
    ttfr = ttd = None
    tabs = [t for t in opts.tabs.split(",") if t] if opts.open_dashboard else []
    reason, error = "clean", None
    print(f"devtool: serving on port {opts.port}", flush=True)
    try:
        while not stop_signal and (opts.until_signal or seen["requests"] < opts.requests):
            time.sleep(0.02)  # waiting for the next request
            r = serve_request(seen["requests"], opts, project)
            seen["requests"] += 1
            seen["errors"] += 1 if r["failed"] else 0
            seen["queries"] += r["queries"]
            seen["fetches"] += r["fetches"]
            seen["total_ms"] += r["duration_ms"]
            seen["slowest_ms"] = max(seen["slowest_ms"], r["duration_ms"])
            endpoints.add(r["endpoint"])
            if r["queries"] > 1:
                insights.append("n1")
            if r["duration_ms"] > 500:
                insights.append("slow")
            if ttfr is None:
                ttfr = since_start()
                track(("first_request", {"port": opts.port, "time_to_first_request_ms": ttfr}))
                if opts.open_dashboard:
                    ttd = since_start()
                    track(("dashboard_viewed", {"time_to_dashboard_ms": ttd,
                                                "request_count_at_open": seen["requests"]}))
        if opts.fail:
            raise RuntimeError(opts.fail)
    except Exception as e:  # the summary says the session ended in an error
        reason, error = "error", e
    if stop_signal:
        reason = "signal"
    print(f"served {seen['requests']} requests ({seen['errors']} failed)", flush=True)

    n = seen["requests"]
    track(("session", {
        "brakit_version": VERSION,
        "node_version": None,  # the Python SDK runs without Node
        "os": f"{sys.platform}-{platform.release()}",
        "arch": ARCH.get(platform.machine().lower(), platform.machine().lower()),
        "sdk": "python",
        "framework": project["framework"],
        "package_manager": project["package_manager"],
        "is_custom_command": opts.command is not None,
        "first_session": first_session,
        "adapters_detected": project["detected"],
        "adapters_failed": project["failed"],
        "framework_detection_candidates": project["candidates"],
        "request_count": n,
        "error_count": seen["errors"],
        "query_count": seen["queries"],
        "fetch_count": seen["fetches"],
        "insight_count": len(insights),
        "finding_count": 0,  # the simulated app leaks no secrets
        "insight_types": sorted(set(insights)),
        "rules_triggered": [],
        "endpoint_count": len(endpoints),
        "avg_duration_ms": round(seen["total_ms"] / n) if n else 0,
        "slowest_endpoint_bucket": bucket(seen["slowest_ms"]) if n else None,
        "tabs_viewed": tabs,
        "dashboard_opened": ttd is not None,
        "explain_used": opts.explain,
        "session_duration_s": round(since_start() / 1000),
        "setup_succeeded": project["has_package_json"] and not project["failed"],
        "setup_duration_ms": setup_ms,
        "time_to_first_request_ms": ttfr,
        "time_to_dashboard_ms": ttd,
        "exit_reason": reason,
    }))
    if telemetry_on:
        os.makedirs(DATA_DIR, exist_ok=True)
        with open(os.path.join(DATA_DIR, "state.json"), "w", encoding="utf-8") as f:
            json.dump({"sessions": past_sessions() + 1}, f)
    if error is not None:
        print(f"devtool: error: {error}", file=sys.stderr)
    return 128 + stop_signal[0] if stop_signal else 1 if error is not None else 0


def uninstall():
    data_removed = os.path.exists(DATA_DIR)
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    # This simulated tool installs no instrumentation, package or MCP server.
    track(("cli_invoked", {"command": "uninstall",
                           "has_package_json": os.path.exists("package.json"),
                           "cwd_has_node_modules": os.path.exists("node_modules")}),
          ("cli_uninstall", {"instrumentation_removed": False, "package_removed": False,
                             "mcp_removed": False, "data_removed": data_removed}))
    print("devtool removed")
    return 0


def main():
    cli = argparse.ArgumentParser(prog="devtool.py", description="A development server")
    sub = cli.add_subparsers(dest="cmd")
    d = sub.add_parser("dev", help="run the development server (simulated)")
    d.add_argument("--requests", type=int, default=3)
    d.add_argument("--errors", type=int, default=0)
    d.add_argument("--port", type=int, default=3000)
    d.add_argument("--open-dashboard", action="store_true")
    d.add_argument("--tabs", default="requests")
    d.add_argument("--explain", action="store_true")
    d.add_argument("--command", help="a custom command to run the app with")
    d.add_argument("--fail", metavar="MESSAGE")
    d.add_argument("--until-signal", action="store_true")
    sub.add_parser("uninstall", help="remove devtool from this machine")
    args = cli.parse_args(sys.argv[1:] or ["dev"])
    code = uninstall() if args.cmd == "uninstall" else dev(args)
    # Sending happens in a detached process, only if due; this returns in milliseconds.
    if telemetry_on:
        spool("flush", "--detach", "--if-due", "--json")
    return code


if __name__ == "__main__":
    sys.exit(main())
