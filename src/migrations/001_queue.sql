-- 001: the first schema. Events wait in `events` in arrival order (`seq`); `totals`
-- keeps the count and byte size current through triggers, so enforcing the caps on
-- every insert costs one row read instead of a scan. `counters` tells users what was
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

CREATE TRIGGER events_counted AFTER INSERT ON events BEGIN
    UPDATE totals SET events = events + 1, bytes = bytes + NEW.bytes WHERE id = 0;
END;
CREATE TRIGGER events_uncounted AFTER DELETE ON events BEGIN
    UPDATE totals SET events = events - 1, bytes = bytes - OLD.bytes WHERE id = 0;
END;

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
