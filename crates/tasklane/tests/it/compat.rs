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
