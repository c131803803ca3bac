-- Schema version 2: what the HTTP API needs. API bearer tokens (only a SHA-256 of the secret
-- part is stored; at most one active token per name), and the per-device time indexes the
-- paged reads of alarm events and decode errors seek on. Records need no new index: the
-- deduplication key (device, event_time, record_index) already serves per-device time ranges.

CREATE TABLE api_tokens (
    id             TEXT    PRIMARY KEY,      -- public id embedded in the token text
    name           TEXT    NOT NULL,
    scope          TEXT    NOT NULL CHECK (scope IN ('read', 'admin')),
    secret_sha256  BLOB    NOT NULL,
    created_at_us  INTEGER NOT NULL,
    revoked_at_us  INTEGER
);
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens(name) WHERE revoked_at_us IS NULL;
CREATE INDEX alarm_events_device_time ON alarm_events(device, event_time);
CREATE INDEX decode_errors_device_received_at ON decode_errors(device, received_at_us);
