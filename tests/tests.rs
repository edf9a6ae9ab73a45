//! Integration tests: real SQLite files in temp dirs, the real `spool` binary, real
//! loopback HTTP servers answering with real faults, real processes killed with SIGKILL.
//!
//! Index:
//! - `recording`: track → list → show → clear through the binary; bad input; privacy canary;
//!   scrubbed keys, refused event names, user names without USER
//! - `consent`: every opt-out rule leaves no file behind; debug mode
//! - `consent_prompt`: `opt_in` records nothing until yes; `spool consent ask` on a real
//!   pseudo-terminal (Enter, `n`, EOF, Ctrl-C, a host's SIGINT handler), never without a
//!   terminal or under CI; the notice under `opt_out`; catalog changes that ask again
//! - `deletion_request`: one request after `disable`, delivered once across failures and
//!   restarts, kept by `clear`, held by an environment opt-out, at most one pending; a
//!   new anonymous id and machine hash
//! - `queue_storage`: caps, permissions, corrupt-file recovery, concurrent writers
//! - `destinations`: choosing one in code, in `config.json` (`spool config`), by flag
//!   and variable; the user's choice beats the host's; status hides keys
//! - `delivery`: batches, retries, `Retry-After`, drops, splitting, timeouts, expiry, endpoints
//! - `destinations_otlp`: OTLP logs to rotel, a real OpenTelemetry collector (protobuf and
//!   JSON, gzip or not), bodies decoded by opentelemetry-proto; OTLP's status rules,
//!   413 splits, byte-cut batches, partial success, headers
//! - `destinations_vendors`: `posthog` and `segment` bodies against the official Python
//!   SDKs', field for field; Segment's statuses, `Retry-After`, `X-Retry-Count`, byte cuts
//! - `flushers`: the lease under SIGKILL and concurrency, background and detached flushers
//! - `detached`: the detached flusher against hosts that ignore signals, a stray
//!   `EVENTSPOOL_DETACHED_FLUSH`, handles a host leaves inheritable
//! - `guarantees`: SIGKILL mid-write, torn WAL, held locks, hostile input, concurrent
//!   recovery, foreign files, clear under load
//! - `purging`: `clear`/`disable` leave no byte behind and outlast racing writers;
//!   recording resumes after a failure
//! - `fuzz_corpus`: the saved fuzz inputs replayed through every parser
//! - `model`: property test of the queue and flusher against an in-memory model
//! - `whose_environment`: app names checked before any path; `SPOOL_*` never moves a host
//! - `input_and_messages`: one-line errors naming the real cause once, help, no noise
//! - `other_languages`: `track --stdin`, a session and tool across calls, `--json`
//!   everywhere, the detached flush only when due
//! - `host_integration`: the example hosts end to end, mounted commands, the notice
//! - `devtool_example`: the devtool example against the reference page: journey key
//!   fields, the 32 session fields on clean exit, crash, SIGINT and SIGTERM, opt-out,
//!   the schema's purposes and "never collected" list
//! - `example_hosts`: the Node and Python example hosts (machine's `node`, `python3`)
//!   through `spool`: every field of both tables, sessions, opt-outs, signals, failed sends
//! - `features`: `default-features = false` pulls no CLI, no anyhow, no HTTP server
//! - `catalog`: the event catalog: each refusal via `try_track` and `spool track`,
//!   `dropped_undeclared`, invalid catalog files, `max_length`, enums, dotted names,
//!   the published page against the reference tables, `schema --check`, `config set catalog`
//! - `performance`: what a host pays per invocation, as syscalls (strace): one fsync on
//!   the first run, none warm, an env opt-out touching no file, one queue connection
//! - `seams`: the async flush never blocks its executor on SQLite; the injected clock
//!   and environment (consent, precedence, backoff, expiry without sleeping)
//!
//! Helpers in `util`: `cli` (the `spool` command builder `SpoolCmd`), `server` (the
//! loopback `TestServer` with real faults), `children` (child writers, limits on a
//! child, a silent resolver, `exited`/`wait_exited`); temp dirs and queue views in
//! `util` itself.
// Tests state what they expect with unwrap: a failure there is the test failing.
#![allow(clippy::unwrap_used)]

mod util;

mod catalog;
mod consent;
// Runs `spool` on real pseudo-terminals (openpty), which Windows does not have.
#[cfg(unix)]
mod consent_prompt;
mod deletion_request;
mod delivery;
mod destinations;
// Against the counterparts (rotel's collector, the vendors' Python SDKs), which
// .ci/counterparts installs as Linux programs: Linux-side checks of our bodies.
#[cfg(unix)]
mod destinations_otlp;
#[cfg(unix)]
mod destinations_vendors;
mod detached;
mod devtool_example;
// Runs the machine's `node` and `python3` (Linux programs here) as hosts.
#[cfg(unix)]
mod example_hosts;
// Runs cargo (a Linux program here) on the manifest: the dependency tree it checks
// does not depend on the test's target.
#[cfg(unix)]
mod features;
mod flushers;
mod fuzz_corpus;
mod guarantees;
mod host_integration;
mod input_and_messages;
mod model;
mod other_languages;
mod performance;
mod purging;
mod queue_storage;
mod recording;
mod seams;
mod whose_environment;
