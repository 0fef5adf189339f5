//! The `ListQueues` filter: the real service's filter language (AIP-160) over every field
//! of a queue. Restrictions compare a field path (snake_case or camelCase, any case) with a
//! value: `:` (a string contains the text, any case; `: *` the field is set), `=`, `!=`,
//! `<`, `<=`, `>`, `>=` (numbers, durations like `1s`, quoted RFC 3339 times, enums by
//! their number). They combine with `AND`, `OR`, a space (AND), `NOT` or `-`, and
//! parentheses; as in AIP-160, `OR` binds tighter than `AND`. An unset field reads as its
//! zero; a repeated field matches when any element does.

use crate::clock::duration_micros;
use crate::queue::{Queue, QueueState};
use crate::status::Status;
use crate::target::HttpTarget;
use crate::task::AuthToken;

/// A parsed filter, ready to test queues.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueFilter(Option<Expr>);

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Test(Restriction),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Has,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
struct Restriction {
    field: Field,
    op: Op,
    value: Value,
}

/// A value a restriction compares with, typed by its field.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// `: *`
    Present,
    Text(String),
    Number(f64),
}

/// What a field path names, and how its values compare.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Number,
    /// Compared in microseconds; written with a unit (`1.5s`).
    Duration,
    /// Compared in microseconds; written as an RFC 3339 time.
    Time,
    /// Compared by number; written by name.
    Enum(&'static [&'static str]),
    Message,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Field {
    path: &'static str,
    kind: Kind,
}

const STATES: &[&str] = &["STATE_UNSPECIFIED", "RUNNING", "PAUSED", "DISABLED"];
const METHODS: &[&str] = &["HTTP_METHOD_UNSPECIFIED", "POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"];
const SCHEMES: &[&str] = &["SCHEME_UNSPECIFIED", "HTTP", "HTTPS"];
const MODES: &[&str] = &["URI_OVERRIDE_ENFORCE_MODE_UNSPECIFIED", "IF_NOT_EXISTS", "ALWAYS"];

/// Every path of a queue a filter can name.
const FIELDS: &[Field] = &[
    Field { path: "name", kind: Kind::Text },
    Field { path: "state", kind: Kind::Enum(STATES) },
    Field { path: "purge_time", kind: Kind::Time },
    Field { path: "rate_limits", kind: Kind::Message },
    Field { path: "rate_limits.max_dispatches_per_second", kind: Kind::Number },
    Field { path: "rate_limits.max_burst_size", kind: Kind::Number },
    Field { path: "rate_limits.max_concurrent_dispatches", kind: Kind::Number },
    Field { path: "retry_config", kind: Kind::Message },
    Field { path: "retry_config.max_attempts", kind: Kind::Number },
    Field { path: "retry_config.max_retry_duration", kind: Kind::Duration },
    Field { path: "retry_config.min_backoff", kind: Kind::Duration },
    Field { path: "retry_config.max_backoff", kind: Kind::Duration },
    Field { path: "retry_config.max_doublings", kind: Kind::Number },
    Field { path: "stackdriver_logging_config", kind: Kind::Message },
    Field { path: "stackdriver_logging_config.sampling_ratio", kind: Kind::Number },
    Field { path: "app_engine_routing_override", kind: Kind::Message },
    Field { path: "http_target", kind: Kind::Message },
    Field { path: "http_target.uri_override", kind: Kind::Message },
    Field { path: "http_target.uri_override.scheme", kind: Kind::Enum(SCHEMES) },
    Field { path: "http_target.uri_override.host", kind: Kind::Text },
    Field { path: "http_target.uri_override.port", kind: Kind::Number },
    Field { path: "http_target.uri_override.path_override", kind: Kind::Message },
    Field { path: "http_target.uri_override.path_override.path", kind: Kind::Text },
    Field { path: "http_target.uri_override.query_override", kind: Kind::Message },
    Field { path: "http_target.uri_override.query_override.query_params", kind: Kind::Text },
    Field { path: "http_target.uri_override.uri_override_enforce_mode", kind: Kind::Enum(MODES) },
    Field { path: "http_target.http_method", kind: Kind::Enum(METHODS) },
    Field { path: "http_target.header_overrides", kind: Kind::Message },
    Field { path: "http_target.header_overrides.header", kind: Kind::Message },
    Field { path: "http_target.header_overrides.header.key", kind: Kind::Text },
    Field { path: "http_target.header_overrides.header.value", kind: Kind::Text },
    Field { path: "http_target.oauth_token", kind: Kind::Message },
    Field { path: "http_target.oauth_token.service_account_email", kind: Kind::Text },
    Field { path: "http_target.oauth_token.scope", kind: Kind::Text },
    Field { path: "http_target.oidc_token", kind: Kind::Message },
    Field { path: "http_target.oidc_token.service_account_email", kind: Kind::Text },
    Field { path: "http_target.oidc_token.audience", kind: Kind::Text },
];

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// `rateLimits.MaxBurstSize` → `rate_limits.max_burst_size`.
fn canonical_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            // A capital starts a word, unless it starts the name or a segment.
            if !(out.is_empty() || out.ends_with('.') || out.ends_with('_')) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn field(path: &str) -> Result<Field, Status> {
    let canonical = canonical_path(path);
    FIELDS.iter().find(|f| f.path == canonical).copied().ok_or_else(|| invalid(format!("Field not found: '{path}'.")))
}

