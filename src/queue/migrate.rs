//! The schema: numbered, append-only migrations, counted in `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::open::Failure;
use crate::error::Kind;

/// Numbered, append-only migrations; `PRAGMA user_version` is how many have run.
pub(super) const MIGRATIONS: &[&str] = &[include_str!("migrations/001_queue.sql")];

pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Page size of a new queue. Every commit writes whole pages to the WAL (the events
/// leaf and the totals row), and the WAL is fsynced before each checkpoint: with
/// 1 KiB pages a 500-byte event costs 2 KiB of WAL instead of 8 KiB.
pub(super) const PAGE_SIZE: i64 = 1024;

pub(super) fn migrate(conn: &mut Connection, seen: i64) -> Result<(), Failure> {
    if seen > LATEST {
        return Err(Failure::Other(
            Kind::NewerSchema {
                seen,
                known: LATEST,
            }
            .into(),
        ));
    }
    let empty = seen == 0 && conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? == 0;
    if empty {
        // Only takes effect on a database not written yet; see PAGE_SIZE.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        // Creating the queue cost a host's first run seven fsyncs for a file that holds
        // nothing: turning the empty file into a WAL database is a rollback-journal
        // transaction (journal, directory, journal, file), and the schema's commit
        // syncs the new WAL's header and its directory. None of them protects an event:
        // a power loss before the first checkpoint may lose what was written since (the
        // documented cost of `synchronous = NORMAL`), and can at worst leave an empty
        // or torn file, which opening starts afresh (user_version 0) or sets aside
        // (never deletes). The header sync guards a restarted WAL against replaying a
        // previous generation's frames; a new WAL has none. So the creation runs
        // unsynced, and every later commit and checkpoint as before.
        conn.pragma_update(None, "synchronous", "OFF")?;
    }
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the write lock.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 {
        let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(Failure::Invalid(
                "it is a SQLite database of another application".into(),
            ));
        }
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    if empty {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(())
}
