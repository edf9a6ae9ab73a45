#!/usr/bin/env bash
# What calling `spool` costs a host in another language, measured from inside Node and
# Python (the time the host's own code waits on the call), each figure beside its
# baseline from the same run:
#   - one event per `spool track` process, and 100 events one process each vs 100
#     events through one `spool track --stdin`   (baseline: spawning `true`);
#   - `spool flush --detach --if-due` when nothing is due, and when it spawns a
#     detached flusher                           (baseline: spawning `true`);
#   - the interpreter's own start (`node -e ''`, `python3 -c ''`), for scale.
# Every figure is the median of N runs (default 20) of the same call.
#
# Usage: [N=20] [SPOOL_BIN=PATH] benches/hosts.sh
#   default SPOOL_BIN: target/release/spool of this checkout (built if missing, with
#   `cargo build --release --bin spool`). Needs `node` and `python3` on PATH.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
spool=${SPOOL_BIN:-$here/target/release/spool}
if [[ ! -x "$spool" ]]; then
  (cd "$here" && cargo build --release --bin spool --quiet)
fi
n=${N:-20}
root=$(mktemp -d "${TMPDIR:-/tmp}/eventspool-hosts.XXXXXX")
serve_pid=
cleanup() {
  [[ -n "$serve_pid" ]] && kill "$serve_pid" 2>/dev/null
  rm -rf "$root"
}
trap cleanup EXIT
# Keep the machine's telemetry settings out of the figures.
unset DO_NOT_TRACK SPOOL_APP SPOOL_DIR SPOOL_ENDPOINT SPOOL_BATCH_SIZE SPOOL_FLUSH_INTERVAL

# A real loopback endpoint for the detached flushers (2xx, so no backoff is stored).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$spool" serve --addr "127.0.0.1:$port" --out "$root/received.jsonl" >/dev/null 2>&1 &
serve_pid=$!
endpoint="http://127.0.0.1:$port/v1/events"
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

cat >"$root/bench.cjs" <<'EOF'
const { spawnSync } = require('node:child_process');
const { mkdtempSync } = require('node:fs');
const { join } = require('node:path');
const [spool, root, endpoint, n] = process.argv.slice(2);
const N = Number(n);
const S = ['--session-id', '0193a5c2-7d1e-7cc4-9f3a-1b2c3d4e5f60', '--tool', 'bench@1.0.0'];

