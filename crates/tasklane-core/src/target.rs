//! A queue's `http_target`: overrides applied to every HTTP task of the queue when it is
//! dispatched (so they also reach tasks created before the override was set).

use crate::header;
use crate::status::Status;
use crate::task::{AuthToken, HttpMethod, HttpRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// When the URI override applies. Unspecified means `Always`, as in Cloud Tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnforceMode {
    /// Only the parts of the URL the task does not have (a port, a path other than `/`, a query).
    IfNotExists,
    #[default]
    Always,
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
    /// Check a target a caller wrote, cleaning its headers as a task's are cleaned.
    pub fn validate(mut self) -> Result<HttpTarget, Status> {
        if let Some(u) = &self.uri_override {
            if let Some(host) = &u.host
                && (host.is_empty() || host.contains(['/', '?', '#', '@', ' ']))
            {
                return Err(Status::invalid_argument(format!(
                    "http_target.uri_override.host \"{host}\" must be a host name, without scheme, port or path"
                )));
            }
            if let Some(port) = u.port
                && !(0..=65535).contains(&port)
            {
                return Err(Status::invalid_argument(format!(
                    "http_target.uri_override.port is {port}; it must be between 1 and 65535, or 0 to clear the port"
                )));
            }
            if let Some(path) = &u.path
                && !path.is_empty()
                && !path.starts_with('/')
            {
                return Err(Status::invalid_argument(format!(
                    "http_target.uri_override.path_override.path \"{path}\" must start with '/'"
                )));
            }
        }
        match &self.auth {
            Some(AuthToken::Oidc { service_account_email, audience })
                if service_account_email.is_empty() || audience.is_empty() =>
            {
                return Err(Status::invalid_argument(
                    "http_target.oidc_token needs both service_account_email and audience",
                ));
            }
            Some(AuthToken::OAuth { service_account_email, scope })
                if service_account_email.is_empty() || scope.is_empty() =>
            {
                return Err(Status::invalid_argument(
                    "http_target.oauth_token needs both service_account_email and scope",
                ));
            }
            _ => {}
        }
        self.headers = header::sanitize(self.headers)
            .map_err(|e| Status::invalid_argument(format!("http_target.header_overrides: {e}")))?;
        Ok(self)
    }

    /// The request to send for a task of this queue.
    pub fn apply(&self, task: &HttpRequest) -> HttpRequest {
        let mut out = task.clone();
        if let Some(u) = &self.uri_override {
            out.url = u.apply(&task.url);
        }
        if let Some(m) = self.method {
            out.method = m;
            if !m.allows_body() {
                out.body = Vec::new();
            }
        }
        for (name, value) in &self.headers {
            out.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            out.headers.push((name.clone(), value.clone()));
        }
        if self.auth.is_some() {
            out.auth = self.auth.clone();
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
        let always = self.mode == EnforceMode::Always;
        let scheme = match self.scheme {
            Some(s) if always => s.as_str(),
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
        let path = match &self.path {
            Some(path) if always || p.path.is_empty() || p.path == "/" => path.as_str(),
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
        assert!(out.body.is_empty(), "a GET override drops the body");
        assert_eq!(out.headers, vec![("X-Keep".to_string(), "1".to_string()), ("X-Env".into(), "prod".into())]);
        assert_eq!(out.auth, target.auth);
    }

    #[test]
    fn bad_targets_say_what_to_fix() {
        let bad = [
            (
                HttpTarget {
                    uri_override: Some(UriOverride { host: Some(String::new()), ..Default::default() }),
                    ..Default::default()
                },
                "host",
            ),
            (
                HttpTarget {
                    uri_override: Some(UriOverride { port: Some(70000), ..Default::default() }),
                    ..Default::default()
                },
                "port",
            ),
            (
                HttpTarget {
                    uri_override: Some(UriOverride { path: Some("x".into()), ..Default::default() }),
                    ..Default::default()
                },
                "must start with '/'",
            ),
            (
                HttpTarget {
                    auth: Some(AuthToken::Oidc { service_account_email: "a@b".into(), audience: String::new() }),
                    ..Default::default()
                },
                "audience",
            ),
            (
                HttpTarget {
                    auth: Some(AuthToken::OAuth { service_account_email: String::new(), scope: "s".into() }),
                    ..Default::default()
                },
                "scope",
            ),
            (HttpTarget { headers: vec![("bad name".into(), "v".into())], ..Default::default() }, "header_overrides"),
        ];
        for (target, needle) in bad {
            let e = target.clone().validate().unwrap_err();
            assert!(e.message.contains(needle), "{target:?}: {}", e.message);
        }
    }
}