fn incorrect_type(raw: &str) -> Status {
    invalid(format!("The value '{}' is of incorrect type.", raw.to_ascii_lowercase()))
}

/// A value as written, typed for `field`.
fn typed(field: Field, path: &str, op: Op, raw: &str, quoted: bool) -> Result<Value, Status> {
    if op == Op::Has && raw == "*" && !quoted {
        return Ok(Value::Present);
    }
    match field.kind {
        Kind::Message => Err(invalid(format!(
            "Cannot match a nested type '{path}'. A member field of scalar or enum type must be provided."
        ))),
        Kind::Text => Ok(Value::Text(raw.to_string())),
        Kind::Number => raw.parse::<f64>().map(Value::Number).map_err(|_| incorrect_type(raw)),
        Kind::Duration => parse_duration(raw).map(|us| Value::Number(us as f64)).ok_or_else(|| incorrect_type(raw)),
        Kind::Time => {
            crate::clock::parse_rfc3339(raw).map(|t| Value::Number(t.0 as f64)).ok_or_else(|| incorrect_type(raw))
        }
        Kind::Enum(names) => names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(raw))
            .map(|i| Value::Number(i as f64))
            .ok_or_else(|| incorrect_type(raw)),
    }
}

/// `3600s`, `0.5s`, `1.5m`, `2h` → microseconds; a bare number has no unit and is refused.
fn parse_duration(raw: &str) -> Option<i64> {
    let (number, scale) = if let Some(n) = raw.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = raw.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = raw.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = raw.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    let n: f64 = number.parse().ok()?;
    n.is_finite().then(|| (n * scale).round() as i64)
}

/// The values a queue has at a field: none for a message that is not set, several for a
/// field under a repeated one, otherwise one (an unset scalar reads as its zero).
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Text(String),
    Number(f64),
    Set,
}

