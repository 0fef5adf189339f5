//! Rules for the headers a task carries: which a caller may set, how values are
//! cleaned, and which Cloud Tasks sets itself at dispatch.

/// What Cloud Tasks sends as `User-Agent`, whatever the task asked for.
pub const USER_AGENT: &str = "Google-Cloud-Tasks";

/// A header is kept when its name, value and the four bytes of `": "` and CRLF fit in
/// this many bytes (the real service keeps an 8182-byte value under a 6-byte name).
pub const MAX_HEADER_LEN: usize = 8192;

/// Headers the real service drops from a new task without a word: they belong to the
/// connection, to a proxy, or to Google's own front end.
fn dropped(name_lower: &str) -> bool {
    matches!(
        name_lower,
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "via"
            | "accept-encoding"
            | "x-forwarded-for"
            | "from"
            | "x-google"
            | "user-agent"
    ) || name_lower.starts_with("x-google-")
        || name_lower.starts_with("x-appengine-")
        || name_lower.starts_with(TASKLANE_PREFIX)
}

/// tasklane's own delivery headers (`X-Tasklane-Job-Id`, `-Job-Token`): only the
/// dispatcher sets them, so a worker can trust them.
pub const TASKLANE_PREFIX: &str = "x-tasklane-";

/// The prefix of the headers the dispatcher sets about the task (`X-CloudTasks-TaskName`…).
pub const CLOUD_TASKS_PREFIX: &str = "x-cloudtasks-";

fn has_prefix(name: &str, prefix: &str) -> bool {
    name.as_bytes().get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether a stored header is one only the dispatcher may send: tasklane's own, or one
/// of Cloud Tasks' about the task (a task may store them, as the real service lets it,
/// but a worker must be able to trust what arrives).
pub fn is_dispatcher_header(name: &str) -> bool {
    has_prefix(name, TASKLANE_PREFIX) || has_prefix(name, CLOUD_TASKS_PREFIX)
}

/// A name the real service keeps: not empty, ASCII, no space, tab, colon or control.
fn kept_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// A value as the real service stores it: cut at a NUL, CR and LF each become `_`;
/// `None` (the header is dropped) when that leaves it empty, or it holds a non-ASCII
/// character or a control other than tab.
fn kept_value(value: &str) -> Option<String> {
    let value = value.split('\0').next().unwrap_or("");
    let value: String = value.chars().map(|c| if c == '\r' || c == '\n' { '_' } else { c }).collect();
    let bad = |c: char| !c.is_ascii() || (c.is_ascii_control() && c != '\t');
    (!value.is_empty() && !value.chars().any(bad)).then_some(value)
}

/// The headers of a new HTTP task as the real service stores them. Nothing here fails the
/// task: headers it would not keep are dropped, values are cleaned, and `User-Agent` is
/// always `Google-Cloud-Tasks`. A later value for a name replaces an earlier one.
pub fn clean_task_headers(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        if !kept_name(&name) || dropped(&name.to_ascii_lowercase()) {
            continue;
        }
        let Some(value) = kept_value(&value) else { continue };
        if name.len() + value.len() + 4 > MAX_HEADER_LEN {
            continue;
        }
        out.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        out.push((name, value));
    }
    out.push(("User-Agent".to_string(), USER_AGENT.to_string()));
    out
}

/// Header names a queue's `header_overrides` may not set.
fn refused_override(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.is_empty()
        || name.contains(':')
        || matches!(
            lower.as_str(),
            "host" | "user-agent" | "content-length" | "connection" | "transfer-encoding" | "x-forwarded-for"
        )
        || lower.starts_with("x-google-")
        || lower.starts_with("x-appengine-")
        || lower.starts_with(CLOUD_TASKS_PREFIX)
        || lower.starts_with(TASKLANE_PREFIX)
}

