//! The API port under clients that misbehave or need more than cleartext: silent and
//! half-open connections, TLS, and gRPC answers that Nagle's algorithm used to hold back.

use std::time::{Duration, Instant};

use prost::Message;
use serde_json::json;
use tasklane_server::grpc::messages as m;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{PROJECT_LOCATION, TasklaneProcess, client, fresh_dir};

#[tokio::test]
async fn a_thousand_silent_connections_neither_starve_the_api_nor_stay_open() {
    let server = TasklaneProcess::start_with(&["--header-read-timeout", "2s"]);
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
        // Half send the start of a request header and never finish it; half send nothing.
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.expect("write");
        }
        held.push(s);
    }
    let started = Instant::now();
    let health = client().get(format!("http://{}/healthz", server.addr)).timeout(Duration::from_secs(1)).send().await;
    let health = health.expect("/healthz answers within a second beside 1,000 silent connections");
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));

    // Every silent connection is closed by the server once its header timeout passes.
    for (i, s) in held.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("connection {i} still open 20 s after a 2 s header timeout"));
        // A timed-out HTTP/1.1 request may get a 408 before the close; either way it ends.
        if let Ok(n) = read
            && n > 0
        {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("HTTP/1.1 408"), "connection {i} got {text:?}");
        }
    }
}

#[tokio::test]
async fn a_larger_grpc_answer_is_not_held_back() {
    let server = TasklaneProcess::start();
    let api = server.api();
    // A queue whose answer is well over ~250 bytes; reading it needs no fsync, so even a loaded
    // machine answers in a millisecond or two, against ~40 ms held by Nagle and delayed ACKs.
    let overrides: Vec<serde_json::Value> = (0..6)
        .map(|i| json!({"header": {"key": format!("X-Override-{i}"), "value": "a value that makes the answer larger"}}))
        .collect();
    api.create_queue("nagle", json!({"httpTarget": {"headerOverrides": overrides}})).await;
    let http = reqwest::Client::builder().http2_prior_knowledge().build().expect("h2c client");
    let request = m::NameRequest { name: format!("{PROJECT_LOCATION}/queues/nagle") };
    let frame = crate::support::grpc_frame(&request);
    let mut took = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let resp = http
            .post(format!("http://{}/google.cloud.tasks.v2.CloudTasks/GetQueue", server.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(frame.clone())
            .send()
            .await
            .expect("call GetQueue");
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("answer");
        took.push(started.elapsed());
        assert!(body.len() > 250, "the answer is {} bytes; the test needs one over ~250", body.len());
        let queue = m::Queue::decode(&body[5..]).expect("a queue");
        assert_eq!(queue.name, format!("{PROJECT_LOCATION}/queues/nagle"));
    }
    took.sort();
    // Nagle's algorithm with delayed ACKs held each such answer at least 40 ms (Linux's least
    // delayed-ACK time); a fix answers in ~1 ms. 30 ms leaves room for a loaded machine (a
    // median of 20.5 ms was seen with two builds beside the suite) and still catches the stall.
    assert!(took[10] < Duration::from_millis(30), "median GetQueue over gRPC took {:?}", took[10]);
}

/// A certificate for 127.0.0.1 and localhost: (certificate PEM file, key PEM file).
pub fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("generate a certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}

#[tokio::test]
async fn tls_serves_rest_over_http1_and_http2_and_refuses_cleartext() {
    let dir = fresh_dir("tls");
    let (cert, key) = self_signed(&dir);
    let server = TasklaneProcess::start_with(&[
        "--tls-cert",
        cert.to_str().expect("path"),
        "--tls-key",
        key.to_str().expect("path"),
    ]);
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).expect("read cert")).expect("root");
    let _ = rustls::crypto::ring::default_provider().install_default();
    for h2 in [false, true] {
        let mut builder = reqwest::Client::builder().tls_certs_only([root.clone()]);
        builder = if h2 { builder } else { builder.http1_only() };
        let https = builder.build().expect("https client");
        let resp = https
            .post(format!("https://127.0.0.1:{}/v2/{PROJECT_LOCATION}/queues", server.addr.port()))
            .header("content-type", "application/json")
            .body(json!({"name": format!("{PROJECT_LOCATION}/queues/tls-{h2}")}).to_string())
            .send()
            .await
            .expect("create a queue over TLS");
        assert_eq!(resp.status(), 200);
        let want = if h2 { reqwest::Version::HTTP_2 } else { reqwest::Version::HTTP_11 };
        assert_eq!(resp.version(), want, "ALPN chose the protocol");
        let discovery = https
            .get(format!("https://127.0.0.1:{}/.well-known/openid-configuration", server.addr.port()))
            .send()
            .await
            .expect("discovery")
            .text()
            .await
            .expect("discovery body");
        let discovery: serde_json::Value = serde_json::from_str(&discovery).expect("json");
        assert_eq!(discovery["issuer"], format!("https://127.0.0.1:{}", server.addr.port()), "the issuer is https");
    }
    let cleartext = client().get(format!("http://{}/healthz", server.addr)).send().await;
    assert!(cleartext.is_err() || cleartext.is_ok_and(|r| !r.status().is_success()), "cleartext is refused");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn event_streams_are_capped_and_a_closed_one_frees_its_place() {
    let server = TasklaneProcess::start_with(&["--max-event-streams", "2"]);
    let base = format!("http://{}", server.addr);
    let open = || client().get(format!("{base}/v1/events")).send();
    let first = open().await.expect("first stream");
    let second = open().await.expect("second stream");
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = open().await.expect("third stream");
    assert_eq!(third.status().as_u16(), 429);
    let body = third.text().await.expect("body");
    assert!(body.contains("RESOURCE_EXHAUSTED") && body.contains("--max-event-streams"), "{body}");
    drop(first);
    crate::support::eventually("a closed stream to free its place", Duration::from_secs(10), || async {
        open().await.is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
    drop(second);
}
