//! Rules for the headers a task carries: which a caller may set, how values are
//! cleaned, and which Cloud Tasks sets itself at dispatch.

/// What Cloud Tasks sends as `User-Agent`, whatever the task asked for.
pub const USER_AGENT: &str = "Google-Cloud-Tasks";

/// The longest header value kept; longer values are dropped.
pub const MAX_HEADER_VALUE_LEN: usize = 8 * 1024;

/// Headers a task may not set: they belong to the connection or to the dispatcher.
fn reserved(name_lower: &str) -> bool {
    matches!(
        name_lower,
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "user-agent"
    ) || name_lower.starts_with("x-google-")
        || name_lower.starts_with("x-appengine-")
        || name_lower.starts_with("x-cloudtasks-")
        || name_lower.starts_with(TASKLANE_PREFIX)
}

/// tasklane's own delivery headers (`X-Tasklane-Job-Id`, `-Job-Token`): only the
/// dispatcher sets them, so a worker can trust them.
pub const TASKLANE_PREFIX: &str = "x-tasklane-";

/// Whether a stored header is tasklane's own (tasks kept from before it was reserved).
pub fn is_tasklane_header(name: &str) -> bool {
    name.as_bytes().get(..TASKLANE_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(TASKLANE_PREFIX.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Clean the headers of a new task: reserved ones and over-long values are dropped,
/// CR and LF in values become spaces. A name that is not an HTTP token is an error.
pub fn sanitize(headers: Vec<(String, String)>) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.trim().to_string();
        if !valid_name(&name) {
            return Err(format!(
                "Invalid header name \"{}\": header names may contain only letters, digits and !#$%&'*+-.^_`|~",
                name.escape_default()
            ));
        }
        let lower = name.to_ascii_lowercase();
        if reserved(&lower) || value.len() > MAX_HEADER_VALUE_LEN {
            continue;
        }
        let value: String = value.chars().map(|c| if c == '\r' || c == '\n' || c == '\0' { ' ' } else { c }).collect();
        // A later value for the same name replaces an earlier one.
        out.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn reserved_headers_are_dropped() {
        let got = sanitize(h(&[
            ("Host", "evil"),
            ("Content-Length", "5"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("X-Google-Foo", "1"),
            ("X-AppEngine-QueueName", "q"),
            ("X-CloudTasks-TaskName", "t"),
            ("X-Tasklane-Job-Id", "j"),
            ("x-tasklane-job-token", "forged"),
            ("User-Agent", "curl"),
            ("Content-Type", "application/json"),
            ("X-Custom", "yes"),
        ]))
        .unwrap();
        assert_eq!(got, h(&[("Content-Type", "application/json"), ("X-Custom", "yes")]));
    }

    #[test]
    fn values_are_cleaned() {
        let long = "v".repeat(MAX_HEADER_VALUE_LEN + 1);
        let got = sanitize(h(&[("A", "one\r\nInjected: x"), ("B", &long), ("a", "two")])).unwrap();
        assert_eq!(got, h(&[("a", "two")]));
        let got = sanitize(h(&[("A", "one\r\nInjected: x")])).unwrap();
        assert_eq!(got, h(&[("A", "one  Injected: x")]));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(sanitize(h(&[("Bad Name", "x")])).unwrap_err().contains("Bad Name"));
        assert!(sanitize(h(&[("", "x")])).is_err());
        assert!(sanitize(h(&[("X:Y", "x")])).is_err());
    }
}
