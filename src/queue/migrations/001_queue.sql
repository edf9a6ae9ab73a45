-- 001: the first schema. Events wait in `events` in arrival order (`seq`); `totals`
-- keeps their count and byte size, updated by every statement that inserts or deletes
-- events, in the same transaction, so enforcing the caps costs one row read instead of
-- a scan. (Not by triggers: a trigger runs once per row, and a flush deletes 100 rows
-- per commit.) `counters` tells users what was
-- dropped and why; `state` holds delivery state that must survive short-lived
-- processes (endpoint backoff, last flush); `lease` lets one flusher run at a time.
-- No AUTOINCREMENT and no index on `id`: each would add a page to every commit, and
-- a short WAL is what keeps a fresh process's open cheap. A `seq` may be reused after
-- the newest rows are deleted, so rows are always addressed by (seq, id).
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL,
    payload         TEXT    NOT NULL
);

CREATE TABLE totals (
    id     INTEGER PRIMARY KEY CHECK (id = 0),
    events INTEGER NOT NULL,
    bytes  INTEGER NOT NULL
);
INSERT INTO totals (id, events, bytes) VALUES (0, 0, 0);


CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE lease (
    id         INTEGER PRIMARY KEY CHECK (id = 0),
    pid        INTEGER NOT NULL,
    started    INTEGER NOT NULL,
    host       TEXT    NOT NULL,
    token      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
