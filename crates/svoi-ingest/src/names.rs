//! Names of the metrics the ingest side emits through the `metrics` facade, their help texts
//! and histogram buckets. The binary installs the exporter; nothing here formats anything.
//!
//! Labels have bounded value sets: message type names and decode error reasons come from the
//! codec's fixed lists. No metric carries an IMEI or an address.

/// Counter: messages received, by `type` (the archived kind name, e.g. `~A`, `*>S`, `ping`).
pub const MESSAGES_RECEIVED: &str = "svoi_messages_received_total";
/// Counter: messages that failed to decode, by `reason` (the codec's reason code).
pub const DECODE_ERRORS: &str = "svoi_decode_errors_total";
/// Histogram: seconds from a message's arrival to its acknowledgement being written, for
/// answers that wait for a commit.
pub const ACK_LATENCY: &str = "svoi_ack_latency_seconds";
/// Histogram: seconds one group commit took (including retries).
pub const COMMIT_DURATION: &str = "svoi_commit_duration_seconds";
/// Histogram: frames per group commit.
pub const COMMIT_BATCH_FRAMES: &str = "svoi_commit_batch_frames";
/// Histogram: rows per group commit (records plus one per frame; what `batch_max_records`
/// bounds).
pub const COMMIT_BATCH_ROWS: &str = "svoi_commit_batch_rows";

/// Latency buckets in seconds, 0.5 ms to 10 s (also the default for other processes'
/// histograms in seconds).
pub const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Size buckets, 1 to 10,000.
const SIZES: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Bucket boundaries for each histogram this crate emits.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (ACK_LATENCY, SECONDS),
    (COMMIT_DURATION, SECONDS),
    (COMMIT_BATCH_FRAMES, SIZES),
    (COMMIT_BATCH_ROWS, SIZES),
];

/// Registers help texts with the installed recorder (call once after installing it).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        MESSAGES_RECEIVED,
        "Device messages received, by message type"
    );
    describe_counter!(
        DECODE_ERRORS,
        "Device messages that failed to decode, by reason"
    );
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "Time from a message's arrival to its acknowledgement after the commit"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Duration of one group commit"
    );
    describe_histogram!(COMMIT_BATCH_FRAMES, "Frames per group commit");
    describe_histogram!(
        COMMIT_BATCH_ROWS,
        "Rows (records plus one per frame) per group commit"
    );
}
