//! The edges where an application meets Cloud Tasks' exact answers over REST: JSON layout,
//! error details, the front end's refusals, task fields as stored, batches, IAM, masks,
//! filters and queue names after a delete (`../shared/cloud-tasks-fidelity.md`).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{Api, LOC, api, api_with};

fn queue_body(id: &str, extra: Value) -> String {
    let mut q = json!({ "name": format!("projects/p/locations/l/queues/{id}") });
    if let (Some(q), Some(extra)) = (q.as_object_mut(), extra.as_object()) {
        q.extend(extra.clone());
    }
    q.to_string()
}

async fn error_of(api: &Api, method: &str, uri: &str, body: &str) -> (u16, Value) {
    let (status, v) = api.send(method, uri, body).await;
    (status.as_u16(), v["error"].clone())
}

#[tokio::test]
async fn json_is_pretty_in_field_order_with_integral_doubles() {
    let api = api().await;
    api.queue("q").await;
    let (status, content_type, text) = api.send_raw("GET", &format!("{LOC}/queues/q"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert!(text.ends_with("}\n"), "a final newline: {text:?}");
    assert!(text.contains("\n  \"rateLimits\": {\n    \"maxDispatchesPerSecond\": 500,\n"), "{text}");
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
        .filter_map(|l| l.trim().split('"').nth(1))
        .collect();
    assert_eq!(keys, ["name", "rateLimits", "retryConfig", "state"]);
    let (_, _, compact) = api.send_raw("GET", &format!("{LOC}/queues/q?prettyPrint=false"), "").await;
    assert!(compact.starts_with("{\"name\":") && !compact.ends_with('\n'), "{compact}");
    let (_, _, error) = api.send_raw("GET", &format!("{LOC}/queues/nope?prettyPrint=false"), "").await;
    assert!(error.starts_with("{\"error\":{\"code\":404,"), "{error}");
}

#[tokio::test]
async fn the_front_end_refuses_unknown_parameters_and_unrouted_paths() {
    let api = api().await;
    api.queue("q").await;
    let (status, error) = error_of(&api, "GET", &format!("{LOC}/queues?bogus=1"), "").await;
    assert_eq!(status, 400);
    let text = "Invalid JSON payload received. Unknown name \"bogus\": Cannot bind query parameter. Field 'bogus' \
                could not be found in request message.";
    assert_eq!(error["message"], text);
    assert_eq!(error["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
    assert_eq!(error["details"][0]["fieldViolations"][0]["description"], text);
    // Standard parameters and the method's own are taken.
    api.ok("GET", &format!("{LOC}/queues?pageSize=1&$alt=json;enum-encoding=int&prettyPrint=true"), "").await;
    for (method, path) in [
        ("GET", format!("{LOC}/operations")),
        ("POST", format!("{LOC}/operations/x:wait")),
        ("DELETE", format!("{LOC}/operations/x")),
        ("GET", "/v2/bogus".to_string()),
        ("DELETE", format!("{LOC}/queues/q:pause")),
        ("POST", format!("{LOC}/queues/q:explode")),
    ] {
        let (status, content_type, page) = api.send_raw(method, &path, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert!(content_type.starts_with("text/html"), "{method} {path}: {content_type}");
        assert!(page.contains("<title>Error 404 (Not Found)!!1</title>"), "{page}");
        assert!(
            page.ends_with(&format!(
                "<p>The requested URL <code>{path}</code> was not found on this server.  <ins>That’s all we know.</ins>\n"
            )),
            "{page}"
        );
    }
    // The queue is still there: nothing above reached it.
    api.ok("GET", &format!("{LOC}/queues/q"), "").await;
}

#[tokio::test]
async fn parse_errors_name_every_unknown_field_with_its_place() {
    let api = api().await;
    api.queue("q").await;
    let body = json!({"task": {"httpRequest": {"url": "http://127.0.0.1:9/", "bogus": 1, "other": 2}}}).to_string();
    let (status, error) = error_of(&api, "POST", &format!("{LOC}/queues/q/tasks"), &body).await;
    assert_eq!(status, 400);
    let one = |name: &str| {
        format!("Invalid JSON payload received. Unknown name \"{name}\" at 'task.http_request': Cannot find field.")
    };
    assert_eq!(error["message"], format!("{}\n{}", one("bogus"), one("other")));
    let violations = &error["details"][0]["fieldViolations"];
    assert_eq!(violations[1], json!({"field": "task.http_request", "description": one("other")}));
    let (_, error) = error_of(&api, "POST", &format!("{LOC}/queues/q/tasks"), "[]").await;
    assert_eq!(error["message"], "Invalid JSON payload received. Unknown name \"\": Root element must be a message.");
    let (_, error) = error_of(&api, "GET", &format!("{LOC}/queues/q/tasks?pageSize=abc"), "").await;
    assert_eq!(error["message"], "Invalid value at 'page_size' (TYPE_INT32), \"abc\"");
    let (_, error) = error_of(&api, "POST", &format!("{LOC}/queues/q/tasks"), r#"{"task": {"name": 5}}"#).await;
    assert_eq!(error["message"], "Invalid value at 'task.name' (TYPE_STRING), 5");
}

#[tokio::test]
async fn errors_carry_the_real_details() {
    let api = api().await;
    let (_, error) = error_of(&api, "POST", &format!("{LOC}/queues"), &queue_body("bad_id", json!({}))).await;
    assert_eq!(
        error["details"][0],
        json!({"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Definition of queue ID",
            "url": "https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#Queue.FIELDS.name"}]})
    );
    let target = json!({"httpTarget": {"uriOverride": {"host": "example.net:8080"}}});
    let (status, error) = error_of(&api, "POST", &format!("{LOC}/queues"), &queue_body("t", target)).await;
    assert_eq!((status, error["message"].as_str()), (400, Some("Error in parsing HttpTarget. Invalid Host.")));
    assert_eq!(
        error["details"][0],
        json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_INPUT_ON_HTTP_TARGET_OVERRIDE",
            "domain": "cloudtasks.googleapis.com", "metadata": {"invalid_field": "Invalid Host."}})
    );
    let target = json!({"httpTarget": {"uriOverride": {"scheme": 9}}});
    let (_, error) = error_of(&api, "POST", &format!("{LOC}/queues"), &queue_body("t", target)).await;
    assert_eq!(error["message"], "Error in parsing HttpTarget. ");
    assert_eq!(error["details"][0]["metadata"]["invalid_field"], "");
    // Headers a queue may not override are named, all of them.
    let target = json!({"httpTarget": {"headerOverrides": [{"header": {"key": "User-Agent", "value": "x"}},
        {"header": {"key": "X-Fine", "value": "1"}}, {"header": {"key": "Host", "value": "h"}}]}});
    let (_, error) = error_of(&api, "POST", &format!("{LOC}/queues"), &queue_body("t", target)).await;
    assert_eq!(
        error["message"],
        "Error in parsing HttpTarget.headers. Header name cannot be empty or start with reserved prefixes. Invalid \
         headers found: User-Agent, Host"
    );
}

#[tokio::test]
async fn a_new_task_is_stored_as_the_real_service_stores_it() {
    let api = api().await;
    api.queue("q").await;
    api.clock.advance(Duration::from_micros(654_321));
    let body = json!({"task": {"httpRequest": {"url": "https://w.example/run", "headers": {
        "User-Agent": "curl", "Via": "proxy", "Bad Name": "x", "X-Line": "a\nb", "X-Nul": "a\u{0}b",
        "content-type": "text/plain", "X-Empty": "", "X-CloudTasks-TaskName": "mine"},
        "oauthToken": {"serviceAccountEmail": "a@p.iam.gserviceaccount.com"}},
        "dispatchDeadline": "20.123456789s"}});
    // An OAuth token goes only to Google APIs.
    let (status, error) = error_of(&api, "POST", &format!("{LOC}/queues/q/tasks"), &body.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(
        error["message"],
        "Invalid url for HttpRequest.oauth_token. The hostname in the url must end with \".googleapis.com\""
    );
    let body = body.to_string().replace("https://w.example/run", "https://tasks.googleapis.com/run");
    let t = api.ok("POST", &format!("{LOC}/queues/q/tasks"), &body).await;
    assert_eq!(t["createTime"], "2027-01-15T08:00:00Z", "whole seconds");
    assert_eq!(t["scheduleTime"], "2027-01-15T08:00:00.654321Z");
    assert_eq!(t["dispatchDeadline"], "20.123s", "milliseconds");
    assert_eq!(
        t["httpRequest"]["headers"],
        json!({"X-Line": "a_b", "X-Nul": "a", "content-type": "text/plain", "X-CloudTasks-TaskName": "mine",
            "User-Agent": "Google-Cloud-Tasks"})
    );
    assert_eq!(t["httpRequest"]["oauthToken"]["scope"], "https://www.googleapis.com/auth/cloud-platform");
    // A task in a queue that is not there.
    let (status, error) = error_of(&api, "POST", &format!("{LOC}/queues/nope/tasks"), &body).await;
    assert_eq!(status, 404);
    assert_eq!(
        error["message"],
        "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize."
    );
}

#[tokio::test]
async fn every_page_with_items_has_a_token() {
    let api = api().await;
    for id in ["a", "b", "c"] {
        api.queue(id).await;
    }
    let first = api.ok("GET", &format!("{LOC}/queues?pageSize=2"), "").await;
    let token = first["nextPageToken"].as_str().expect("a token").to_string();
    let second = api.ok("GET", &format!("{LOC}/queues?pageSize=2&pageToken={token}"), "").await;
    assert_eq!(second["queues"].as_array().map(Vec::len), Some(1));
    let token = second["nextPageToken"].as_str().expect("a token on the last page").to_string();
    let third = api.ok("GET", &format!("{LOC}/queues?pageSize=2&pageToken={token}"), "").await;
    assert_eq!(third, json!({}), "the page after the last is empty, without a token");
}

#[tokio::test]
async fn filters_speak_the_real_language() {
    let api = api().await;
    api.queue("slow").await;
    api.ok(
        "PATCH",
        &format!("{LOC}/queues/slow?updateMask=rateLimits.maxDispatchesPerSecond"),
        &json!({"rateLimits": {"maxDispatchesPerSecond": 2}}).to_string(),
    )
    .await;
    api.queue("fast").await;
    api.ok("POST", &format!("{LOC}/queues/fast:pause"), "").await;
    let names = |v: Value| -> Vec<String> {
        v["queues"].as_array().into_iter().flatten().map(|q| q["name"].as_str().unwrap().to_string()).collect()
    };
    let filtered = |f: &str| format!("{LOC}/queues?filter={}", url_escape(f));
    let slow = "projects/p/locations/l/queues/slow";
    let fast = "projects/p/locations/l/queues/fast";
    assert_eq!(names(api.ok("GET", &filtered("rate_limits.max_dispatches_per_second < 10"), "").await), [slow]);
    assert_eq!(names(api.ok("GET", &filtered("NOT state: PAUSED"), "").await), [slow]);
    assert_eq!(names(api.ok("GET", &filtered("state > RUNNING OR name: SLOW"), "").await), [fast, slow]);
    let (_, error) = error_of(&api, "GET", &filtered("state: 2"), "").await;
    assert_eq!(error["message"], "The value '2' is of incorrect type.");
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn update_masks_take_exact_paths_and_nested_target_fields() {
    let api = api().await;
    let target = json!({"httpTarget": {"uriOverride": {"host": "example.net"}}});
    api.ok("POST", &format!("{LOC}/queues"), &queue_body("q", target)).await;
    let q = api.ok("GET", &format!("{LOC}/queues/q"), "").await;
    assert!(q["httpTarget"]["uriOverride"].get("uriOverrideEnforceMode").is_none(), "unset stays unset: {q}");
    // One leaf of the target, the rest kept; the parent of a new leaf is made.
    let patch = json!({"httpTarget": {"uriOverride": {"pathOverride": {"path": "/v2"}}}}).to_string();
    let q =
        api.ok("PATCH", &format!("{LOC}/queues/q?updateMask=httpTarget.uriOverride.pathOverride.path"), &patch).await;
    assert_eq!(q["httpTarget"]["uriOverride"], json!({"host": "example.net", "pathOverride": {"path": "/v2"}}));
    let (_, error) = error_of(&api, "PATCH", &format!("{LOC}/queues/q?updateMask=rateLimits.bogus"), "{}").await;
    assert_eq!(error["message"], "Invalid mask: rate_limits.bogus");
    // The request's target is checked even outside the mask.
    let bad = json!({"httpTarget": {"uriOverride": {"host": ""}}}).to_string();
    let (_, error) = error_of(&api, "PATCH", &format!("{LOC}/queues/q?updateMask=rateLimits"), &bad).await;
    assert_eq!(error["message"], "Error in parsing HttpTarget. Invalid Host.");
}

#[tokio::test]
async fn batches_refuse_whole_what_the_real_service_refuses() {
    let api = api().await;
    api.queue("q").await;
    let q = "projects/p/locations/l/queues/q";
    let entry = |id: &str| json!({"parent": q, "task": {"name": format!("{q}/tasks/{id}"), "httpRequest": {"url": "http://127.0.0.1:9/"}}});
    let batch = |requests: Vec<Value>, id: &str| json!({"requests": requests, "requestId": id}).to_string();
    let create = format!("{LOC}/queues/q/tasks:batchCreate");
    let (_, error) = error_of(&api, "POST", &create, &batch(vec![entry("a"), entry("a")], "")).await;
    assert_eq!(error["message"], format!("Duplicate task name in the batch request: {q}/tasks/a"));
    let mut stray = entry("b");
    stray["parent"] = json!("");
    let (_, error) = error_of(&api, "POST", &create, &batch(vec![stray], "")).await;
    assert_eq!(
        error["message"],
        format!(
            "All tasks in a batch request must target the same queue. Found task for queue  in batch request for queue {q}."
        )
    );
    let op = api.ok("POST", &create, &batch(vec![entry("a"), entry("b")], "first")).await;
    assert_eq!(op["name"], "projects/p/locations/l/operations/first");
    assert_eq!(op["metadata"]["state"], "SUCCEEDED");
    let (_, error) = error_of(&api, "POST", &create, &batch(vec![entry("c")], "first")).await;
    assert_eq!(error["message"], "Duplicate operation id in the batch request: first");
    api.ok("GET", &format!("{LOC}/operations/first"), "").await;
    // Every create failing: FAILED, and no result at all.
    let op = api.ok("POST", &create, &batch(vec![entry("a")], "")).await;
    assert_eq!(op["metadata"]["state"], "FAILED");
    assert!(op.get("response").is_none() && op.get("error").is_none(), "{op}");
    // Every delete failing: PARTIALLY_SUCCEEDED with an error; a name twice succeeds twice.
    let delete = format!("{LOC}/queues/q/tasks:batchDelete");
    let names = |list: &[&str]| json!({"names": list}).to_string();
    let op = api.ok("POST", &delete, &names(&[&format!("{q}/tasks/nope")])).await;
    assert_eq!(op["metadata"]["state"], "PARTIALLY_SUCCEEDED");
    assert_eq!(op["error"]["code"], 10);
    let twice = format!("{q}/tasks/a");
    let op = api.ok("POST", &delete, &names(&[&twice, &twice, "bad"])).await;
    assert_eq!(
        op["metadata"]["failedRequests"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["2".to_string()])
    );
    assert!(
        op["metadata"]["failedRequests"]["2"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid task name: Task name must be formatted")
    );
}

#[tokio::test]
async fn iam_policies_are_kept_as_the_real_service_keeps_them() {
    let api = api().await;
    api.queue("q").await;
    let verb = |v: &str| format!("{LOC}/queues/q:{v}");
    let empty = api.ok("POST", &verb("getIamPolicy"), "{}").await;
    assert_eq!(empty, json!({"etag": "ACAB"}));
    let policy = json!({"policy": {"bindings": [
        {"role": "roles/viewer", "members": ["user:a@x.example"]},
        {"role": "roles/editor", "members": []},
        {"role": "roles/viewer", "members": ["user:a@x.example", "user:b@x.example"]}]}});
    let set = api.ok("POST", &verb("setIamPolicy"), &policy.to_string()).await;
    assert_eq!(set["version"], 1);
    assert_eq!(set["bindings"], json!([{"role": "roles/viewer", "members": ["user:a@x.example", "user:b@x.example"]}]));
    let stale = json!({"policy": {"etag": "ACAB"}}).to_string();
    let (status, error) = error_of(&api, "POST", &verb("setIamPolicy"), &stale).await;
    assert_eq!(status, 409);
    assert!(error["message"].as_str().unwrap().contains("The request's ETag '\\000 \\001' did not match"), "{error}");
    let tested = json!({"permissions": ["cloudtasks.tasks.run", "cloudtasks.queues.get", "cloudtasks.tasks.run"]});
    let granted = api.ok("POST", &verb("testIamPermissions"), &tested.to_string()).await;
    assert_eq!(granted["permissions"], json!(["cloudtasks.queues.get", "cloudtasks.tasks.run"]));
}

#[tokio::test]
async fn a_deleted_queue_s_name_stays_reserved_for_the_window() {
    let api = api_with(Duration::from_secs(3 * 24 * 3600)).await;
    api.queue("q").await;
    api.ok("DELETE", &format!("{LOC}/queues/q"), "").await;
    let too_recent = "The queue cannot be created because a queue with this name existed too recently.";
    api.check_err(
        "POST",
        &format!("{LOC}/queues"),
        &queue_body("q", json!({})),
        400,
        "FAILED_PRECONDITION",
        too_recent,
    )
    .await;
    api.check_err("PATCH", &format!("{LOC}/queues/q"), "{}", 400, "FAILED_PRECONDITION", too_recent).await;
    api.check_err("DELETE", &format!("{LOC}/queues/q"), "", 404, "NOT_FOUND", "Requested entity was not found.").await;
    api.clock.advance(Duration::from_secs(3 * 24 * 3600 + 1));
    api.queue("q").await;
}

#[tokio::test]
async fn run_task_answers_the_task_as_dispatched() {
    let api = api().await;
    api.queue("q").await;
    let body = json!({"task": {"name": "projects/p/locations/l/queues/q/tasks/t",
        "httpRequest": {"url": "http://127.0.0.1:9/"}, "scheduleTime": "2027-01-16T00:00:00Z"}});
    api.ok("POST", &format!("{LOC}/queues/q/tasks"), &body.to_string()).await;
    let ran = api.ok("POST", &format!("{LOC}/queues/q/tasks/t:run"), "{}").await;
    assert_eq!(ran["dispatchCount"], 1);
    assert!(ran.get("firstAttempt").is_none(), "{ran}");
    assert_eq!(ran["lastAttempt"], json!({"scheduleTime": "2027-01-16T00:00:00Z"}));
}

#[tokio::test]
async fn a_queue_s_token_is_the_task_s_as_stored() {
    let api = api().await;
    let oidc = json!({"httpTarget": {"oidcToken": {"serviceAccountEmail": "q@p.iam.gserviceaccount.com"}}});
    api.ok("POST", &format!("{LOC}/queues"), &queue_body("signed", oidc)).await;
    let url = "http://127.0.0.1:9/run?x=1";
    let task = json!({"task": {"httpRequest": {"url": url, "headers": {"Authorization": "Bearer own"},
        "oidcToken": {"serviceAccountEmail": "own@p.iam.gserviceaccount.com", "audience": "mine"}}}});
    let t = api.ok("POST", &format!("{LOC}/queues/signed/tasks"), &task.to_string()).await;
    assert_eq!(
        t["httpRequest"]["oidcToken"],
        json!({"serviceAccountEmail": "q@p.iam.gserviceaccount.com", "audience": url})
    );
    assert_eq!(t["httpRequest"]["headers"]["Authorization"], "Bearer own");
    // A task's own token without a service account still fails.
    let bad = json!({"task": {"httpRequest": {"url": url, "oidcToken": {"serviceAccountEmail": ""}}}});
    let (_, error) = error_of(&api, "POST", &format!("{LOC}/queues/signed/tasks"), &bad.to_string()).await;
    assert_eq!(error["message"], "service_account_email must be set.");
    // A queue's OAuth token, without a scope, goes only to Google APIs, with cloud-platform.
    let oauth = json!({"httpTarget": {"oauthToken": {"serviceAccountEmail": "q@p.iam.gserviceaccount.com"}}});
    api.ok("POST", &format!("{LOC}/queues"), &queue_body("google", oauth)).await;
    let plain = json!({"task": {"httpRequest": {"url": url}}});
    let (_, error) = error_of(&api, "POST", &format!("{LOC}/queues/google/tasks"), &plain.to_string()).await;
    assert!(error["message"].as_str().unwrap().starts_with("Invalid url for HttpRequest.oauth_token."), "{error}");
    let to_google = json!({"task": {"httpRequest": {"url": "https://tasks.googleapis.com/x"}}});
    let t = api.ok("POST", &format!("{LOC}/queues/google/tasks"), &to_google.to_string()).await;
    assert_eq!(t["httpRequest"]["oauthToken"]["scope"], "https://www.googleapis.com/auth/cloud-platform");
}
