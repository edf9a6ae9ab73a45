"""Sends eventspool's stored events through the official Segment SDK
(segment-analytics-python), as a host using the SDK directly would, so the test can
compare its requests with ours.

Usage: segment_send.py INPUT.json, INPUT being {"host", "api_key", "payloads": [...]}
(the payloads as `spool list --json` shows them). The SDK adds only
`context.library`; the rest of the context is the caller's, passed here as eventspool
documents it (os names in the PostHog SDK's vocabulary).
"""

import json
import sys
from datetime import datetime

from segment.analytics.client import Client

OS_NAMES = {"linux": "Linux", "macos": "Mac OS X", "windows": "Windows"}

config = json.load(open(sys.argv[1]))
client = Client(
    config["api_key"],
    host=config["host"],
    upload_interval=0.2,
    upload_size=1000,
    max_retries=0,
    # As eventspool does for a body from 1 KiB, which these are.
    gzip=True,
)
for p in config["payloads"]:
    ctx = p["context"]
    context = {
        "os": {"name": OS_NAMES.get(ctx["os"], ctx["os"]), "version": ctx["os_release"]},
        "arch": ctx["arch"],
        "machine_hash": ctx["machine_hash"],
        "docker": ctx["docker"],
        "ci": ctx["ci"],
        "session_id": p["session_id"],
    }
    tool = ctx.get("tool")
    if tool:
        name, _, version = tool.rpartition("@")
        context["app"] = {"name": name, "version": version}
    client.track(
        anonymous_id=p["anonymous_id"],
        event=p["event"],
        properties=p["properties"],
        context=context,
        timestamp=datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")),
        message_id=p["id"],
    )
client.flush()
client.join()
