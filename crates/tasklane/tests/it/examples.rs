//! The example in `examples/batch-demo` runs as the README says: a worker, an app that
//! submits a batch and a video job, and `tasklane jobs watch` following both to success.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::{TasklaneProcess, client};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_batch_demo_runs_to_success() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/batch-demo");
    let server = TasklaneProcess::start();
    let tasklane = format!("http://{}", server.addr);
    let mut worker = Command::new("python3")
        .arg(demo.join("worker.py"))
        .env("PORT", "0")
        .env("TASKLANE", &tasklane)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the example worker");
    let mut line = String::new();
    BufReader::new(worker.stdout.take().expect("stdout")).read_line(&mut line).expect("the worker's first line");
    let worker = Killed(worker);
    let worker_url = line.trim().strip_prefix("worker listening on ").expect("the worker's address").to_string();

    let submitted = Command::new("python3")
        .arg(demo.join("submit.py"))
        .arg("12")
        .env("TASKLANE", &tasklane)
        .env("WORKER", &worker_url)
        .output()
        .expect("run the example app");
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let ids: Vec<String> = String::from_utf8_lossy(&submitted.stdout).lines().map(String::from).collect();
    assert_eq!(ids.len(), 2, "a batch and a video job: {ids:?}");

    for id in &ids {
        let watched = Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(["jobs", "watch", id, "--endpoint", &tasklane])
            .output()
            .expect("run tasklane jobs watch");
        let out = String::from_utf8_lossy(&watched.stdout);
        assert_eq!(watched.status.code(), Some(0), "watch exits 0 when the job succeeds:\n{out}");
        assert!(out.lines().last().unwrap_or("").starts_with("succeeded"), "{out}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let video: serde_json::Value = runtime.block_on(async {
        let body = client().get(format!("{tasklane}/v1/jobs/{}", ids[1])).send().await.unwrap().bytes().await.unwrap();
        serde_json::from_slice(&body).unwrap()
    });
    assert_eq!(video["result"]["video"], "holiday.mp4");
    assert_eq!(
        (video["progress"]["step"].as_str(), video["progress"]["percent"].as_f64()),
        (Some("encode"), Some(100.0))
    );
    drop(worker);
}
