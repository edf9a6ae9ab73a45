"""Sends eventspool's stored events through the official PostHog SDK (posthog-python),
as a host using the SDK directly would, so the test can compare its requests with ours.

Usage: posthog_send.py INPUT.json, INPUT being {"host", "api_key", "payloads": [...]}
(the payloads as `spool list --json` shows them). Only what an SDK user must pass is
passed: the event's own fields, its properties, and the properties eventspool adds
that the SDK has no option for. What the SDK adds itself ($lib, $os, $os_version,
$geoip_disable, ...) is left to it: that is what the comparison checks.
"""

import json
import sys

from posthog import Posthog

config = json.load(open(sys.argv[1]))
client = Posthog(
    config["api_key"],
    host=config["host"],
    flush_at=1000,
    flush_interval=0.2,
    max_retries=0,
    # As eventspool does for a body from 1 KiB, which these are.
    gzip=True,
)
for p in config["payloads"]:
    ctx = p["context"]
    props = dict(p["properties"])
    for k in ("arch", "machine_hash", "docker", "ci"):
        props.setdefault(k, ctx[k])
    props["$session_id"] = p["session_id"]
    props["$process_person_profile"] = False
    props["$ignore_sent_at"] = True
    tool = ctx.get("tool")
    if tool:
        name, _, version = tool.rpartition("@")
        props["$app_name"] = name
        props["$app_version"] = version
    client.capture(
        p["event"],
        distinct_id=p["anonymous_id"],
        properties=props,
        timestamp=p["timestamp"],
        uuid=p["id"],
    )
client.flush()
client.shutdown()
