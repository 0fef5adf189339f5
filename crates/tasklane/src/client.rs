//! The API client the CLI commands share: endpoint and resource flags, requests, errors.

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// tasklane's address.
    #[arg(long, global = true, env = "TASKLANE_ENDPOINT", default_value = "http://127.0.0.1:8790")]
    pub endpoint: String,
    #[arg(long, global = true, env = "TASKLANE_PROJECT", default_value = "local")]
    pub project: String,
    #[arg(long, global = true, env = "TASKLANE_LOCATION", default_value = "local")]
    pub location: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// An API token, sent as `Authorization: Bearer` (needed once the server has tokens).
    #[arg(long, global = true, env = "TASKLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

impl ClientArgs {
    pub fn location_path(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.location)
    }

    /// A queue id or a full queue name.
    pub fn queue_path(&self, queue: &str) -> String {
        if queue.starts_with("projects/") {
            queue.to_string()
        } else {
            format!("{}/queues/{queue}", self.location_path())
        }
    }

    pub fn task_path(&self, queue: &str, task: &str) -> String {
        if task.starts_with("projects/") {
            task.to_string()
        } else {
            format!("{}/tasks/{task}", self.queue_path(queue))
        }
    }

    /// `request` with this client's token, if it has one.
    pub fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Call the Cloud Tasks API at `/v2/{path}`.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call_url(method, &format!("v2/{path}"), body).await
    }

    /// Call tasklane at `/{path}`.
    pub async fn call_url(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let client = http_client()?;
        let url = format!("{}/{path}", self.endpoint.trim_end_matches('/'));
        let mut request = self.authorized(client.request(method, &url));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.with_context(|| format!("cannot reach tasklane at {}", self.endpoint))?;
        let status = response.status();
        let text = response.text().await.context("read the response")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let status_name = value.pointer("/error/status").and_then(Value::as_str).unwrap_or("ERROR");
            let message = value.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
            return Err(ApiFailure { status: status_name.to_string(), message: message.to_string() }.into());
        }
        Ok(value)
    }
}

/// An error answer from tasklane: its Google status name and message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(tasklane) {}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// One HTTP client for the whole process, so connections are reused.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().build().context("build HTTP client")?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// `10s`, `1.5s`, `2m`, `1h`, `3d`, or plain seconds.
pub fn parse_cli_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = number.parse().map_err(|_| format!("invalid duration {s:?}: use a number with s, m, h or d"))?;
    let factor = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    std::time::Duration::try_from_secs_f64(n * factor)
        .map_err(|_| format!("invalid duration {s:?}: too large (at most about 584 billion years)"))
}

/// A number that must be finite (`inf` and `NaN` parse as floats but mean nothing here).
pub fn parse_finite(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        Ok(_) => Err(format!("{s:?} is not a finite number")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// A duration as the API writes it: `"0.100s"`.
pub fn api_duration(d: std::time::Duration) -> String {
    let micros = d.as_micros();
    if micros.is_multiple_of(1_000_000) {
        format!("{}s", micros / 1_000_000)
    } else {
        format!("{:.6}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cli_durations() {
        assert_eq!(parse_cli_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_cli_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_cli_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_cli_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_cli_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_cli_duration("5y").is_err());
        assert!(parse_cli_duration("-5s").is_err());
        assert!(parse_cli_duration("100000000000000000000000s").unwrap_err().contains("too large"));
        assert!(parse_cli_duration("10000000000000000000000d").unwrap_err().contains("too large"));
        assert_eq!(parse_finite("2.5"), Ok(2.5));
        for bad in ["inf", "-inf", "NaN", "many"] {
            assert!(parse_finite(bad).is_err(), "{bad}");
        }
        assert_eq!(api_duration(Duration::from_millis(100)), "0.100000s");
        assert_eq!(api_duration(Duration::from_secs(30)), "30s");
    }
}