fn target_values(t: &HttpTarget, path: &str) -> Vec<Found> {
    let text = |s: &str| vec![Found::Text(s.to_string())];
    let num = |n: f64| vec![Found::Number(n)];
    let uri = t.uri_override.clone().unwrap_or_default();
    let token = |kind_oidc: bool| match (&t.auth, kind_oidc) {
        (Some(AuthToken::Oidc { service_account_email, audience }), true) => {
            Some((service_account_email.clone(), audience.clone()))
        }
        (Some(AuthToken::OAuth { service_account_email, scope }), false) => {
            Some((service_account_email.clone(), scope.clone()))
        }
        _ => None,
    };
    let set = |present: bool| if present { vec![Found::Set] } else { Vec::new() };
    match path {
        "uri_override" => set(t.uri_override.is_some()),
        "uri_override.scheme" => num(uri.scheme.map_or(0, |s| s.number()) as f64),
        "uri_override.host" => text(uri.host.as_deref().unwrap_or("")),
        "uri_override.port" => num(uri.port.unwrap_or(0) as f64),
        "uri_override.path_override" => set(uri.path.is_some()),
        "uri_override.path_override.path" => text(uri.path.as_deref().unwrap_or("")),
        "uri_override.query_override" => set(uri.query.is_some()),
        "uri_override.query_override.query_params" => text(uri.query.as_deref().unwrap_or("")),
        "uri_override.uri_override_enforce_mode" => num(f64::from(uri.mode.number())),
        "http_method" => num(t.method.map_or(0, |m| m as i32) as f64),
        "header_overrides" | "header_overrides.header" => t.headers.iter().map(|_| Found::Set).collect(),
        "header_overrides.header.key" => t.headers.iter().map(|(k, _)| Found::Text(k.clone())).collect(),
        "header_overrides.header.value" => t.headers.iter().map(|(_, v)| Found::Text(v.clone())).collect(),
        "oauth_token" => set(token(false).is_some()),
        "oauth_token.service_account_email" => text(&token(false).unwrap_or_default().0),
        "oauth_token.scope" => text(&token(false).unwrap_or_default().1),
        "oidc_token" => set(token(true).is_some()),
        "oidc_token.service_account_email" => text(&token(true).unwrap_or_default().0),
        _ => text(&token(true).unwrap_or_default().1),
    }
}

fn values(q: &Queue, path: &str) -> Vec<Found> {
    let micros = |d: std::time::Duration| Found::Number(duration_micros(d) as f64);
    let r = &q.rate_limits;
    let c = &q.retry_config;
    let one = |f: Found| vec![f];
    match path {
        "name" => one(Found::Text(q.name.to_string())),
        "state" => one(Found::Number(match q.state {
            QueueState::Running => 1.0,
            QueueState::Paused => 2.0,
            QueueState::Disabled => 3.0,
        })),
        "purge_time" => match q.purge_time {
            Some(t) => vec![Found::Set, Found::Number(t.0 as f64)],
            None => one(Found::Number(0.0)),
        },
        "rate_limits" | "retry_config" => one(Found::Set),
        "rate_limits.max_dispatches_per_second" => one(Found::Number(r.max_dispatches_per_second)),
        "rate_limits.max_burst_size" => one(Found::Number(f64::from(r.max_burst_size))),
        "rate_limits.max_concurrent_dispatches" => one(Found::Number(f64::from(r.max_concurrent_dispatches))),
        "retry_config.max_attempts" => one(Found::Number(f64::from(c.max_attempts))),
        "retry_config.max_retry_duration" => match c.max_retry_duration {
            Some(d) => vec![Found::Set, micros(d)],
            None => one(Found::Number(0.0)),
        },
        "retry_config.min_backoff" => vec![Found::Set, micros(c.min_backoff)],
        "retry_config.max_backoff" => vec![Found::Set, micros(c.max_backoff)],
        "retry_config.max_doublings" => one(Found::Number(f64::from(c.max_doublings))),
        "stackdriver_logging_config" => {
            if q.logging_sampling_ratio > 0.0 {
                one(Found::Set)
            } else {
                Vec::new()
            }
        }
        "stackdriver_logging_config.sampling_ratio" => one(Found::Number(q.logging_sampling_ratio)),
        "app_engine_routing_override" => Vec::new(),
        "http_target" => {
            if q.http_target.is_some() {
                one(Found::Set)
            } else {
                Vec::new()
            }
        }
        other => {
            let sub = other.strip_prefix("http_target.").unwrap_or(other);
            match &q.http_target {
                Some(t) => target_values(t, sub),
                None => target_values(&HttpTarget::default(), sub).into_iter().filter(|f| *f != Found::Set).collect(),
            }
        }
    }
}