/// Check a queue's header overrides as the real service does: a reserved or malformed
/// name refuses the whole target, naming every such header; the rest are kept verbatim.
pub fn check_overrides(headers: &[(String, String)]) -> Result<(), String> {
    let bad: Vec<&str> = headers.iter().filter(|(n, _)| refused_override(n)).map(|(n, _)| n.as_str()).collect();
    if bad.is_empty() {
        return Ok(());
    }
    let named: Vec<&str> = bad.into_iter().filter(|n| !n.is_empty()).collect();
    Err(format!(
        "Error in parsing HttpTarget.headers. Header name cannot be empty or start with reserved prefixes. \
         Invalid headers found: {}",
        named.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn headers_the_real_service_drops_or_keeps() {
        let dropped = [
            ("Host", "evil"),
            ("Content-Length", "5"),
            ("Connection", "close"),
            ("Keep-Alive", "1"),
            ("Proxy-Authorization", "x"),
            ("Proxy-Connection", "x"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Via", "1.1 p"),
            ("Accept-Encoding", "gzip"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("From", "a@b"),
            ("X-Google", "1"),
            ("X-Google-Foo", "1"),
            ("X-AppEngine-QueueName", "q"),
            ("X-Tasklane-Job-Id", "j"),
            ("User-Agent", "curl"),
        ];
        let kept = [
            ("Authorization", "Bearer x"),
            ("content-type", "application/json"),
            ("Trailer", "x"),
            ("X-Forwarded-Proto", "https"),
            ("X-Goog-Thing", "1"),
            ("X-CloudTasks-TaskName", "mine"),
        ];
        let got = clean_task_headers(h(&[&dropped[..], &kept[..]].concat()));
        assert_eq!(got, h(&[&kept[..], &[("User-Agent", "Google-Cloud-Tasks")]].concat()));
    }

    #[test]
    fn bad_names_and_values_are_dropped_or_cleaned_never_refused() {
        let ua = ("User-Agent", "Google-Cloud-Tasks");
        for name in ["", "Bad Name", "Tab\tName", "X:Y", "Ü"] {
            assert_eq!(clean_task_headers(h(&[(name, "v")])), h(&[ua]), "{name:?}");
        }
        assert_eq!(clean_task_headers(h(&[("X/Slash", "v")])), h(&[("X/Slash", "v"), ua]));
        let cases = [
            ("a\nb", Some("a_b")),
            ("a\r\nb", Some("a__b")),
            ("a\0b", Some("a")),
            ("a\tb", Some("a\tb")),
            (" ", Some(" ")),
            ("", None),
            ("ü", None),
            ("a\u{1}", None),
            ("a\u{7f}", None),
        ];
        for (value, kept) in cases {
            let want = match kept {
                Some(v) => h(&[("X-Six", v), ua]),
                None => h(&[ua]),
            };
            assert_eq!(clean_task_headers(h(&[("X-Six", value)])), want, "{value:?}");
        }
    }

    #[test]
    fn a_header_fits_in_8192_bytes_with_its_separators() {
        let fits = "v".repeat(8182);
        assert_eq!(clean_task_headers(h(&[("X-Name", &fits)]))[0].1.len(), 8182);
        let over = "v".repeat(8183);
        assert_eq!(clean_task_headers(h(&[("X-Name", &over)])).len(), 1);
    }

    #[test]
    fn reserved_overrides_are_refused_by_name() {
        let err = check_overrides(&h(&[("User-Agent", "x"), ("X-Ok", "1"), ("Host", "h")])).unwrap_err();
        assert_eq!(
            err,
            "Error in parsing HttpTarget.headers. Header name cannot be empty or start with reserved prefixes. \
             Invalid headers found: User-Agent, Host"
        );
        let err = check_overrides(&h(&[("", "x")])).unwrap_err();
        assert!(err.ends_with("Invalid headers found: "), "{err}");
        for bad in ["a:b", "host", "Content-Length", "Connection", "Transfer-Encoding", "X-Forwarded-For", "X-Google-A"]
        {
            assert!(check_overrides(&h(&[(bad, "x")])).is_err(), "{bad}");
        }
        for bad in ["X-AppEngine-A", "X-CloudTasks-TaskName", "X-Tasklane-Job-Id"] {
            assert!(check_overrides(&h(&[(bad, "x")])).is_err(), "{bad}");
        }
        let kept = h(&[
            ("X-A", ""),
            ("X-B", "a\r\nb"),
            ("x-c", "1"),
            ("X-C", "2"),
            ("Content-Type", "t"),
            ("Authorization", "a"),
        ]);
        assert!(check_overrides(&kept).is_ok());
    }
}
