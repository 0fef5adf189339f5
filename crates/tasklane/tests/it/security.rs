//! Safe beyond loopback: API tokens with scopes and limits on every API, the identities
//! tasks may use, the start-up refusal of an open non-loopback server, and the modes of
//! the store's files.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PROJECT_LOCATION, TasklaneProcess, Worker, client, eventually, fresh_dir};

/// One call with an optional bearer token: (HTTP status, body).
async fn call(base: &str, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.expect("call tasklane");
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null))
}

/// Expect a refusal with this status, Google status name and words.
async fn refused(
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: (u16, &str, &str),
) {
    let (status, v) = call(base, token, method.clone(), path, body).await;
    assert_eq!(status, want.0, "{method} {path}: {v}");
    assert_eq!(v["error"]["status"], want.1, "{method} {path}: {v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(want.2), "{method} {path}: expected {:?} in {message:?}", want.2);
}

/// `tasklane ARGS…`, expecting success; its standard output.
fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tasklane")).args(args).output().expect("run tasklane");
    assert!(out.status.success(), "tasklane {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A gRPC call with an empty `ListQueues` request: the `grpc-status` it ends with.
async fn grpc_list_queues(addr: std::net::SocketAddr, token: Option<&str>) -> (String, String) {
    use prost::Message;
    let http = reqwest::Client::builder().http2_prior_knowledge().build().expect("h2c");
    let msg =
        tasklane_server::grpc::messages::ListQueuesRequest { parent: PROJECT_LOCATION.into(), ..Default::default() };
    let frame = crate::support::grpc_frame(&msg);
    let mut req = http
        .post(format!("http://{addr}/google.cloud.tasks.v2.CloudTasks/ListQueues"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.body(frame).send().await.expect("gRPC call");
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    // A refusal is trailers-only (its status in the headers); a success has a message,
    // then its status in trailers, which this client does not show.
    match header("grpc-status") {
        Some(status) => (status, header("grpc-message").unwrap_or_default()),
        None => {
            let body = resp.bytes().await.expect("answer");
            let message = tasklane_server::grpc::messages::ListQueuesResponse::decode(body.get(5..).unwrap_or(&[]));
            assert!(body.len() >= 5 && message.is_ok(), "a ListQueues answer");
            ("0".into(), String::new())
        }
    }
}

#[tokio::test]
async fn a_server_beyond_loopback_refuses_to_start_open_and_names_both_ways_out() {
    let dir = fresh_dir("open");
    let out = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run tasklane serve");
    assert!(!out.status.success(), "an open server on 0.0.0.0 must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tasklane tokens create") && stderr.contains("--allow-unauthenticated"), "{stderr}");

    // Knowingly open, it starts; with a token made first, it starts and requires it.
    let open = TasklaneProcess::start_with(&["--listen", "0.0.0.0:0", "--allow-unauthenticated"]);
    let (status, _) = call(
        &format!("http://127.0.0.1:{}", open.addr.port()),
        None,
        Method::GET,
        &format!("/v2/{PROJECT_LOCATION}/queues"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let token = cli(&["tokens", "create", "boot", "--scope", "admin", "--data-dir", dir.to_str().expect("dir")]);
    let closed = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let mut closed = KillOnDrop(closed);
    let line = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(closed.0.stdout.take().expect("stdout")).read_line(&mut line).expect("line");
        line
    };
    let port: u16 = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("listening line");
    let base = format!("http://127.0.0.1:{port}");
    refused(
        &base,
        None,
        Method::GET,
        &format!("/v2/{PROJECT_LOCATION}/queues"),
        None,
        (401, "UNAUTHENTICATED", "missing required authentication credential"),
    )
    .await;
    let (status, _) = call(&base, Some(&token), Method::GET, &format!("/v2/{PROJECT_LOCATION}/queues"), None).await;
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(dir);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn tokens_scope_and_limit_every_api_and_revocation_is_immediate() {
    let server = TasklaneProcess::start();
    let base = format!("http://{}", server.addr);
    let v2 = format!("/v2/{PROJECT_LOCATION}");
    // Open on loopback while no token exists.
    let (status, _) = call(&base, None, Method::GET, &format!("{v2}/queues"), None).await;
    assert_eq!(status, 200);

    // The first admin token, made straight in the store while the server runs.
    let dir = server.data_dir.to_str().expect("dir").to_string();
    let admin = cli(&["tokens", "create", "boot", "--scope", "admin", "--data-dir", &dir]);
    assert!(admin.starts_with("tlk_") && admin.len() >= 4 + 43, "{admin}");
    eventually("the server sees the new token", Duration::from_secs(5), || {
        let base = base.clone();
        let v2 = v2.clone();
        async move { call(&base, None, Method::GET, &format!("{v2}/queues"), None).await.0 == 401 }
    })
    .await;
    refused(
        &base,
        None,
        Method::GET,
        &format!("{v2}/queues"),
        None,
        (401, "UNAUTHENTICATED", "tasklane tokens create"),
    )
    .await;
    refused(
        &base,
        Some("tlk_not-a-token"),
        Method::GET,
        &format!("{v2}/queues"),
        None,
        (401, "UNAUTHENTICATED", "invalid authentication credentials"),
    )
    .await;
    for open in
        ["/healthz", "/readyz", "/.well-known/jwks.json", "/.well-known/openid-configuration", "/v1/openapi.json"]
    {
        assert_eq!(call(&base, None, Method::GET, open, None).await.0, 200, "{open} stays public");
    }
    assert_eq!(grpc_list_queues(server.addr, None).await.0, "16", "gRPC without a token: UNAUTHENTICATED");
    assert_eq!(grpc_list_queues(server.addr, Some("tlk_bogus")).await.0, "16");
    assert_eq!(grpc_list_queues(server.addr, Some(&admin)).await.0, "0", "gRPC with the admin token");

    // Admin makes the others through the API; the secret is shown once and never listed.
    let mut tokens = std::collections::HashMap::new();
    for (name, scope, queues) in [("w", "worker", json!([])), ("e", "enqueue", json!(["a"])), ("r", "read", json!([]))]
    {
        let (status, v) = call(
            &base,
            Some(&admin),
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": name, "scope": scope, "queues": queues})),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        tokens.insert(name, v["token"].as_str().expect("secret").to_string());
    }
    let (_, listed) = call(&base, Some(&admin), Method::GET, "/v1/tokens", None).await;
    let listed_text = listed.to_string();
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(4), "{listed}");
    assert!(tokens.values().chain([&admin]).all(|t| !listed_text.contains(t.as_str())), "no secret is listed");
    let (w, e, r) = (tokens["w"].as_str(), tokens["e"].as_str(), tokens["r"].as_str());

    for q in ["a", "b"] {
        let (status, v) = call(
            &base,
            Some(&admin),
            Method::POST,
            &format!("{v2}/queues"),
            Some(json!({"name": format!("{PROJECT_LOCATION}/queues/{q}"), "state": "PAUSED"})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        call(&base, Some(&admin), Method::POST, &format!("{v2}/queues/{q}:pause"), Some(json!({}))).await;
    }
    let (status, _) =
        call(&base, Some(&admin), Method::POST, "/v1/queues", Some(json!({"name": "pulled", "type": "pull"}))).await;
    assert_eq!(status, 201);
    let task = json!({"task": {"httpRequest": {"url": "http://127.0.0.1:9/"}}});

    // worker: leases and acknowledges, nothing else.
    refused(
        &base,
        Some(w),
        Method::POST,
        &format!("{v2}/queues"),
        Some(json!({"name": format!("{PROJECT_LOCATION}/queues/c")})),
        (403, "PERMISSION_DENIED", "scope worker"),
    )
    .await;
    refused(
        &base,
        Some(w),
        Method::POST,
        &format!("{v2}/queues/a/tasks"),
        Some(task.clone()),
        (403, "PERMISSION_DENIED", "needs scope enqueue or admin"),
    )
    .await;
    let (status, v) = call(
        &base,
        Some(w),
        Method::POST,
        "/v1/queues/pulled/tasks:lease",
        Some(json!({"max_tasks": 1, "lease_duration": "10s"})),
    )
    .await;
    assert_eq!(status, 200, "a worker token leases: {v}");
    // enqueue limited to queue a.
    assert_eq!(call(&base, Some(e), Method::POST, &format!("{v2}/queues/a/tasks"), Some(task.clone())).await.0, 200);
    refused(
        &base,
        Some(e),
        Method::POST,
        &format!("{v2}/queues/b/tasks"),
        Some(task.clone()),
        (403, "PERMISSION_DENIED", "limited to the queues a"),
    )
    .await;
    refused(
        &base,
        Some(e),
        Method::GET,
        &format!("{v2}/queues"),
        None,
        (403, "PERMISSION_DENIED", "spans the whole project"),
    )
    .await;
    refused(
        &base,
        Some(e),
        Method::POST,
        &format!("{v2}/queues/a:purge"),
        Some(json!({})),
        (403, "PERMISSION_DENIED", "scope enqueue"),
    )
    .await;
    refused(
        &base,
        Some(e),
        Method::POST,
        "/v1/jobs",
        Some(json!({"queue": format!("{PROJECT_LOCATION}/queues/b"), "tasks": [{"url": "http://127.0.0.1:9/"}]})),
        (403, "PERMISSION_DENIED", "limited to the queues a"),
    )
    .await;
    let (status, job) = call(
        &base,
        Some(e),
        Method::POST,
        "/v1/jobs",
        Some(json!({"queue": format!("{PROJECT_LOCATION}/queues/a"), "tasks": [{"url": "http://127.0.0.1:9/"}]})),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_str().expect("job id");
    assert_eq!(call(&base, Some(e), Method::GET, &format!("/v1/jobs/{job_id}"), None).await.0, 200);
    refused(&base, Some(e), Method::GET, "/v1/jobs", None, (403, "PERMISSION_DENIED", "?queue=")).await;
    // read: reads only, and follows event streams with the token in the query.
    assert_eq!(call(&base, Some(r), Method::GET, &format!("{v2}/queues/a"), None).await.0, 200);
    refused(
        &base,
        Some(r),
        Method::POST,
        &format!("{v2}/queues/a/tasks"),
        Some(task.clone()),
        (403, "PERMISSION_DENIED", "scope read"),
    )
    .await;
    refused(&base, Some(r), Method::GET, "/v1/tokens", None, (403, "PERMISSION_DENIED", "needs scope admin")).await;
    let events = client().get(format!("{base}/v1/jobs/{job_id}/events?access_token={r}")).send().await.expect("stream");
    assert_eq!(events.status(), 200, "an event stream takes the token in the query");
    drop(events);
    refused(
        &base,
        None,
        Method::GET,
        &format!("/v1/jobs/{job_id}/events"),
        None,
        (401, "UNAUTHENTICATED", "credential"),
    )
    .await;

    // The CLI, through the API with the admin token: revoke, and the token fails at once.
    let endpoint = format!("--endpoint={base}");
    let token_flag = format!("--token={admin}");
    cli(&["tokens", "revoke", "e", &endpoint, &token_flag]);
    refused(
        &base,
        Some(e),
        Method::POST,
        &format!("{v2}/queues/a/tasks"),
        Some(task),
        (401, "UNAUTHENTICATED", "revoked"),
    )
    .await;
    let listed = cli(&["tokens", "list", &endpoint, &token_flag]);
    assert!(listed.contains("boot") && !listed.contains("\ne "), "{listed}");
}

#[tokio::test]
async fn tasks_may_act_only_as_allowed_identities_once_authentication_is_on() {
    let worker = Worker::ok().await;
    let server = TasklaneProcess::start();
    let base = format!("http://{}", server.addr);
    let v2 = format!("/v2/{PROJECT_LOCATION}");
    let oidc = |email: &str| json!({"task": {"httpRequest": {"url": worker.url("/run"), "oidcToken": {"serviceAccountEmail": email, "audience": "https://worker.example/run"}}}});
    let api = server.api();
    api.create_queue("ids", json!({})).await;
    // Open loopback mode: any identity, as before.
    assert_eq!(
        call(&base, None, Method::POST, &format!("{v2}/queues/ids/tasks"), Some(oidc("anyone@p.example"))).await.0,
        200
    );

    let dir = server.data_dir.to_str().expect("dir").to_string();
    let admin = cli(&["tokens", "create", "boot", "--scope", "admin", "--data-dir", &dir]);
    eventually("the server sees the token", Duration::from_secs(5), || {
        let base = base.clone();
        async move { call(&base, None, Method::GET, "/v1/tokens", None).await.0 == 401 }
    })
    .await;
    let invoker = "invoker@prod.iam.gserviceaccount.com";
    refused(
        &base,
        Some(&admin),
        Method::POST,
        &format!("{v2}/queues/ids/tasks"),
        Some(oidc(invoker)),
        (403, "PERMISSION_DENIED", invoker),
    )
    .await;
    refused(&base, Some(&admin), Method::POST, "/v1/jobs", Some(json!({"queue": format!("{PROJECT_LOCATION}/queues/ids"), "tasks": [{"url": worker.url("/j"), "oidc_token": {"service_account_email": invoker}}]})), (403, "PERMISSION_DENIED", invoker)).await;
    refused(
        &base,
        Some(&admin),
        Method::PATCH,
        &format!("{v2}/queues/ids"),
        Some(json!({"httpTarget": {"oauthToken": {"serviceAccountEmail": invoker, "scope": "s"}}})),
        (403, "PERMISSION_DENIED", invoker),
    )
    .await;

    let endpoint = format!("--endpoint={base}");
    let token_flag = format!("--token={admin}");
    let shown =
        cli(&["identities", "allow", invoker, "--audience", "https://worker.example/*", &endpoint, &token_flag]);
    assert!(shown.contains(invoker), "{shown}");
    let (status, v) =
        call(&base, Some(&admin), Method::POST, &format!("{v2}/queues/ids/tasks"), Some(oidc(invoker))).await;
    assert_eq!(status, 200, "{v}");
    let wrong_audience = json!({"task": {"httpRequest": {"url": worker.url("/run"), "oidcToken": {"serviceAccountEmail": invoker, "audience": "https://elsewhere.example/"}}}});
    refused(
        &base,
        Some(&admin),
        Method::POST,
        &format!("{v2}/queues/ids/tasks"),
        Some(wrong_audience),
        (403, "PERMISSION_DENIED", "audience \"https://elsewhere.example/\""),
    )
    .await;

    // The allowed one is delivered with a token that verifies against the JWKS.
    let got = worker.wait_for(2, Duration::from_secs(20)).await;
    let allowed = got.iter().find_map(|r| {
        let bearer = r.header("authorization")?.strip_prefix("Bearer ")?.to_string();
        Some(bearer)
    });
    let jwks = crate::targets::get_json(&format!("{base}/.well-known/jwks.json")).await;
    let claims: Vec<Value> = got
        .iter()
        .filter_map(|r| r.header("authorization")?.strip_prefix("Bearer ").map(|t| crate::targets::verify(t, &jwks)))
        .collect();
    assert!(allowed.is_some());
    assert!(claims.iter().any(|c| c["email"] == invoker && c["aud"] == "https://worker.example/run"), "{claims:?}");
}

#[test]
fn the_store_s_directory_and_files_are_its_owner_s_alone() {
    use std::os::unix::fs::PermissionsExt;
    let loose = fresh_dir("modes");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = TasklaneProcess::start_in(loose.clone());
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(server.api().create_queue("m", json!({})));
    assert_eq!(mode(&loose), 0o700, "a looser data directory is tightened at start");
    let mut files = 0;
    for entry in std::fs::read_dir(&loose).expect("list") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if name.starts_with("tasklane.db") {
            assert_eq!(mode(&path), 0o600, "{name}");
            files += 1;
        }
    }
    assert!(files >= 3, "the database, its WAL and shared memory: {files}");
    drop(server);
    let _ = std::fs::remove_dir_all(loose);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_stops_working_on_every_node_at_once() {
    let Some((url, _store, _schema)) = crate::cluster::fresh_database("tokens").await else { return };
    let admin = cli(&["tokens", "create", "boot", "--scope", "admin", "--database-url", &url]);
    let a = TasklaneProcess::start_node(&url);
    let base_a = format!("http://{}", a.addr);
    let v2 = format!("/v2/{PROJECT_LOCATION}/queues");
    refused(&base_a, None, Method::GET, &v2, None, (401, "UNAUTHENTICATED", "credential")).await;
    let (status, made) =
        call(&base_a, Some(&admin), Method::POST, "/v1/tokens", Some(json!({"name": "tmp", "scope": "read"}))).await;
    assert_eq!(status, 201, "{made}");
    let tmp = made["token"].as_str().expect("secret").to_string();
    // Node B starts with the token in the snapshot it keeps for a minute: from then on only
    // node A's announcement can make B forget it.
    let b = TasklaneProcess::start_node(&url);
    let base_b = format!("http://{}", b.addr);
    assert_eq!(call(&base_b, Some(&tmp), Method::GET, &v2, None).await.0, 200);
    assert_eq!(call(&base_b, Some(&admin), Method::GET, &v2, None).await.0, 200);
    let (status, _) = call(&base_a, Some(&admin), Method::DELETE, "/v1/tokens/tmp", None).await;
    assert_eq!(status, 200);
    // Within seconds, where B would otherwise keep its snapshot for a minute.
    eventually("node B to refuse the revoked token", Duration::from_secs(5), || {
        let (base_b, v2, tmp) = (base_b.clone(), v2.clone(), tmp.clone());
        async move { call(&base_b, Some(&tmp), Method::GET, &v2, None).await.0 == 401 }
    })
    .await;
    refused(&base_a, Some(&tmp), Method::GET, &v2, None, (401, "UNAUTHENTICATED", "revoked")).await;
}

#[tokio::test]
async fn a_web_page_cannot_drive_a_local_tasklane() {
    let worker = Worker::ok().await;
    let server = TasklaneProcess::start_with(&[
        "--allowed-origins",
        "https://console.example",
        "--allowed-hosts",
        "tasks.internal",
    ]);
    let base = format!("http://{}", server.addr);
    server.api().create_queue("web", json!({})).await;
    let job =
        json!({"queue": format!("{PROJECT_LOCATION}/queues/web"), "tasks": [{"url": worker.url("/x")}]}).to_string();
    let send = |method: Method, path: &str, headers: &[(&str, &str)], body: Option<String>| {
        let mut req = client().request(method, format!("{base}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        async move {
            let resp = req.send().await.expect("send");
            let status = resp.status().as_u16();
            (status, serde_json::from_str::<Value>(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null))
        }
    };
    let purge = format!("/v2/{PROJECT_LOCATION}/queues/web:purge");
    // A simple cross-site POST: text/plain or a form, from a foreign page or none.
    let (status, v) = send(
        Method::POST,
        "/v1/jobs",
        &[("content-type", "text/plain"), ("origin", "https://evil.example")],
        Some(job.clone()),
    )
    .await;
    assert_eq!(status, 403, "foreign origin: {v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("--allowed-origins"), "{v}");
    let (status, v) = send(Method::POST, "/v1/jobs", &[("content-type", "text/plain")], Some(job.clone())).await;
    assert_eq!(status, 415, "text/plain: {v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("application/json"), "{v}");
    let (status, _) =
        send(Method::POST, &purge, &[("content-type", "application/x-www-form-urlencoded")], Some("a=1".into())).await;
    assert_eq!(status, 415, "a form-encoded purge");
    // DNS rebinding: a name that resolves to loopback but is not ours.
    let (status, v) =
        send(Method::GET, &format!("/v2/{PROJECT_LOCATION}/queues"), &[("host", "rebind.evil.example")], None).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("--allowed-hosts"), "{v}");
    let (status, _) =
        send(Method::GET, &format!("/v2/{PROJECT_LOCATION}/queues"), &[("host", "tasks.internal:8790")], None).await;
    assert_eq!(status, 200, "an allowed host name");
    assert_eq!(worker.received().len(), 0, "nothing refused was delivered");
    assert_eq!(server.api().task_count("web").await, 0);

    // The allowed origin gets CORS, a preflight included; JSON without an Origin still works.
    let (status, _) = send(
        Method::OPTIONS,
        "/v1/jobs",
        &[
            ("origin", "https://console.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 204);
    let resp = client()
        .post(format!("{base}/v1/jobs"))
        .header("origin", "https://console.example")
        .header("content-type", "application/json")
        .body(job.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://console.example")
    );
    let (status, _) = send(Method::POST, "/v1/jobs", &[("content-type", "application/json")], Some(job)).await;
    assert_eq!(status, 201);
    worker.wait_for(2, Duration::from_secs(20)).await;
}

/// The last attempt's status message of a task, once it has one.
async fn last_attempt_message(base: &str, queue: &str, task: &str) -> String {
    let path = format!("/v2/{PROJECT_LOCATION}/queues/{queue}/tasks/{task}");
    let found = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    eventually("the task's first attempt", Duration::from_secs(20), || {
        let (path, found) = (path.clone(), found.clone());
        async move {
            let (_, t) = call(base, None, Method::GET, &path, None).await;
            let message = t.pointer("/lastAttempt/responseStatus/message").and_then(Value::as_str);
            if let Some(m) = message {
                *found.lock().expect("lock") = m.to_string();
            }
            message.is_some()
        }
    })
    .await;
    found.lock().expect("lock").clone()
}

#[tokio::test]
async fn beyond_loopback_pushes_reach_only_allowed_targets() {
    let worker = Worker::ok().await;
    // A worker that redirects every request to the cloud metadata address.
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let redirect_addr = redirector.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|| async {
        (axum::http::StatusCode::FOUND, [("location", "http://169.254.169.254/computeMetadata/v1/")])
    });
    let redirect_task = tokio::spawn(async move {
        let _ = axum::serve(redirector, app).await;
    });

    // Strict: listening on every interface, nothing private allowed.
    let strict = TasklaneProcess::start_with(&["--listen", "0.0.0.0:0", "--allow-unauthenticated"]);
    let base = format!("http://127.0.0.1:{}", strict.addr.port());
    let v2 = format!("/v2/{PROJECT_LOCATION}");
    call(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues"),
        Some(json!({"name": format!("{PROJECT_LOCATION}/queues/out")})),
    )
    .await;
    let task = |name: &str, url: &str| json!({"task": {"name": format!("{PROJECT_LOCATION}/queues/out/tasks/{name}"), "httpRequest": {"url": url}}});
    refused(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues/out/tasks"),
        Some(task("a", &worker.url("/"))),
        (403, "PERMISSION_DENIED", "--egress-allow 127.0.0.0/8"),
    )
    .await;
    refused(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues/out/tasks"),
        Some(task("b", "http://169.254.169.254/computeMetadata/v1/")),
        (403, "PERMISSION_DENIED", "never a task's target"),
    )
    .await;
    refused(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues/out/tasks"),
        Some(task("c", "http://metadata.google.internal/")),
        (403, "PERMISSION_DENIED", "metadata"),
    )
    .await;
    refused(
        &base,
        None,
        Method::POST,
        "/v1/jobs",
        Some(json!({"queue": format!("{PROJECT_LOCATION}/queues/out"), "tasks": [{"url": "http://10.0.0.1/"}]})),
        (403, "PERMISSION_DENIED", "private"),
    )
    .await;
    // A name is resolved at dispatch: localhost resolves to loopback, and the attempt fails naming the policy.
    let (status, v) = call(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues/out/tasks"),
        Some(task("d", &format!("http://localhost:{}/", worker.addr.port()))),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let message = last_attempt_message(&base, "out", "d").await;
    assert!(message.contains("egress policy") && message.contains("127.0.0.1"), "{message}");
    assert!(worker.received().is_empty(), "nothing reached the loopback worker");

    // Rules kept in the store apply at once, without a restart; a deny wins over an allow.
    let endpoint = format!("--endpoint={base}");
    let shown = cli(&["egress", "allow", "127.0.0.0/8", &endpoint]);
    assert!(shown.contains("allowed (stored): 127.0.0.0/8"), "{shown}");
    let (status, v) =
        call(&base, None, Method::POST, &format!("{v2}/queues/out/tasks"), Some(task("g", &worker.url("/stored"))))
            .await;
    assert_eq!(status, 200, "{v}");
    worker.wait_for(1, Duration::from_secs(20)).await;
    cli(&["egress", "deny", "127.0.0.1", &endpoint]);
    refused(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues/out/tasks"),
        Some(task("h", &worker.url("/"))),
        (403, "PERMISSION_DENIED", "egress rule 127.0.0.1/32"),
    )
    .await;
    cli(&["egress", "remove", "127.0.0.1", &endpoint]);
    cli(&["egress", "remove", "127.0.0.0/8", &endpoint]);
    refused(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues/out/tasks"),
        Some(task("i", &worker.url("/"))),
        (403, "PERMISSION_DENIED", "--egress-allow 127.0.0.0/8"),
    )
    .await;
    let worker_seen = worker.received().len();

    // Loopback allowed: the worker is reached, but a redirect to link-local is not followed.
    let allowed = TasklaneProcess::start_with(&[
        "--listen",
        "0.0.0.0:0",
        "--allow-unauthenticated",
        "--egress-allow",
        "127.0.0.0/8",
    ]);
    let base = format!("http://127.0.0.1:{}", allowed.addr.port());
    call(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues"),
        Some(json!({"name": format!("{PROJECT_LOCATION}/queues/out")})),
    )
    .await;
    let (status, v) =
        call(&base, None, Method::POST, &format!("{v2}/queues/out/tasks"), Some(task("e", &worker.url("/ok")))).await;
    assert_eq!(status, 200, "{v}");
    worker.wait_for(worker_seen + 1, Duration::from_secs(20)).await;
    let (status, v) = call(
        &base,
        None,
        Method::POST,
        &format!("{v2}/queues/out/tasks"),
        Some(task("f", &format!("http://{redirect_addr}/go"))),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let message = last_attempt_message(&base, "out", "f").await;
    assert!(message.contains("redirect") && message.contains("169.254.169.254"), "{message}");
    redirect_task.abort();
}

#[tokio::test]
async fn keys_are_sealed_with_the_secret_key_file_and_rotate_without_breaking_tokens() {
    use std::os::unix::fs::PermissionsExt;
    let files = fresh_dir("keys");
    let (key, other) = (files.join("master.key"), files.join("other.key"));
    for (path, byte) in [(&key, b'k'), (&other, b'o')] {
        std::fs::write(path, vec![byte; 48]).expect("write key");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let worker = Worker::ok().await;
    let server = TasklaneProcess::start_with(&["--secret-key-file", key.to_str().expect("path")]);
    let base = format!("http://{}", server.addr);
    let jwks = crate::targets::get_json(&format!("{base}/.well-known/jwks.json")).await;
    let first_kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_string();
    server.api().create_queue("signed", json!({})).await;
    server
        .api()
        .create_task(
            "signed",
            json!({"httpRequest": {"url": worker.url("/a"), "oidcToken": {"serviceAccountEmail": "a@p.example"}}}),
        )
        .await;
    let before = worker.wait_for(1, Duration::from_secs(20)).await;
    let old_token =
        before[0].header("authorization").and_then(|h| h.strip_prefix("Bearer ")).expect("a token").to_string();

    // The CLI rotates through the API; the old key stays published, so the token from
    // before still verifies, and new tokens use the new key.
    let out = cli(&["keys", "rotate", &format!("--endpoint={base}")]);
    assert!(out.contains("Rotated"), "{out}");
    let jwks = crate::targets::get_json(&format!("{base}/.well-known/jwks.json")).await;
    let kids: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    assert_eq!(kids[1], first_kid, "the replaced key is still published");
    let claims = crate::targets::verify(&old_token, &jwks);
    assert_eq!(claims["email"], "a@p.example");
    assert!(claims["jti"].is_string(), "tokens carry a jti");
    server
        .api()
        .create_task(
            "signed",
            json!({"httpRequest": {"url": worker.url("/b"), "oidcToken": {"serviceAccountEmail": "a@p.example"}}}),
        )
        .await;
    let after = worker.wait_for(2, Duration::from_secs(20)).await;
    let new_token = after[1].header("authorization").and_then(|h| h.strip_prefix("Bearer ")).expect("a token");
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            new_token.split('.').next().expect("header"),
        )
        .expect("base64"),
    )
    .expect("json");
    assert_eq!(header["kid"], kids[0]);

    // At rest the keys are sealed: without the file, or with another, the server will not start.
    let dir = server.kill_hard();
    let db = tasklane_store::SqliteStore::open(dir.join("tasklane.db")).expect("open the store");
    let stored =
        tasklane_store::Store::record_get(&db, "oidc:signing-key", tasklane_core::Timestamp::from_secs(0)).await;
    assert!(stored.expect("read").expect("a key").value.starts_with(b"tlenc1:"), "the signing key is sealed");
    db.close();
    for (flags, needle) in
        [(vec![], "--secret-key-file"), (vec!["--secret-key-file", other.to_str().expect("path")], "does not open")]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_tasklane"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .args(&flags)
            .output()
            .expect("run serve");
        assert!(!out.status.success(), "serve {flags:?} must refuse sealed keys it cannot open");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .args(["serve", "--listen", "127.0.0.1:0", "--secret-key-file"])
        .arg(&key)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("run serve");
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"), "a readable key file is refused");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(files);
}