impl Restriction {
    fn matches(&self, q: &Queue) -> bool {
        let found = values(q, self.field.path);
        if self.value == Value::Present {
            return found.iter().any(|f| match f {
                Found::Set => true,
                Found::Text(s) => !s.is_empty(),
                Found::Number(n) => *n != 0.0,
            });
        }
        let scalars = found.iter().filter(|f| **f != Found::Set);
        let mut any = false;
        for f in scalars {
            any |= match (f, &self.value) {
                (Found::Text(have), Value::Text(want)) => match self.op {
                    Op::Has => have.to_ascii_lowercase().contains(&want.to_ascii_lowercase()),
                    Op::Eq => have == want,
                    Op::Ne => have != want,
                    Op::Lt => have < want,
                    Op::Le => have <= want,
                    Op::Gt => have > want,
                    Op::Ge => have >= want,
                },
                (Found::Number(have), Value::Number(want)) => match self.op {
                    Op::Has | Op::Eq => have == want,
                    Op::Ne => have != want,
                    Op::Lt => have < want,
                    Op::Le => have <= want,
                    Op::Gt => have > want,
                    Op::Ge => have >= want,
                },
                _ => false,
            };
        }
        any
    }
}

impl Expr {
    fn matches(&self, q: &Queue) -> bool {
        match self {
            Expr::And(all) => all.iter().all(|e| e.matches(q)),
            Expr::Or(any) => any.iter().any(|e| e.matches(q)),
            Expr::Not(e) => !e.matches(q),
            Expr::Test(r) => r.matches(q),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(Op),
    Open,
    Close,
    Minus,
}

fn tokens(filter: &str) -> Result<Vec<Token>, Status> {
    let bad = || invalid(format!("Invalid filter: {filter}"));
    let mut out = Vec::new();
    let mut chars = filter.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Token::Open),
            ')' => out.push(Token::Close),
            ':' => out.push(Token::Op(Op::Has)),
            '=' => out.push(Token::Op(Op::Eq)),
            '!' | '<' | '>' => {
                let eq = chars.next_if(|(_, n)| *n == '=').is_some();
                out.push(Token::Op(match (c, eq) {
                    ('!', true) => Op::Ne,
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    _ => return Err(bad()),
                }));
            }
            '-' if out.last().is_none_or(|t| !matches!(t, Token::Op(_))) => out.push(Token::Minus),
            '"' | '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => text.extend(chars.next().map(|(_, e)| e)),
                        Some((_, q)) if q == c => break,
                        Some((_, other)) => text.push(other),
                        None => return Err(bad()),
                    }
                }
                out.push(Token::Quoted(text));
            }
            _ => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, n)) = chars.peek() {
                    if n.is_whitespace() || "():=!<>\"'".contains(n) {
                        break;
                    }
                    end = j + n.len_utf8();
                    chars.next();
                }
                out.push(Token::Word(filter[i..end].to_string()));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    filter: &'a str,
}

