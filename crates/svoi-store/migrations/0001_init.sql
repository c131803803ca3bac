-- Schema version 1: devices, negotiated layouts, the raw frame archive and everything decoded
-- from it. Times are integers (Unix seconds for device times, Unix microseconds for receive
-- times); the view v_records renders them as RFC 3339 text for people.

CREATE TABLE devices (
    id               INTEGER PRIMARY KEY,
    imei             TEXT    NOT NULL UNIQUE,
    device_id        INTEGER,
    first_seen_us    INTEGER NOT NULL,
    last_seen_us     INTEGER NOT NULL,
    protocol_version INTEGER,
    struct_version   INTEGER,
    data_size        INTEGER,
    mask             BLOB,
    fields           TEXT,
    negotiated_at_us INTEGER
);

CREATE TABLE layouts (
    id               INTEGER PRIMARY KEY,
    protocol_version INTEGER NOT NULL,
    struct_version   INTEGER NOT NULL,
    data_size        INTEGER NOT NULL,
    mask             BLOB    NOT NULL,
    UNIQUE (protocol_version, struct_version, data_size, mask)
);

CREATE TABLE raw_frames (
    id             INTEGER PRIMARY KEY,
    device         INTEGER NULL REFERENCES devices(id),
    conn_id        INTEGER NOT NULL,
    received_at_us INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('ok', 'error', 'garbage')),
    error_reason   TEXT,
    error          TEXT,
    bytes          BLOB    NOT NULL,
    layout         INTEGER NULL REFERENCES layouts(id)
);
CREATE INDEX raw_frames_received_at ON raw_frames(received_at_us);
CREATE INDEX raw_frames_device_received_at ON raw_frames(device, received_at_us);

CREATE TABLE decode_errors (
    id             INTEGER PRIMARY KEY,
    frame          INTEGER NOT NULL REFERENCES raw_frames(id),
    device         INTEGER NULL REFERENCES devices(id),
    received_at_us INTEGER NOT NULL,
    reason         TEXT,
    error          TEXT
);
CREATE INDEX decode_errors_frame ON decode_errors(frame);
CREATE INDEX decode_errors_received_at ON decode_errors(received_at_us);

-- Archive and alarm records, deduplicated by (device, record_index, event_time). SQLite treats
-- NULLs as distinct in a UNIQUE constraint, so a record without an index or an event time is
-- stored every time it arrives. `frame` is the raw frame that first carried the record (NULL
-- only for rows written without a frame, such as the benchmark baseline). The key's columns are
-- ordered (device, event_time, record_index) so that its index also serves per-device time
-- ranges: one index instead of two on the hottest insert path.
CREATE TABLE records (
    id             INTEGER PRIMARY KEY,
    device         INTEGER NOT NULL REFERENCES devices(id),
    frame          INTEGER NULL REFERENCES raw_frames(id),
    source         TEXT    NOT NULL CHECK (source IN ('archive', 'alarm')),
    record_index   INTEGER,
    event_code     INTEGER,
    event_time     INTEGER,
    fix_time       INTEGER,
    valid          INTEGER,
    satellites     INTEGER,
    latitude       REAL,
    longitude      REAL,
    altitude_m     REAL,
    speed_kmh      REAL,
    course         INTEGER,
    odometer_km    REAL,
    power_mv       INTEGER,
    battery_mv     INTEGER,
    gsm_level      INTEGER,
    fields         TEXT    NOT NULL,
    received_at_us INTEGER NOT NULL,
    UNIQUE (device, event_time, record_index)
);
CREATE INDEX records_frame ON records(frame);

CREATE TABLE alarm_events (
    id             INTEGER PRIMARY KEY,
    device         INTEGER NOT NULL REFERENCES devices(id),
    event_index    INTEGER NOT NULL,
    record_index   INTEGER,
    event_time     INTEGER,
    event_code     INTEGER,
    latitude       REAL,
    longitude      REAL,
    frame          INTEGER NOT NULL REFERENCES raw_frames(id),
    received_at_us INTEGER NOT NULL,
    UNIQUE (device, event_index, event_time)
);
CREATE INDEX alarm_events_frame ON alarm_events(frame);

-- Current-state records: not part of the device archive, never deduplicated.
CREATE TABLE current_states (
    id             INTEGER PRIMARY KEY,
    device         INTEGER NOT NULL REFERENCES devices(id),
    frame          INTEGER NOT NULL REFERENCES raw_frames(id),
    received_at_us INTEGER NOT NULL,
    record_index   INTEGER,
    event_code     INTEGER,
    event_time     INTEGER,
    fix_time       INTEGER,
    valid          INTEGER,
    satellites     INTEGER,
    latitude       REAL,
    longitude      REAL,
    altitude_m     REAL,
    speed_kmh      REAL,
    course         INTEGER,
    odometer_km    REAL,
    power_mv       INTEGER,
    battery_mv     INTEGER,
    gsm_level      INTEGER,
    fields         TEXT    NOT NULL
);
CREATE INDEX current_states_frame ON current_states(frame);
CREATE INDEX current_states_device_received_at ON current_states(device, received_at_us);

-- FLEX 2.0 additional records (~E, ~X), deduplicated like records.
CREATE TABLE ext_records (
    id             INTEGER PRIMARY KEY,
    device         INTEGER NOT NULL REFERENCES devices(id),
    frame          INTEGER NOT NULL REFERENCES raw_frames(id),
    event_index    INTEGER NULL,
    struct_version INTEGER NOT NULL,
    record_index   INTEGER,
    event_code     INTEGER,
    event_time     INTEGER,
    fix_time       INTEGER,
    valid          INTEGER,
    satellites     INTEGER,
    latitude       REAL,
    longitude      REAL,
    altitude_m     REAL,
    speed_kmh      REAL,
    course         INTEGER,
    odometer_km    REAL,
    power_mv       INTEGER,
    battery_mv     INTEGER,
    gsm_level      INTEGER,
    fields         TEXT    NOT NULL,
    received_at_us INTEGER NOT NULL,
    UNIQUE (device, record_index, event_time)
);
CREATE INDEX ext_records_frame ON ext_records(frame);

-- What operators and runbooks query: one row per stored record, times as RFC 3339 UTC text.
CREATE VIEW v_records AS
SELECT d.imei                                                    AS imei,
       r.record_index                                            AS record_index,
       strftime('%Y-%m-%dT%H:%M:%SZ', r.event_time, 'unixepoch') AS event_time,
       strftime('%Y-%m-%dT%H:%M:%SZ', r.fix_time, 'unixepoch')   AS fix_time,
       r.latitude                                                AS latitude,
       r.longitude                                               AS longitude,
       r.speed_kmh                                               AS speed_kmh
FROM records r
JOIN devices d ON d.id = r.device;