function run(cmd, args, { input, env } = {}) {
  const r = spawnSync(cmd, args, { input, env: { ...process.env, ...env }, encoding: 'utf8',
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error}`);
  return r.stdout;
}
function median(fn) {
  const t = [];
  for (let i = 0; i < N; i++) {
    const setup = fn();
    const a = process.hrtime.bigint();
    setup();
    t.push(Number(process.hrtime.bigint() - a) / 1e6);
  }
  t.sort((x, y) => x - y);
  return t[Math.floor(t.length / 2)];
}
const fresh = () => mkdtempSync(join(root, 'n-'));
const q = fresh();
const lines = Array.from({ length: 100 }, (_, i) => JSON.stringify({ event: 'step', properties: { i } })).join('\n') + '\n';
const out = {
  startup: median(() => () => run(process.execPath, ['-e', ''])),
  spawn: median(() => () => run('true', [])),
  track1: median(() => () => run(spool, ['--dir', q, '-q', 'track', 'bench', '-p', 'i:=1', ...S])),
  track100each: median(() => () => { for (let i = 0; i < 100; i++) run(spool, ['--dir', q, '-q', 'track', 'bench', '-p', `i:=${i}`, ...S]); }) / 100,
  track100stdin: median(() => () => run(spool, ['--dir', q, '-q', 'track', '--stdin', ...S], { input: lines })) / 100,
  notDue: median(() => {
    const d = fresh();
    run(spool, ['--dir', d, 'track', 'one']);
    return () => { if (!run(spool, ['--dir', d, '-q', 'flush', '--detach', '--if-due', '--json', '--endpoint', endpoint]).includes('not_due')) throw new Error('due'); };
  }),
  spawns: median(() => {
    const d = fresh();
    run(spool, ['--dir', d, 'track', 'one']);
    return () => { if (!run(spool, ['--dir', d, '-q', 'flush', '--detach', '--if-due', '--json', '--endpoint', endpoint], { env: { SPOOL_BATCH_SIZE: '1' } }).includes('"detached":true')) throw new Error('not spawned'); };
  }),
};
console.log(JSON.stringify(out));
EOF

cat >"$root/bench.py" <<'EOF'
import json, os, subprocess, sys, tempfile, time
spool, root, endpoint, n = sys.argv[1:]
N = int(n)
S = ["--session-id", "0193a5c2-7d1e-7cc4-9f3a-1b2c3d4e5f60", "--tool", "bench@1.0.0"]

def run(*args, input=None, env=None):
    r = subprocess.run(list(args), input=input, text=True, env={**os.environ, **(env or {})},
                       stdin=None if input is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(f"{args}: {r.stderr}")
    return r.stdout

def median(make):
    t = []
    for _ in range(N):
        call = make()
        a = time.perf_counter()
        call()
        t.append((time.perf_counter() - a) * 1000)
    return sorted(t)[len(t) // 2]

fresh = lambda: tempfile.mkdtemp(dir=root, prefix="p-")
q = fresh()
lines = "".join(json.dumps({"event": "step", "properties": {"i": i}}) + "\n" for i in range(100))

def queued_one(env=None, want=""):
    d = fresh()
    run(spool, "--dir", d, "track", "one")
    def call():
        out = run(spool, "--dir", d, "-q", "flush", "--detach", "--if-due", "--json",
                  "--endpoint", endpoint, env=env)
        assert want in out, out
    return call

out = {
    "startup": median(lambda: lambda: run(sys.executable, "-c", "")),
    "spawn": median(lambda: lambda: run("true")),
    "track1": median(lambda: lambda: run(spool, "--dir", q, "-q", "track", "bench", "-p", "i:=1", *S)),
    "track100each": median(lambda: lambda: [run(spool, "--dir", q, "-q", "track", "bench", "-p", f"i:={i}", *S) for i in range(100)]) / 100,
    "track100stdin": median(lambda: lambda: run(spool, "--dir", q, "-q", "track", "--stdin", *S, input=lines)) / 100,
    "notDue": median(lambda: queued_one(want="not_due")),
    "spawns": median(lambda: queued_one(env={"SPOOL_BATCH_SIZE": "1"}, want='"detached":true')),
}
print(json.dumps(out))
EOF

# One language after the other, never in parallel.
node_json=$(node "$root/bench.cjs" "$spool" "$root" "$endpoint" "$n")
py_json=$(python3 "$root/bench.py" "$spool" "$root" "$endpoint" "$n")

python3 - "$node_json" "$py_json" "$n" "$(node --version)" "$(python3 --version)" <<'EOF'
import json, sys
node, py, n, node_v, py_v = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = [
    ("spool track, 1 event, 1 process", "track1", "spawn `true`", "spawn"),
    ("100 events, 1 process each (per event)", "track100each", "spawn `true`", "spawn"),
    ("100 events, 1 track --stdin (per event)", "track100stdin", "spawn `true` / 100", None),
    ("flush --detach --if-due, not due", "notDue", "spawn `true`", "spawn"),
    ("flush --detach --if-due, spawns", "spawns", "spawn `true`", "spawn"),
    ("interpreter start (for scale)", "startup", "", None),
]
print(f"median of {n} runs, milliseconds the host waits; {node_v}, {py_v}\n")
print(f"| {'measure':<42} | {'node':>8} | {'python3':>8} | baseline (same run) | {'node':>6} | {'python3':>7} |")
print(f"|{'-'*44}|{'-'*10}|{'-'*10}|{'-'*21}|{'-'*8}|{'-'*9}|")
for label, key, base_label, base in rows:
    if base_label.endswith("/ 100"):
        b = (f"{node['spawn']/100:.3f}", f"{py['spawn']/100:.3f}")
    elif base:
        b = (f"{node[base]:.2f}", f"{py[base]:.2f}")
    else:
        b = ("", "")
    print(f"| {label:<42} | {node[key]:>8.2f} | {py[key]:>8.2f} | {base_label:<19} | {b[0]:>6} | {b[1]:>7} |")
EOF