impl Parser<'_> {
    fn bad(&self) -> Status {
        invalid(format!("Invalid filter: {}", self.filter))
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    /// expression := sequence { AND sequence }
    fn expression(&mut self) -> Result<Expr, Status> {
        let mut all = vec![self.sequence()?];
        while self.keyword("AND") {
            self.at += 1;
            all.push(self.sequence()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Expr::And(all) })
    }

    /// sequence := factor { factor } (side by side: AND)
    fn sequence(&mut self) -> Result<Expr, Status> {
        let mut all = vec![self.factor()?];
        while self.peek().is_some_and(|t| *t != Token::Close) && !self.keyword("AND") {
            all.push(self.factor()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Expr::And(all) })
    }

    /// factor := term { OR term }
    fn factor(&mut self) -> Result<Expr, Status> {
        let mut any = vec![self.term()?];
        while self.keyword("OR") {
            self.at += 1;
            any.push(self.term()?);
        }
        Ok(if any.len() == 1 { any.remove(0) } else { Expr::Or(any) })
    }

    /// term := [NOT | -] simple
    fn term(&mut self) -> Result<Expr, Status> {
        if self.keyword("NOT") || self.peek() == Some(&Token::Minus) {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.simple()?)));
        }
        self.simple()
    }

    /// simple := ( expression ) | path op value
    fn simple(&mut self) -> Result<Expr, Status> {
        match self.tokens.get(self.at).cloned() {
            Some(Token::Open) => {
                self.at += 1;
                let e = self.expression()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.bad());
                }
                self.at += 1;
                Ok(e)
            }
            Some(Token::Word(path)) => {
                self.at += 1;
                let Some(Token::Op(op)) = self.tokens.get(self.at).cloned() else {
                    // A bare word names a field that would need a comparison.
                    return Err(field(&path).err().unwrap_or_else(|| self.bad()));
                };
                self.at += 1;
                let (raw, quoted) = match self.tokens.get(self.at).cloned() {
                    Some(Token::Word(w)) => (w, false),
                    Some(Token::Quoted(q)) => (q, true),
                    Some(Token::Minus) => match self.tokens.get(self.at + 1).cloned() {
                        Some(Token::Word(w)) => {
                            self.at += 1;
                            (format!("-{w}"), false)
                        }
                        _ => return Err(self.bad()),
                    },
                    _ => return Err(self.bad()),
                };
                self.at += 1;
                let f = field(&path)?;
                let value = typed(f, &path, op, &raw, quoted)?;
                Ok(Expr::Test(Restriction { field: f, op, value }))
            }
            _ => Err(self.bad()),
        }
    }
}

impl QueueFilter {
    pub fn parse(filter: &str) -> Result<QueueFilter, Status> {
        if filter.trim().is_empty() {
            return Ok(QueueFilter(None));
        }
        let mut p = Parser { tokens: tokens(filter)?, at: 0, filter };
        let e = p.expression()?;
        if p.at != p.tokens.len() {
            return Err(p.bad());
        }
        Ok(QueueFilter(Some(e)))
    }

