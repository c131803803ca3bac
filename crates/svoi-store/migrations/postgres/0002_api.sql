-- Schema version 2 on PostgreSQL: what the HTTP API needs (see migrations/0002_api.sql). API
-- bearer tokens (only a SHA-256 of the secret part is stored; at most one active token per
-- name), and the per-device time indexes the paged reads of alarm events and decode errors seek on.

CREATE TABLE api_tokens (
    id             text    PRIMARY KEY,      -- public id embedded in the token text
    name           text    NOT NULL,
    scope          text    NOT NULL CHECK (scope IN ('read', 'admin')),
    secret_sha256  bytea   NOT NULL,
    created_at_us  bigint  NOT NULL,
    revoked_at_us  bigint
);
CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens(name) WHERE revoked_at_us IS NULL;
CREATE INDEX alarm_events_device_time ON alarm_events(device, event_time, id);
CREATE INDEX decode_errors_device_received_at ON decode_errors(device, received_at_us, id);
