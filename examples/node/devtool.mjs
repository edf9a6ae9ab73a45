#!/usr/bin/env node
// A development server with journey events at its milestones (`cli_invoked`,
// `setup_completed`, `first_request`, `dashboard_viewed`, `cli_uninstall`) and one
// `session` summary on exit, recorded through the `spool` command line: plain Node,
// no SDK, no npm install.
//
//   node examples/node/devtool.mjs dev --requests 5 --errors 1 --open-dashboard
//   node examples/node/devtool.mjs dev --until-signal          # Ctrl-C to stop
//   node examples/node/devtool.mjs uninstall
//   DEVTOOL_TELEMETRY=false node examples/node/devtool.mjs dev  # opted out
//   spool --app devtool disable                                  # opted out for good
//
// `spool` is found as $SPOOL_BIN, else on PATH. Run it in a project directory: the
// tool looks at ./package.json, ./node_modules and the lockfile, as the original does.
// Recording is a `spool track` call of a few milliseconds; sending is left to a
// detached `spool flush --detach --if-due`, so exiting never waits for the network.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const APP = 'devtool';
const VERSION = '0.9.1';
const SPOOL = process.env.SPOOL_BIN || 'spool';
// What devtool declares it sends (the Rust and Python dev tools use the same file):
// `spool` refuses anything else, and `spool --app devtool schema` prints it.
const CATALOG = process.env.SPOOL_CATALOG || fileURLToPath(new URL('../catalogs/devtool.json', import.meta.url));
const FRAMEWORKS = { next: 'nextjs', express: 'express', nuxt: 'nuxt', '@remix-run/node': 'remix' };
const ADAPTERS = ['prisma', 'drizzle-orm', 'mongoose', 'pg', 'redis'];
const DATA_DIR = join(os.homedir(), '.devtool'); // the tool's own data, not telemetry's