    pub fn matches(&self, queue: &Queue) -> bool {
        self.0.as_ref().is_none_or(|e| e.matches(queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueName;
    use crate::clock::Timestamp;
    use crate::queue::{QueueSpec, RateSpec};
    use crate::retry::RetrySpec;
    use crate::target::{EnforceMode, UriOverride};
    use crate::task::HttpMethod;

    fn queue(id: &str, state: QueueState, spec: QueueSpec) -> Queue {
        let name = QueueName::parse(&format!("projects/p/locations/l/queues/{id}")).unwrap();
        spec.resolve(name, state, None).unwrap()
    }

    /// Three queues: `plain` (defaults, running), `fast-purged` (paused, 100/s, purged,
    /// logged), `targeted` (an http_target with a host, a PUT and a header).
    fn queues() -> Vec<Queue> {
        let plain = queue("plain", QueueState::Running, QueueSpec::default());
        let mut fast = queue(
            "fast-purged",
            QueueState::Paused,
            QueueSpec {
                rate: RateSpec { max_dispatches_per_second: 100.0, max_concurrent_dispatches: 0 },
                retry: RetrySpec { max_retry_duration_micros: 60_000_000, ..Default::default() },
                logging_sampling_ratio: 0.5,
                http_target: None,
            },
        );
        fast.purge_time = Some(Timestamp::from_secs(1_700_000_000));
        let targeted = queue(
            "targeted",
            QueueState::Running,
            QueueSpec {
                http_target: Some(HttpTarget {
                    uri_override: Some(UriOverride {
                        host: Some("example.net".into()),
                        path: Some("/path".into()),
                        mode: EnforceMode::IfNotExists,
                        ..Default::default()
                    }),
                    method: Some(HttpMethod::Put),
                    headers: vec![("X-Custom".into(), "v".into())],
                    auth: None,
                }),
                ..Default::default()
            },
        );
        vec![plain, fast, targeted]
    }

    fn names(filter: &str) -> Vec<String> {
        let f = QueueFilter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        queues().iter().filter(|q| f.matches(q)).map(|q| q.name.queue.clone()).collect()
    }

    #[test]
    fn comparisons_over_every_kind_of_field() {
        let cases: &[(&str, &[&str])] = &[
            ("", &["plain", "fast-purged", "targeted"]),
            ("state: PAUSED", &["fast-purged"]),
            ("State: Paused", &["fast-purged"]),
            ("state = \"RUNNING\"", &["plain", "targeted"]),
            ("state != PAUSED", &["plain", "targeted"]),
            ("state > RUNNING", &["fast-purged"]),
            ("name: PURGED", &["fast-purged"]),
            ("http_target.uri_override.host: example", &["targeted"]),
            ("httpTarget.uriOverride.pathOverride.path: path", &["targeted"]),
            ("http_target: *", &["targeted"]),
            ("purge_time: *", &["fast-purged"]),
            ("purge_time < \"2020-01-01T00:00:00Z\"", &["plain", "targeted"]),
            ("purge_time > \"2020-01-01T00:00:00+01:00\"", &["fast-purged"]),
            ("rate_limits.max_dispatches_per_second < 500", &["fast-purged"]),
            ("rateLimits.maxBurstSize >= 100", &["plain", "targeted"]),
            ("retry_config.max_retry_duration < 1s", &["plain", "targeted"]),
            ("retry_config.max_retry_duration >= 0.5m", &["fast-purged"]),
            ("stackdriver_logging_config.sampling_ratio = 0", &["plain", "targeted"]),
            ("http_target.http_method = HTTP_METHOD_UNSPECIFIED", &["plain", "fast-purged"]),
            ("http_target.http_method > POST", &["targeted"]),
            ("http_target.uri_override.uri_override_enforce_mode = IF_NOT_EXISTS", &["targeted"]),
            ("http_target.header_overrides.header.key: X-Custom", &["targeted"]),
            ("state: RUNNING AND http_target: *", &["targeted"]),
            ("state: RUNNING http_target: *", &["targeted"]),
            ("state: PAUSED OR http_target: *", &["fast-purged", "targeted"]),
            ("NOT state: PAUSED", &["plain", "targeted"]),
            ("-state: PAUSED", &["plain", "targeted"]),
            ("NOT (state: PAUSED OR http_target: *)", &["plain"]),
            ("name: plain OR name: targeted AND state: RUNNING", &["plain", "targeted"]),
        ];
        for (filter, want) in cases {
            assert_eq!(names(filter), *want, "{filter}");
        }
    }

    #[test]
    fn errors_in_the_real_service_s_words() {
        let err = |filter: &str| QueueFilter::parse(filter).unwrap_err().message;
        assert_eq!(err("bogus_field: 1"), "Field not found: 'bogus_field'.");
        assert_eq!(err("max_dispatches_per_second > 1"), "Field not found: 'max_dispatches_per_second'.");
        assert_eq!(err("state: BOGUS"), "The value 'bogus' is of incorrect type.");
        assert_eq!(err("state: 2"), "The value '2' is of incorrect type.");
        assert_eq!(
            err("purge_time > \"99999999999999999-01-01T00:00:00Z\""),
            "The value '99999999999999999-01-01t00:00:00z' is of incorrect type."
        );
        assert_eq!(err("retry_config.min_backoff > 3600"), "The value '3600' is of incorrect type.");
        assert_eq!(err("rate_limits.max_dispatches_per_second > fast"), "The value 'fast' is of incorrect type.");
        assert_eq!(
            err("rate_limits = 1"),
            "Cannot match a nested type 'rate_limits'. A member field of scalar or enum type must be provided."
        );
    }
}
