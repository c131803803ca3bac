//! Names and help texts of the metrics the API emits through the `metrics` facade. The binary
//! installs the exporter; nothing here formats anything.
//!
//! Labels have bounded value sets: `route` is a route template or `unmatched` (never a raw
//! path, so no IMEI), `method` a standard method or `other`, `status` a status code, `reason`
//! one of five authentication failure reasons.

/// Counter: HTTP requests answered, by `route`, `method` and `status`.
pub const HTTP_REQUESTS: &str = "svoi_http_requests_total";
/// Histogram: seconds from a request's arrival to its response, by `route`.
pub const HTTP_REQUEST_DURATION: &str = "svoi_http_request_duration_seconds";
/// Counter: refused API credentials, by `reason` (`missing`, `malformed`, `unknown`,
/// `revoked`, `mismatch`).
pub const AUTH_FAILURES: &str = "svoi_api_auth_failures_total";

/// Registers help texts with the installed recorder. [`crate::ApiState::new`] calls it, so a
/// binary that installs its recorder before building the state needs nothing more; calling
/// it again is harmless.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by route template"
    );
    describe_counter!(
        AUTH_FAILURES,
        "API requests refused for their credentials, by reason"
    );
}
