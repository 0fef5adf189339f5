//! Durations and timestamps as the APIs read them (`"3.5s"`, RFC 3339, `/v1`'s `90s`/`10m`),
//! from arbitrary text: parsing never panics, and what parses formats back to text that
//! parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasklane_server::rest::proto_json::{format_duration_micros, format_timestamp, parse_duration_micros, parse_timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(us) = parse_duration_micros(text) {
        assert_eq!(parse_duration_micros(&format_duration_micros(us)), Some(us), "{text:?}");
    }
    if let Some(t) = parse_timestamp(text) {
        assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t), "{text:?}");
    }
    let _ = tasklane_server::v1::parse_duration("field", text);
});
