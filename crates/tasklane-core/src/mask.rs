//! The update mask of `UpdateQueue`: which paths it takes, and how each merges a request's
//! queue into the stored one. Paths are exact snake_case, as the real service takes them
//! over gRPC (the REST edge turns JSON's camelCase into snake_case first).

use crate::queue::QueueSpec;
use crate::status::Status;
use crate::target::{HttpTarget, UriOverride};
use crate::task::AuthToken;

/// Paths that name output-only fields or ones tasklane does not serve: accepted, ignored.
const IGNORED: [&str; 5] = ["name", "state", "purge_time", "rate_limits.max_burst_size", "app_engine_routing_override"];

/// Every path a mask may name besides [`IGNORED`].
const PATHS: [&str; 29] = [
    "rate_limits",
    "rate_limits.max_dispatches_per_second",
    "rate_limits.max_concurrent_dispatches",
    "retry_config",
    "retry_config.max_attempts",
    "retry_config.max_retry_duration",
    "retry_config.min_backoff",
    "retry_config.max_backoff",
    "retry_config.max_doublings",
    "stackdriver_logging_config",
    "stackdriver_logging_config.sampling_ratio",
    "http_target",
    "http_target.uri_override",
    "http_target.uri_override.scheme",
    "http_target.uri_override.host",
    "http_target.uri_override.port",
    "http_target.uri_override.path_override",
    "http_target.uri_override.path_override.path",
    "http_target.uri_override.query_override",
    "http_target.uri_override.query_override.query_params",
    "http_target.uri_override.uri_override_enforce_mode",
    "http_target.http_method",
    "http_target.header_overrides",
    "http_target.oidc_token",
    "http_target.oidc_token.service_account_email",
    "http_target.oidc_token.audience",
    "http_target.oauth_token",
    "http_target.oauth_token.service_account_email",
    "http_target.oauth_token.scope",
];

/// Refuse a mask with a path the queue does not have, as sent (`Invalid mask:  state`).
/// Checked before anything is read, as the real service does.
pub fn check(mask: Option<&[String]>) -> Result<(), Status> {
    for path in mask.unwrap_or_default() {
        if !IGNORED.contains(&path.as_str()) && !PATHS.contains(&path.as_str()) {
            return Err(Status::invalid_argument(format!("Invalid mask: {path}")));
        }
    }
    Ok(())
}

/// Which token a path sets a field of.
#[derive(Clone, Copy, PartialEq)]
enum Token {
    Oidc,
    OAuth,
}

/// The fields of `auth` as (service account, audience or scope), if it is that kind.
fn token_fields(auth: &Option<AuthToken>, kind: Token) -> Option<(String, String)> {
    match (auth, kind) {
        (Some(AuthToken::Oidc { service_account_email, audience }), Token::Oidc) => {
            Some((service_account_email.clone(), audience.clone()))
        }
        (Some(AuthToken::OAuth { service_account_email, scope }), Token::OAuth) => {
            Some((service_account_email.clone(), scope.clone()))
        }
        _ => None,
    }
}

fn token(kind: Token, email: String, other: String) -> Option<AuthToken> {
    if email.is_empty() && other.is_empty() {
        return None;
    }
    Some(match kind {
        Token::Oidc => AuthToken::Oidc { service_account_email: email, audience: other },
        Token::OAuth => AuthToken::OAuth { service_account_email: email, scope: other },
    })
}