/** A UUIDv7 (time-ordered): 48 bits of Unix milliseconds, then random bits. */
function uuidv7() {
  const b = randomBytes(16);
  b.writeUIntBE(Date.now(), 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const SESSION_ID = uuidv7(); // one per process: every event of this run shares it
const T0 = performance.now();
const sinceStart = () => Math.round(performance.now() - T0);
let telemetryOn = true; // until `spool` says otherwise (opted out) or cannot run

/** Runs `spool --app devtool ARGS…`; its stdout, or null if it failed in any way. */
function spool(args, input) {
  const r = spawnSync(SPOOL, ['--app', APP, '--quiet', '--catalog', CATALOG, ...args], {
    input,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'ignore'],
    encoding: 'utf8',
    timeout: 5000,
  });
  return r.status === 0 ? r.stdout : null;
}

/** Records events, `[name, properties]` pairs, in one `spool track --stdin` call. */
function track(...events) {
  if (!telemetryOn) return;
  const lines = events.map(([event, properties]) => JSON.stringify({ event, properties }));
  const out = spool(['track', '--stdin', '--json', '--session-id', SESSION_ID,
    '--tool', `${APP}@${VERSION}`], lines.join('\n') + '\n');
  // `{"recorded":false,…}`: opted out (DEVTOOL_TELEMETRY=false, `"telemetry": false`).
  telemetryOn = out !== null && out.includes('"id"');
}

/** What the project in the current directory uses, read from its files. */
function detectProject() {
  let deps = {};
  const hasPackageJson = existsSync('package.json');
  try {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
    deps = { ...pkg.dependencies, ...pkg.devDependencies };
  } catch {
    // No or unreadable package.json: nothing detected.
  }
  const names = Object.keys(deps);
  const candidates = names.filter((n) => n in FRAMEWORKS || ADAPTERS.includes(n));
  const framework = names.find((n) => n in FRAMEWORKS);
  const adapters = names.filter((n) => ADAPTERS.includes(n));
  const locks = { 'pnpm-lock.yaml': 'pnpm', 'yarn.lock': 'yarn', 'bun.lockb': 'bun', 'package-lock.json': 'npm' };
  const lock = Object.keys(locks).find((f) => existsSync(f));
  return {
    hasPackageJson,
    hasNodeModules: existsSync('node_modules'),
    framework: framework ? FRAMEWORKS[framework] : null,
    candidates,
    // An adapter is hooked when its package is installed; listed but missing, it failed.
    detected: adapters.filter((a) => existsSync(join('node_modules', a))),
    failed: adapters.filter((a) => !existsSync(join('node_modules', a))),
    packageManager: lock ? locks[lock] : null,
  };
}

/** Reads how many sessions this machine has had (0 if none), without writing. */
function pastSessions() {
  try {
    return JSON.parse(readFileSync(join(DATA_DIR, 'state.json'), 'utf8')).sessions ?? 0;
  } catch {
    return 0;
  }
}

/** One simulated request: its status, duration and what the tool saw in it. */
function serveRequest(i, opts, project) {
  const queries = project.detected.length === 0 ? 0 : i % 4 === 3 ? 3 : 1;
  return {
    failed: i < Number(opts.errors),
    durationMs: 40 + ((i * 137) % 600),
    queries,
    fetches: i % 2,
    endpoint: `/api/items/${i % 5}`, // counted, never sent
  };
}

async function dev(opts) {
  track(['cli_invoked', { command: 'dev', has_package_json: existsSync('package.json'),
    cwd_has_node_modules: existsSync('node_modules') }]);
  const setupStart = performance.now();
  const project = detectProject();
  const setupMs = Math.round(performance.now() - setupStart);
  track(['setup_completed', { framework: project.framework,
    framework_detection_candidates: project.candidates, adapters_detected: project.detected,
    adapters_failed: project.failed, setup_duration_ms: setupMs }]);

  let stopSignal = null;
  const onSignal = (name) => { stopSignal = name; };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const firstSession = pastSessions() === 0;
  const seen = { requests: 0, errors: 0, queries: 0, fetches: 0, totalMs: 0, slowestMs: 0 };
  const endpoints = new Set();
  const insights = [];
  let ttfr = null;
  let ttd = null;
  const tabs = opts['open-dashboard'] ? opts.tabs.split(',').filter(Boolean) : [];
  let reason = 'clean';
  let error = null;
  console.log(`devtool: serving on port ${opts.port}`);
  try {
    while (stopSignal === null && (opts['until-signal'] || seen.requests < Number(opts.requests))) {
      await new Promise((done) => setTimeout(done, 20)); // waiting for the next request
      const r = serveRequest(seen.requests, opts, project);
      seen.requests += 1;
      seen.errors += r.failed ? 1 : 0;
      seen.queries += r.queries;
      seen.fetches += r.fetches;
      seen.totalMs += r.durationMs;
      seen.slowestMs = Math.max(seen.slowestMs, r.durationMs);
      endpoints.add(r.endpoint);
      if (r.queries > 1) insights.push('n1');
      if (r.durationMs > 500) insights.push('slow');
      if (ttfr === null) {
        ttfr = sinceStart();
        track(['first_request', { port: Number(opts.port), time_to_first_request_ms: ttfr }]);
        if (opts['open-dashboard']) {
          ttd = sinceStart();
          track(['dashboard_viewed', { time_to_dashboard_ms: ttd, request_count_at_open: seen.requests }]);
        }
      }
    }
    if (opts.fail) throw new Error(opts.fail);
  } catch (e) {
    reason = 'error';
    error = e;
  }
  if (stopSignal !== null) reason = 'signal';
  console.log(`served ${seen.requests} requests (${seen.errors} failed)`);

  const bucket = (ms) => (ms < 100 ? '0-100ms' : ms < 500 ? '100-500ms' : ms < 1000 ? '500-1000ms'
    : ms < 2000 ? '1000-2000ms' : '2000ms+');
  track(['session', {
    brakit_version: VERSION,
    node_version: process.version,
    os: `${process.platform}-${os.release()}`,
    arch: process.arch,
    sdk: 'node',
    framework: project.framework,
    package_manager: project.packageManager,
    is_custom_command: opts.command !== undefined,
    first_session: firstSession,
    adapters_detected: project.detected,
    adapters_failed: project.failed,
    framework_detection_candidates: project.candidates,
    request_count: seen.requests,
    error_count: seen.errors,
    query_count: seen.queries,
    fetch_count: seen.fetches,
    insight_count: insights.length,
    finding_count: 0, // the simulated app leaks no secrets
    insight_types: [...new Set(insights)].sort(),
    rules_triggered: [],
    endpoint_count: endpoints.size,
    avg_duration_ms: seen.requests ? Math.round(seen.totalMs / seen.requests) : 0,
    slowest_endpoint_bucket: seen.requests ? bucket(seen.slowestMs) : null,
    tabs_viewed: tabs,
    dashboard_opened: ttd !== null,
    explain_used: opts.explain,
    session_duration_s: Math.round(sinceStart() / 1000),
    setup_succeeded: project.hasPackageJson && project.failed.length === 0,
    setup_duration_ms: setupMs,
    time_to_first_request_ms: ttfr,
    time_to_dashboard_ms: ttd,
    exit_reason: reason,
  }]);
  if (telemetryOn) {
    mkdirSync(DATA_DIR, { recursive: true });
    writeFileSync(join(DATA_DIR, 'state.json'), JSON.stringify({ sessions: pastSessions() + 1 }));
  }
  if (error !== null) console.error(`devtool: error: ${error.message}`);
  return stopSignal !== null ? 128 + os.constants.signals[stopSignal] : error !== null ? 1 : 0;
}

function uninstall() {
  const dataRemoved = existsSync(DATA_DIR);
  rmSync(DATA_DIR, { recursive: true, force: true });
  // This simulated tool installs no instrumentation, package or MCP server.
  track(['cli_invoked', { command: 'uninstall', has_package_json: existsSync('package.json'),
    cwd_has_node_modules: existsSync('node_modules') }],
  ['cli_uninstall', { instrumentation_removed: false, package_removed: false,
    mcp_removed: false, data_removed: dataRemoved }]);
  console.log('devtool removed');
  return 0;
}

const [command = 'dev', ...rest] = process.argv.slice(2);
let code = 2;
if (command === 'dev') {
  const { values } = parseArgs({
    args: rest,
    options: {
      requests: { type: 'string', default: '3' },
      errors: { type: 'string', default: '0' },
      port: { type: 'string', default: '3000' },
      'open-dashboard': { type: 'boolean', default: false },
      tabs: { type: 'string', default: 'requests' },
      explain: { type: 'boolean', default: false },
      command: { type: 'string' }, // a custom command to run the app with
      fail: { type: 'string' },
      'until-signal': { type: 'boolean', default: false },
    },
  });
  code = await dev(values);
} else if (command === 'uninstall') {
  code = uninstall();
} else {
  console.error('usage: devtool.mjs [dev [options] | uninstall]');
}
// Sending happens in a detached process, only if due; this returns in milliseconds.
if (telemetryOn && code !== 2) spool(['flush', '--detach', '--if-due', '--json']);
process.exit(code);
