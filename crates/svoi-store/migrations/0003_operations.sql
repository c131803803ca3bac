-- Schema version 3: what operations keep in the database itself, so that every server on it and
-- every `svoi` command sees the same: the append-only maintenance log, maintenance windows,
-- hourly statistics for reports, and the restore epoch (bumped by every restore so that a
-- running writer drops its cached ids).

CREATE TABLE svoi_state (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO svoi_state (name, value) VALUES ('restore_epoch', 0);

-- One row per operation: backup, verify, restore, prune, retention, optimize, window, scheduled
-- procedure. Rows are never changed or removed (the triggers refuse it); a restore carries the
-- rows written after the backup over into the restored database.
CREATE TABLE maintenance_log (
    id          INTEGER PRIMARY KEY,
    at_us       INTEGER NOT NULL,   -- when the operation started, Unix microseconds
    kind        TEXT    NOT NULL,
    operator    TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL,
    result      TEXT    NOT NULL CHECK (result IN ('ok', 'warning', 'failed')),
    summary     TEXT    NOT NULL,
    details     TEXT    NOT NULL    -- a JSON object
);
CREATE INDEX maintenance_log_kind_at ON maintenance_log(kind, at_us);
CREATE TRIGGER maintenance_log_no_update BEFORE UPDATE ON maintenance_log
BEGIN
    SELECT RAISE(ABORT, 'maintenance_log is append-only');
END;
CREATE TRIGGER maintenance_log_no_delete BEFORE DELETE ON maintenance_log
BEGIN
    SELECT RAISE(ABORT, 'maintenance_log is append-only');
END;

-- Maintenance windows; at most one is open (ended_at_us NULL) at a time.
CREATE TABLE maintenance_windows (
    id             INTEGER PRIMARY KEY,
    started_at_us  INTEGER NOT NULL,
    planned_end_us INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    operator       TEXT    NOT NULL,
    backup_id      TEXT,
    silence_id     TEXT,
    ended_at_us    INTEGER,
    result         TEXT
);
CREATE UNIQUE INDEX maintenance_windows_one_open
    ON maintenance_windows((ended_at_us IS NULL)) WHERE ended_at_us IS NULL;

-- What each server saw per hour (hour_start in Unix seconds), written by the server as the
-- hour goes on; reports read it without Prometheus.
CREATE TABLE hourly_stats (
    hour_start      INTEGER NOT NULL,
    instance        TEXT    NOT NULL,
    frames          INTEGER NOT NULL,
    records         INTEGER NOT NULL,
    duplicates      INTEGER NOT NULL,
    decode_errors   INTEGER NOT NULL,
    acks            INTEGER NOT NULL,
    ack_p50_ms      REAL,
    ack_p95_ms      REAL,
    ack_p99_ms      REAL,
    devices_active  INTEGER NOT NULL,
    connections_max INTEGER NOT NULL,
    db_bytes        INTEGER,
    updated_at_us   INTEGER NOT NULL,
    PRIMARY KEY (hour_start, instance)
);