/// Set one path of a queue's `http_target` from the request's. The leaf takes the request's
/// value (absent clears it) and the messages above it are created; a token's field switches
/// the token to that kind; a token left with no field set is no token.
fn set_target_path(to: &mut HttpTarget, from: &HttpTarget, path: &str) {
    let from_uri = from.uri_override.clone().unwrap_or_default();
    if let Some(leaf) = path.strip_prefix("uri_override.") {
        let uri = to.uri_override.get_or_insert_with(UriOverride::default);
        match leaf {
            "scheme" => uri.scheme = from_uri.scheme,
            "host" => uri.host = from_uri.host,
            "port" => uri.port = from_uri.port,
            "path_override" => uri.path = from_uri.path,
            "path_override.path" => uri.path = Some(from_uri.path.unwrap_or_default()),
            "query_override" => uri.query = from_uri.query,
            "query_override.query_params" => uri.query = Some(from_uri.query.unwrap_or_default()),
            _ => uri.mode = from_uri.mode,
        }
        return;
    }
    let kind = if path.starts_with("oidc_token") { Token::Oidc } else { Token::OAuth };
    match path {
        "uri_override" => to.uri_override = from.uri_override.clone(),
        "http_method" => to.method = from.method,
        "header_overrides" => to.headers = from.headers.clone(),
        "oidc_token" | "oauth_token" => {
            if token_fields(&from.auth, kind).is_some() {
                to.auth = from.auth.clone();
            } else if token_fields(&to.auth, kind).is_some() {
                to.auth = None;
            }
        }
        leaf => {
            let (mut email, mut other) = token_fields(&to.auth, kind).unwrap_or_default();
            let (from_email, from_other) = token_fields(&from.auth, kind).unwrap_or_default();
            if leaf.ends_with("service_account_email") {
                email = from_email;
            } else {
                other = from_other;
            }
            to.auth = token(kind, email, other);
        }
    }
}

