#!/usr/bin/env node
// A dependency-update job runner that records one usage event per finished job
// through the `spool` command line: plain Node, no SDK, no npm install.
//
//   node examples/node/job-runner.mjs run --owner acme --project web --package-manager npm
//   node examples/node/job-runner.mjs run --owner acme --project web --fail "lockfile conflict"
//   node examples/node/job-runner.mjs validate config.json      # sends nothing
//   JOBRUNNER_TELEMETRY_DISABLED=1 node examples/node/job-runner.mjs run --owner a --project b
//
// `spool` is found as $SPOOL_BIN, else on PATH (`cargo build` puts it in target/debug).
// Where events go: `spool --app jobrunner config set endpoint URL`, or
// JOBRUNNER_TELEMETRY_ENDPOINT. See them with `spool --app jobrunner list`.
//
// Telemetry never changes the job: a missing or failing `spool`, or an endpoint that
// is down, leaves the output and the exit code exactly as they would be without it.

import { spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const APP = 'jobrunner';
const VERSION = '1.0.0';
const SPOOL = process.env.SPOOL_BIN || 'spool';
// What jobrunner declares it sends (the Rust and Python job runners use the same file):
// `spool` refuses anything else, and `spool --app jobrunner schema` prints it.
const CATALOG = process.env.SPOOL_CATALOG || fileURLToPath(new URL('../catalogs/jobrunner.json', import.meta.url));

/** Runs `spool --app jobrunner ARGS…`; its stdout, or null if it failed in any way. */
function spool(args) {
  const r = spawnSync(SPOOL, ['--app', APP, '--quiet', '--catalog', CATALOG, ...args], {
    stdio: ['ignore', 'pipe', 'ignore'],
    encoding: 'utf8',
    timeout: 5000,
    // Each event is its own POST, as in the original, unless the user says otherwise;
    // a queued "batch" of one also makes the flush below due after every job.
    env: { SPOOL_BATCH_SIZE: '1', ...process.env },
  });
  return r.status === 0 ? r.stdout : null;
}

/** True if and only if this looks like a Docker container. */
function inDocker() {
  if (existsSync('/.dockerenv')) return true;
  try {
    return readFileSync('/proc/1/cgroup', 'utf8').includes('docker');
  } catch {
    return false;
  }
}

/** The one event of a finished job, with exactly the fields of the published table. */
function usageEvent(job, started, durationMs, error) {
  return {
    tool: `${APP}@${VERSION}`,
    trigger: job.trigger,
    provider: job.provider,
    owner: job.owner,
    project: job.project,
    'package-manager': job['package-manager'],
    'multi-ecosystem-update': job['multi-ecosystem'],
    id: job.id,
    started: started.toISOString(),
    duration: durationMs,
    success: error === null,
    'error.message': error === null ? null : error.slice(0, 1000),
    'host.platform': process.platform,
    'host.release': os.release(),
    'host.arch': process.arch,
    'host.machine-hash': createHash('sha256').update(os.hostname()).digest('hex'),
    'host.docker-container': inDocker(),
  };
}

/** Records the event, then starts a background send if one is due; never throws. */
function report(properties) {
  // A hash looks like a secret to the scrubber: it is passed with -u, unscrubbed, on purpose.
  const { 'host.machine-hash': hash, ...rest } = properties;
  const out = spool(['track', 'job_finished', '--json', '--tool', `${APP}@${VERSION}`,
    '--props', JSON.stringify(rest), '-u', `host.machine-hash=${hash}`]);
  // Opted out (or no spool): nothing was recorded, so there is nothing to send.
  if (out === null || !out.includes('"id"')) return;
  spool(['flush', '--detach', '--if-due', '--json']);
}

async function run(job) {
  const started = new Date();
  await new Promise((done) => setTimeout(done, Number(job['work-ms']))); // the job's work
  const error = job.fail ?? null;
  if (error === null) {
    console.log(`job ${job.id}: updated ${job.owner}/${job.project} (${job['package-manager']})`);
  } else {
    console.error(`job ${job.id}: failed: ${error}`);
  }
  report(usageEvent(job, started, Date.now() - started.getTime(), error));
  return error === null ? 0 : 1;
}

function validate(path) {
  // Validation runs no job, so it records nothing.
  try {
    JSON.parse(readFileSync(path, 'utf8'));
    console.log(`${path}: valid`);
    return 0;
  } catch (e) {
    console.error(`jobrunner: error: ${path}: ${e.message}`);
    return 2;
  }
}

const [command, ...rest] = process.argv.slice(2);
if (command === 'run') {
  const { values } = parseArgs({
    args: rest,
    options: {
      trigger: { type: 'string', default: 'user' },
      provider: { type: 'string', default: 'github' },
      owner: { type: 'string' },
      project: { type: 'string' },
      'package-manager': { type: 'string', default: 'npm' },
      'multi-ecosystem': { type: 'boolean', default: false },
      id: { type: 'string', default: randomUUID() },
      fail: { type: 'string' },
      'work-ms': { type: 'string', default: '20' },
    },
  });
  if (!values.owner || !values.project) {
    console.error('jobrunner: error: run needs --owner and --project');
    process.exit(2);
  }
  process.exitCode = await run(values);
} else if (command === 'validate' && rest.length === 1) {
  process.exitCode = validate(rest[0]);
} else {
  console.error('usage: job-runner.mjs run --owner O --project P [options] | validate FILE');
  process.exitCode = 2;
}
