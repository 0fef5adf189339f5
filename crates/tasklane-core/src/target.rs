//! A queue's `http_target`: overrides applied to every HTTP task of the queue when it is
//! dispatched (so they also reach tasks created before the override was set).

use crate::header;
use crate::status::Status;
use crate::task::{AuthToken, HttpMethod, HttpRequest};

/// The scheme a URI override sets. `Unspecified` is kept when a caller sets it (the real
/// service keeps an explicit 0) and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Unspecified,
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Unspecified => "unspecified",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl Scheme {
    /// A `UriOverride.Scheme` number; one the API lacks refuses the whole target.
    pub fn from_number(n: Option<i32>) -> Result<Option<Scheme>, Status> {
        match n {
            None => Ok(None),
            Some(0) => Ok(Some(Scheme::Unspecified)),
            Some(1) => Ok(Some(Scheme::Http)),
            Some(2) => Ok(Some(Scheme::Https)),
            Some(_) => Err(texts::error(texts::BAD_TARGET)),
        }
    }

    pub fn number(self) -> i32 {
        match self {
            Scheme::Unspecified => 0,
            Scheme::Http => 1,
            Scheme::Https => 2,
        }
    }
}

/// When the URI override applies. Unspecified (kept as such, as the real service keeps
/// it) behaves as `Always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnforceMode {
    #[default]
    Unspecified,
    /// Only the parts of the URL the task does not have (a port, a path other than `/`, a query).
    IfNotExists,
    Always,
}

impl EnforceMode {
    /// A `UriOverrideEnforceMode` number; one the API lacks refuses the whole target.
    pub fn from_number(n: i32) -> Result<EnforceMode, Status> {
        match n {
            0 => Ok(EnforceMode::Unspecified),
            1 => Ok(EnforceMode::IfNotExists),
            2 => Ok(EnforceMode::Always),
            _ => Err(texts::error(texts::BAD_TARGET)),
        }
    }

    pub fn number(self) -> i32 {
        match self {
            EnforceMode::Unspecified => 0,
            EnforceMode::IfNotExists => 1,
            EnforceMode::Always => 2,
        }
    }
}

/// The texts the real service answers a bad `http_target` with.
pub mod texts {
    /// An enum number the API does not define, anywhere in the target.
    pub const BAD_TARGET: &str = "Error in parsing HttpTarget. ";
    pub const INVALID_URI_OVERRIDE: &str = "Error in parsing HttpTarget. Invalid uri_override.";
    pub const INVALID_HOST: &str = "Error in parsing HttpTarget. Invalid Host.";
    pub const INVALID_PORT: &str = "Error in parsing HttpTarget. Port number should be a positive integer.";

