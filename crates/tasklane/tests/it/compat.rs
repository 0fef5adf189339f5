//! Compatibility: the official Cloud Tasks clients (Python `google-cloud-tasks`, Node
//! `@google-cloud/tasks`) drive the real binary. `compat/setup.sh` installs them into
//! ignored folders on first use; the scenarios live in `compat/`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::TasklaneProcess;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../compat").canonicalize().expect("compat folder")
}

fn setup(client: &str) {
    let status = Command::new("bash")
        .arg(compat_dir().join("setup.sh"))
        .arg(client)
        .status()
        .unwrap_or_else(|e| panic!("run compat/setup.sh {client}: {e}"));
    assert!(status.success(), "compat/setup.sh {client} failed; it installs the client from its registry");
}

fn passed(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn python(server: &TasklaneProcess, transport: &str) -> Value {
    let dir = compat_dir().join("python");
    let out = Command::new(dir.join(".venv/bin/python"))
        .arg(dir.join("scenario.py"))
        .args(["--endpoint", &server.addr.to_string(), "--transport", transport, "--project"])
        .arg(format!("compat-{transport}"))
        .env("NO_GCE_CHECK", "true")
        .output()
        .expect("run the Python scenario");
    serde_json::from_str(&passed(&format!("the Python client over {transport}"), &out)).expect("the scenario's record")
}

#[test]
fn python_client_gives_the_same_results_over_grpc_and_rest() {
    setup("python");
    let server = TasklaneProcess::start();
    let grpc = python(&server, "grpc");
    let rest = python(&server, "rest");
    let steps = grpc.as_array().expect("a list of steps");
    assert!(steps.len() >= 20, "the scenario recorded only {} steps", steps.len());
    assert_eq!(grpc, rest, "gRPC and REST answered differently");
}

#[test]
fn node_client_works_over_grpc() {
    setup("node");
    let server = TasklaneProcess::start();
    let dir = compat_dir().join("node");
    let out = Command::new("node")
        .arg(dir.join("scenario.js"))
        .args(["--endpoint", &server.addr.to_string(), "--project", "compat-node"])
        .current_dir(&dir)
        .env("NO_GCE_CHECK", "true")
        .output()
        .expect("run the Node scenario (is node installed?)");
    let record: Value = serde_json::from_str(&passed("the Node client", &out)).expect("the scenario's record");
    let steps = record["passed"].as_array().expect("passed steps");
    assert!(steps.len() >= 20, "the scenario passed only {} steps", steps.len());
}

/// An admin token made straight in a fresh store, and that store's directory.
fn store_with_token() -> (std::path::PathBuf, String) {
    let dir = crate::support::fresh_dir("secure");
    let out = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["tokens", "create", "compat", "--scope", "admin", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run tasklane tokens create");
    let token = passed("tasklane tokens create", &out).trim().to_string();
    (dir, token)
}

fn python_secure(server: &TasklaneProcess, transport: &str, token: &str, root: Option<&std::path::Path>) {
    let dir = compat_dir().join("python");
    let mut cmd = Command::new(dir.join(".venv/bin/python"));
    cmd.arg(dir.join("secure.py"))
        .args(["--endpoint", &server.addr.to_string(), "--transport", transport, "--token", token])
        .args(["--project", &format!("secure-{transport}-{}", root.is_some())])
        .env("NO_GCE_CHECK", "true");
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    let out = cmd.output().expect("run the Python secure scenario");
    let record: Value =
        serde_json::from_str(&passed(&format!("the Python client with a token over {transport}"), &out))
            .expect("the scenario's record");
    let steps = record["passed"].as_array().expect("passed steps");
    assert_eq!(steps.len(), 6, "{record}");
}

/// Run `scenario` against a server that requires a token: first in cleartext on loopback,
/// then over TLS with a test-made root (passed as its third argument).
fn on_secured_servers(scenario: impl Fn(&TasklaneProcess, &str, Option<&std::path::Path>)) {
    let (dir, token) = store_with_token();
    let server = TasklaneProcess::start_in(dir);
    scenario(&server, &token, None);
    drop(server);
    let (dir, token) = store_with_token();
    let (cert, key) = crate::connections::self_signed(&dir);
    let server = TasklaneProcess::start_in_with(
        dir,
        &["--tls-cert", cert.to_str().expect("path"), "--tls-key", key.to_str().expect("path")],
    );
    scenario(&server, &token, Some(&cert));
}

#[test]
fn python_client_authenticates_with_a_token_over_grpc_and_rest_in_cleartext_and_tls() {
    setup("python");
    on_secured_servers(|server, token, root| {
        for transport in ["grpc", "rest"] {
            python_secure(server, transport, token, root);
        }
    });
}

fn node_secure(server: &TasklaneProcess, token: &str, root: Option<&std::path::Path>) {
    let dir = compat_dir().join("node");
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("secure.js"))
        .args(["--endpoint", &server.addr.to_string(), "--token", token])
        .args(["--project", &format!("secure-node-{}", root.is_some())])
        .current_dir(&dir)
        .env("NO_GCE_CHECK", "true");
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    let out = cmd.output().expect("run the Node secure scenario (is node installed?)");
    let record: Value =
        serde_json::from_str(&passed("the Node client with a token", &out)).expect("the scenario's record");
    assert_eq!(record["passed"].as_array().map(Vec::len), Some(5), "{record}");
}

#[test]
fn node_client_authenticates_with_a_token_in_cleartext_and_tls() {
    setup("node");
    on_secured_servers(node_secure);
}
