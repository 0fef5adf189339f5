//! The gRPC edge from Rust (issue 17: it was covered only by the compatibility scenarios,
//! which install Google's clients at test time): unary calls framed by hand over HTTP/2,
//! their answers decoded with the server's own messages, errors as trailers-only statuses.

use std::time::Duration;

use prost::Message;
use tasklane_server::grpc::messages as m;

use crate::support::{PROJECT_LOCATION, TasklaneProcess, Worker, grpc_frame};

/// A unary gRPC call: the decoded answer, or the (grpc-status, grpc-message) it was refused with.
async fn call<Req: Message, Resp: Message + Default>(
    server: &TasklaneProcess,
    method: &str,
    request: &Req,
) -> Result<Resp, (String, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().http2_prior_knowledge().build().expect("h2c");
    let resp = http
        .post(format!("http://{}/google.cloud.tasks.v2.CloudTasks/{method}", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(grpc_frame(request))
        .send()
        .await
        .expect("gRPC call");
    assert_eq!(resp.status(), 200, "gRPC answers HTTP 200 whatever its status");
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(status) = header("grpc-status") {
        return Err((status, header("grpc-message").unwrap_or_default()));
    }
    let body = resp.bytes().await.expect("the answer");
    assert!(body.len() >= 5 && body[0] == 0, "one uncompressed message frame");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(body.len(), 5 + len, "the frame holds exactly its message");
    Ok(Resp::decode(&body[5..]).expect("a message of the answer's type"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_tasks_over_grpc_from_rust() {
    let server = TasklaneProcess::start();
    let worker = Worker::ok().await;
    let queue_name = format!("{PROJECT_LOCATION}/queues/grpc");
    let created: m::Queue = call(
        &server,
        "CreateQueue",
        &m::CreateQueueRequest {
            parent: PROJECT_LOCATION.into(),
            queue: Some(m::Queue { name: queue_name.clone(), ..Default::default() }),
        },
    )
    .await
    .expect("CreateQueue");
    assert_eq!(created.name, queue_name);
    assert_eq!(created.rate_limits.as_ref().map(|r| r.max_dispatches_per_second), Some(500.0), "the default rate");
    let paused: m::Queue =
        call(&server, "PauseQueue", &m::NameRequest { name: queue_name.clone() }).await.expect("PauseQueue");
    assert_eq!(paused.state, 2, "PAUSED");

    let task_name = format!("{queue_name}/tasks/from-rust");
    let task = m::Task {
        name: task_name.clone(),
        http_request: Some(m::HttpRequest { url: worker.url("/rust"), body: b"hello".to_vec(), ..Default::default() }),
        ..Default::default()
    };
    let request = m::CreateTaskRequest { parent: queue_name.clone(), task: Some(task.clone()), response_view: 2 };
    let created: m::Task = call(&server, "CreateTask", &request).await.expect("CreateTask");
    assert_eq!(created.name, task_name);
    assert_eq!(created.http_request.as_ref().map(|r| r.body.as_slice()), Some(&b"hello"[..]), "FULL view has the body");
    let listed: m::ListTasksResponse = call(
        &server,
        "ListTasks",
        &m::ListTasksRequest { parent: queue_name.clone(), page_size: 10, ..Default::default() },
    )
    .await
    .expect("ListTasks");
    assert_eq!(listed.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), [task_name.as_str()]);
    assert!(listed.tasks[0].http_request.as_ref().is_some_and(|r| r.body.is_empty()), "BASIC view has no body");

    // Errors: a status in the trailers-only answer, with Cloud Tasks' text.
    let again = call::<_, m::Task>(&server, "CreateTask", &request).await.unwrap_err();
    assert_eq!(again.0, "6", "ALREADY_EXISTS: {again:?}");
    let missing = m::NameViewRequest { name: format!("{queue_name}/tasks/nope"), ..Default::default() };
    let gone = call::<_, m::Task>(&server, "GetTask", &missing).await.unwrap_err();
    assert_eq!(gone.0, "5", "NOT_FOUND: {gone:?}");
    // A name that is no project's is refused as Google's front end refuses it.
    let bad =
        call::<_, m::Queue>(&server, "GetQueue", &m::NameRequest { name: "not a name".into() }).await.unwrap_err();
    assert_eq!(bad.0, "7", "PERMISSION_DENIED: {bad:?}");
    let bad_id = m::NameRequest { name: format!("{PROJECT_LOCATION}/queues/bad_id") };
    let bad = call::<_, m::Queue>(&server, "GetQueue", &bad_id).await.unwrap_err();
    assert_eq!(bad.0, "3", "INVALID_ARGUMENT: {bad:?}");

    // And the task is delivered once the queue resumes.
    let _: m::Queue =
        call(&server, "ResumeQueue", &m::NameRequest { name: queue_name.clone() }).await.expect("ResumeQueue");
    let got = worker.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!((got[0].path.as_str(), &got[0].body[..]), ("/rust", &b"hello"[..]));
}