    /// One of these texts with the `ErrorInfo` the real service attaches: its reason, and
    /// the text after `Error in parsing HttpTarget. ` as the invalid field.
    pub fn error(text: &str) -> crate::Status {
        let field = text.strip_prefix(BAD_TARGET).unwrap_or("");
        crate::Status::invalid_argument(text).with_detail(crate::status::Detail::cloud_tasks(
            "INVALID_INPUT_ON_HTTP_TARGET_OVERRIDE",
            &[("invalid_field", field)],
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UriOverride {
    pub scheme: Option<Scheme>,
    pub host: Option<String>,
    /// 0 clears the port.
    pub port: Option<i64>,
    /// Empty clears the path.
    pub path: Option<String>,
    /// Empty clears the query.
    pub query: Option<String>,
    pub mode: EnforceMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpTarget {
    pub uri_override: Option<UriOverride>,
    pub method: Option<HttpMethod>,
    /// Set on every task, replacing a task header of the same name.
    pub headers: Vec<(String, String)>,
    /// Replaces the task's token (and so its `Authorization` header).
    pub auth: Option<AuthToken>,
}

impl HttpTarget {
    /// Check a target as a caller wrote it: its URI override, its token's service
    /// account, its header overrides (kept as written).
    pub fn validate(self) -> Result<HttpTarget, Status> {
        self.check_uri_override()?;
        // A token without an audience or scope is kept: each task completes it from its URL.
        crate::task::check_token_email(self.auth.as_ref())?;
        header::check_overrides(&self.headers).map_err(Status::invalid_argument)?;
        Ok(self)
    }

    /// The check a target made by merging an update into the stored one gets: its URI
    /// override must still say something (the real service checks no more after a merge).
    pub fn check_uri_override(&self) -> Result<(), Status> {
        let Some(u) = &self.uri_override else { return Ok(()) };
        if u.scheme.is_none() && u.host.is_none() && u.port.unwrap_or(0) == 0 && u.path.is_none() && u.query.is_none() {
            return Err(texts::error(texts::INVALID_URI_OVERRIDE));
        }
        if let Some(host) = &u.host
            && (host.is_empty() || host.contains(['/', '?', '#', '@', ' ', ':']))
        {
            return Err(texts::error(texts::INVALID_HOST));
        }
        if u.port.is_some_and(|p| p < 0) {
            return Err(texts::error(texts::INVALID_PORT));
        }
        Ok(())
    }

    /// The request to send for a task of this queue.
    pub fn apply(&self, task: &HttpRequest) -> HttpRequest {
        let mut out = task.clone();
        if let Some(u) = &self.uri_override {
            out.url = u.apply(&task.url);
        }
        if let Some(m) = self.method {
            // The body stays: a request without room for it is not sent (as in Cloud Tasks).
            out.method = m;
        }
        for (name, value) in &self.headers {
            out.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            out.headers.push((name.clone(), value.clone()));
        }
        if let Some(auth) = &self.auth {
            out.auth = Some(auth.clone().with_defaults(&task.url));
        }
        out
    }
}

/// A URL split into the parts an override replaces: `scheme://authority[:port]path[?query][#fragment]`.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn split(url: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    // A bracketed IPv6 host may hold colons; the port follows the closing bracket.
    let port_at = if hostport.starts_with('[') {
        hostport.find(']').and_then(|end| hostport[end..].find(':').map(|i| end + i))
    } else {
        hostport.rfind(':')
    };
    let (host, port) = match port_at {
        Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
        None => (hostport, None),
    };
    Some(Parts { scheme, userinfo, host, port, path, query, fragment })
}

impl UriOverride {
    pub fn apply(&self, url: &str) -> String {
        let Some(p) = split(url) else { return url.to_string() };
        let always = self.mode != EnforceMode::IfNotExists;
        let scheme = match self.scheme {
            Some(s) if always && s != Scheme::Unspecified => s.as_str(),
            _ => p.scheme,
        };
        let host = match &self.host {
            Some(h) if always => h.as_str(),
            _ => p.host,
        };
        let port = match self.port {
            Some(n) if always || p.port.is_none() => (n != 0).then(|| n.to_string()),
            _ => p.port.map(String::from),
        };
        // A path stored without its leading `/` (the real service keeps it so) gets one.
        let with_slash;
        let path = match &self.path {
            Some(path) if always || p.path.is_empty() || p.path == "/" => {
                with_slash = if path.is_empty() || path.starts_with('/') { path.clone() } else { format!("/{path}") };
                with_slash.as_str()
            }
            _ => p.path,
        };
        let query = match &self.query {
            Some(q) if always || p.query.is_none() => (!q.is_empty()).then_some(q.trim_start_matches('?')),
            _ => p.query,
        };
        let mut out = format!("{scheme}://");
        if let Some(u) = p.userinfo {
            out.push_str(u);
            out.push('@');
        }
        out.push_str(host);
        if let Some(port) = port {
            out.push(':');
            out.push_str(&port);
        }
        out.push_str(path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = p.fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(mode: EnforceMode) -> UriOverride {
        UriOverride { mode, ..Default::default() }
    }

    #[test]
    fn always_replaces_each_part_given_and_keeps_the_rest() {
        let cases = [
            (
                UriOverride { host: Some("example.net".into()), ..uri(EnforceMode::Always) },
                "https://www.google.com",
                "https://example.net",
            ),
            (
                UriOverride { port: Some(123), ..uri(EnforceMode::Always) },
                "https://www.example.com/example",
                "https://www.example.com:123/example",
            ),
            (UriOverride { port: Some(0), ..uri(EnforceMode::Always) }, "http://h:8080/a?b=1", "http://h/a?b=1"),
            (UriOverride { scheme: Some(Scheme::Http), ..uri(EnforceMode::Always) }, "https://h/a", "http://h/a"),
            (
                UriOverride { path: Some("/v2/run".into()), ..uri(EnforceMode::Always) },
                "http://h:1/a/b?x=1#f",
                "http://h:1/v2/run?x=1#f",
            ),
            (UriOverride { path: Some(String::new()), ..uri(EnforceMode::Always) }, "http://h/a/b?x=1", "http://h?x=1"),
            (UriOverride { query: Some("y=2".into()), ..uri(EnforceMode::Always) }, "http://h/a?x=1", "http://h/a?y=2"),
            (UriOverride { query: Some(String::new()), ..uri(EnforceMode::Always) }, "http://h/a?x=1", "http://h/a"),
            (
                UriOverride { host: Some("new".into()), port: Some(9), ..uri(EnforceMode::Always) },
                "http://u:p@[::1]:80/a",
                "http://u:p@new:9/a",
            ),
        ];
        for (o, url, want) in cases {
            assert_eq!(o.apply(url), want, "{o:?} on {url}");
        }
    }

    #[test]
    fn if_not_exists_fills_only_what_the_task_url_lacks() {
        let o = UriOverride {
            scheme: Some(Scheme::Https),
            host: Some("other".into()),
            port: Some(8443),
            path: Some("/default".into()),
            query: Some("q=1".into()),
            mode: EnforceMode::IfNotExists,
        };
        assert_eq!(o.apply("http://h"), "http://h:8443/default?q=1");
        assert_eq!(o.apply("http://h/"), "http://h:8443/default?q=1");
        assert_eq!(o.apply("http://h:80/mine?x=2"), "http://h:80/mine?x=2");
    }

    #[test]
    fn apply_sets_method_headers_and_token() {
        let target = HttpTarget {
            uri_override: None,
            method: Some(HttpMethod::Get),
            headers: vec![("X-Env".into(), "prod".into())],
            auth: Some(AuthToken::Oidc { service_account_email: "a@b".into(), audience: "aud".into() }),
        }
        .validate()
        .unwrap();
        let task = HttpRequest {
            url: "http://h/a".into(),
            method: HttpMethod::Post,
            headers: vec![("x-env".into(), "dev".into()), ("X-Keep".into(), "1".into())],
            body: b"body".to_vec(),
            auth: None,
        };
        let out = target.apply(&task);
        assert_eq!(out.method, HttpMethod::Get);
        // The body stays, so the dispatcher can refuse to send a GET that would lose it.
        assert_eq!(out.body, b"body");
        assert_eq!(out.headers, vec![("X-Keep".to_string(), "1".to_string()), ("X-Env".into(), "prod".into())]);
        assert_eq!(out.auth, target.auth);
    }

    #[test]
    fn bad_targets_say_what_to_fix() {
        let uri = |u: UriOverride| HttpTarget { uri_override: Some(u), ..Default::default() };
        let host = |h: &str| uri(UriOverride { host: Some(h.into()), ..Default::default() });
        let bad = [
            (uri(UriOverride::default()), texts::INVALID_URI_OVERRIDE),
            (uri(UriOverride { mode: EnforceMode::Always, ..Default::default() }), texts::INVALID_URI_OVERRIDE),
            (host(""), texts::INVALID_HOST),
            (host("https://example.net"), texts::INVALID_HOST),
            (host("example.net:8080"), texts::INVALID_HOST),
            (host("example.net/path"), texts::INVALID_HOST),
            (uri(UriOverride { port: Some(-1), ..Default::default() }), texts::INVALID_PORT),
            (
                HttpTarget {
                    auth: Some(AuthToken::OAuth { service_account_email: String::new(), scope: "s".into() }),
                    ..Default::default()
                },
                "service_account_email must be set.",
            ),
            (
                HttpTarget {
                    auth: Some(AuthToken::Oidc { service_account_email: "tasks@".into(), audience: "a".into() }),
                    ..Default::default()
                },
                "Request contains an invalid argument.",
            ),
            (
                HttpTarget { headers: vec![("Host".into(), "v".into())], ..Default::default() },
                "Invalid headers found: Host",
            ),
        ];
        for (target, needle) in bad {
            let e = target.clone().validate().unwrap_err();
            assert!(e.message.contains(needle), "{target:?}: {}", e.message);
        }
        // What the real service lets through: an explicit unspecified scheme alone, port 0
        // with an empty path and query, a port past 65535, paths and queries as written.
        let good = [
            UriOverride { scheme: Some(Scheme::Unspecified), ..Default::default() },
            UriOverride { port: Some(0), path: Some(String::new()), query: Some(String::new()), ..Default::default() },
            UriOverride { port: Some(65536), ..Default::default() },
            UriOverride { path: Some("path".into()), ..Default::default() },
            UriOverride { path: Some("/a b".into()), query: Some("?x=1".into()), ..Default::default() },
        ];
        for u in good {
            assert!(uri(u.clone()).validate().is_ok(), "{u:?}");
        }
    }

    #[test]
    fn unspecified_parts_change_nothing_and_a_bare_path_gets_its_slash() {
        let u = UriOverride { scheme: Some(Scheme::Unspecified), path: Some("run".into()), ..Default::default() };
        assert_eq!(u.apply("https://h/a?x=1"), "https://h/run?x=1");
    }

    #[test]
    fn a_queue_token_without_audience_or_scope_is_completed_per_task() {
        let oidc = HttpTarget {
            auth: Some(AuthToken::Oidc { service_account_email: "a@b".into(), audience: String::new() }),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let task = HttpRequest {
            url: "https://w.example/run?x=1".into(),
            method: HttpMethod::Post,
            headers: Vec::new(),
            body: Vec::new(),
            auth: None,
        };
        let sent = oidc.apply(&task).auth.unwrap();
        assert_eq!(sent, AuthToken::Oidc { service_account_email: "a@b".into(), audience: task.url.clone() });
        let oauth = HttpTarget {
            auth: Some(AuthToken::OAuth { service_account_email: "a@b".into(), scope: String::new() }),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let sent = oauth.apply(&task).auth.unwrap();
        assert_eq!(
            sent,
            AuthToken::OAuth { service_account_email: "a@b".into(), scope: crate::task::DEFAULT_OAUTH_SCOPE.into() }
        );
    }
}