/// Apply `patch` over `base` as `UpdateQueue` does. No mask replaces every settable field;
/// an empty mask changes nothing; a path names a field or a whole sub-message. The mask
/// must have passed [`check`].
pub fn apply(base: QueueSpec, patch: QueueSpec, mask: Option<&[String]>) -> QueueSpec {
    let Some(paths) = mask else { return patch };
    let mut out = base;
    for path in paths {
        match path.as_str() {
            "rate_limits" => out.rate = patch.rate,
            "rate_limits.max_dispatches_per_second" => {
                out.rate.max_dispatches_per_second = patch.rate.max_dispatches_per_second
            }
            "rate_limits.max_concurrent_dispatches" => {
                out.rate.max_concurrent_dispatches = patch.rate.max_concurrent_dispatches
            }
            "retry_config" => out.retry = patch.retry,
            "retry_config.max_attempts" => out.retry.max_attempts = patch.retry.max_attempts,
            "retry_config.max_retry_duration" => {
                out.retry.max_retry_duration_micros = patch.retry.max_retry_duration_micros
            }
            "retry_config.min_backoff" => out.retry.min_backoff_micros = patch.retry.min_backoff_micros,
            "retry_config.max_backoff" => out.retry.max_backoff_micros = patch.retry.max_backoff_micros,
            "retry_config.max_doublings" => out.retry.max_doublings = patch.retry.max_doublings,
            "stackdriver_logging_config" | "stackdriver_logging_config.sampling_ratio" => {
                out.logging_sampling_ratio = patch.logging_sampling_ratio
            }
            "http_target" => out.http_target = patch.http_target.clone(),
            other => {
                if let Some(field) = other.strip_prefix("http_target.") {
                    let from = patch.http_target.clone().unwrap_or_default();
                    set_target_path(out.http_target.get_or_insert_with(HttpTarget::default), &from, field);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::RateSpec;
    use crate::retry::RetrySpec;
    use crate::target::Scheme;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn base() -> QueueSpec {
        QueueSpec {
            rate: RateSpec { max_dispatches_per_second: 10.0, max_concurrent_dispatches: 5 },
            retry: RetrySpec { max_attempts: 7, max_doublings: 3, ..Default::default() },
            logging_sampling_ratio: 0.5,
            http_target: Some(HttpTarget {
                headers: vec![("X-A".into(), "1".into())],
                auth: Some(AuthToken::Oidc { service_account_email: "a@p.iam".into(), audience: "aud".into() }),
                ..Default::default()
            }),
        }
    }

    fn patch() -> QueueSpec {
        QueueSpec {
            rate: RateSpec { max_dispatches_per_second: 20.0, max_concurrent_dispatches: 0 },
            retry: RetrySpec { max_attempts: 9, ..Default::default() },
            logging_sampling_ratio: 0.0,
            http_target: Some(HttpTarget {
                uri_override: Some(UriOverride { host: Some("h".into()), ..Default::default() }),
                auth: Some(AuthToken::OAuth { service_account_email: "b@p.iam".into(), scope: "s".into() }),
                ..Default::default()
            }),
        }
    }

    fn apply_paths(list: &[&str]) -> QueueSpec {
        let mask = paths(list);
        check(Some(&mask)).unwrap();
        apply(base(), patch(), Some(&mask))
    }

    #[test]
    fn paths_are_exact_snake_case() {
        for bad in [
            "rateLimits",
            " state",
            "",
            "rate_limits,retry_config",
            "bogus",
            "rate_limits.bogus",
            "http_target.bogus",
            "rate_limits.max_dispatches_per_second.x",
        ] {
            let err = check(Some(&paths(&[bad]))).unwrap_err();
            assert_eq!(err.message, format!("Invalid mask: {bad}"));
        }
        assert!(check(Some(&paths(&["state", "http_target.uri_override.path_override.path"]))).is_ok());
    }

    #[test]
    fn whole_messages_and_leaves() {
        assert_eq!(apply(base(), patch(), None), patch());
        assert_eq!(apply_paths(&[]), base());
        let leaf = apply_paths(&["rate_limits.max_dispatches_per_second"]);
        assert_eq!((leaf.rate.max_dispatches_per_second, leaf.rate.max_concurrent_dispatches), (20.0, 5));
        assert_eq!(leaf.retry, base().retry);
        assert_eq!(apply_paths(&["retry_config"]).retry, patch().retry);
        assert_eq!(apply_paths(&["http_target"]).http_target, patch().http_target);
        let uri = apply_paths(&["http_target.uri_override"]).http_target.unwrap();
        assert_eq!(
            (uri.headers, uri.uri_override),
            (base().http_target.unwrap().headers, patch().http_target.unwrap().uri_override)
        );
        assert_eq!(apply_paths(&["state"]), base());
    }

    #[test]
    fn nested_target_leaves_create_their_parents() {
        let t = apply_paths(&["http_target.uri_override.path_override.path"]).http_target.unwrap();
        assert_eq!(t.uri_override.unwrap().path, Some(String::new()));
        let t = apply_paths(&["http_target.uri_override.host"]).http_target.unwrap();
        assert_eq!(t.uri_override.unwrap().host, Some("h".into()));
        let t = apply_paths(&["http_target.uri_override.scheme"]).http_target.unwrap();
        assert_eq!(t.uri_override.unwrap().scheme, None::<Scheme>);
        // A scope over a stored OIDC token switches the token to OAuth.
        let t = apply_paths(&["http_target.oauth_token.scope"]).http_target.unwrap();
        assert_eq!(t.auth, Some(AuthToken::OAuth { service_account_email: String::new(), scope: "s".into() }));
        // The OIDC token's path with OAuth in the request clears the stored OIDC token.
        assert_eq!(apply_paths(&["http_target.oidc_token"]).http_target.unwrap().auth, None);
        // An OIDC field set from a request without one leaves a token with nothing: none.
        let t = apply_paths(&["http_target.oidc_token.service_account_email"]).http_target.unwrap();
        assert_eq!(t.auth, Some(AuthToken::Oidc { service_account_email: String::new(), audience: "aud".into() }));
        let t = apply_paths(&["http_target.oidc_token.service_account_email", "http_target.oidc_token.audience"]);
        assert_eq!(t.http_target.unwrap().auth, None);
    }
}
