//! Proto3 JSON bodies of `/v2` (queues, tasks, IAM policies) and every `/v1` body, read
//! from arbitrary bytes: each reader answers with a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tasklane_core::{QueueName, Timestamp};
use tasklane_server::rest::wire;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    let _ = wire::queue_spec("queue", Some(&body));
    if let Ok(spec) = wire::task_spec("task", Some(&body))
        && let Ok(queue) = QueueName::parse("projects/p/locations/l/queues/q")
    {
        let _ = spec.validate(&queue, Timestamp::from_secs(1_800_000_000), || "1".into());
    }
    let _ = wire::policy("policy", Some(&body));
    tasklane_server::v1::read_any_body(&body);
});
