//! gRPC request messages decoded from arbitrary bytes and converted to core types, as the
//! gRPC edge does: decoding and conversion answer with a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tasklane_core::{QueueName, Timestamp};
use tasklane_server::grpc::{convert, messages as m};

fuzz_target!(|data: &[u8]| {
    let queue = QueueName::parse("projects/p/locations/l/queues/q").ok();
    let validate = |spec: Result<tasklane_core::TaskSpec, tasklane_core::Status>| {
        if let (Ok(spec), Some(q)) = (spec, &queue) {
            let _ = spec.validate(q, Timestamp::from_secs(1_800_000_000), || "1".into());
        }
    };
    if let Ok(r) = m::CreateTaskRequest::decode(data) {
        validate(convert::task_spec(r.task));
    }
    if let Ok(r) = m::BatchCreateTasksRequest::decode(data) {
        for c in r.requests {
            validate(convert::task_spec(c.task));
        }
    }
    if let Ok(r) = m::CreateQueueRequest::decode(data) {
        let _ = convert::queue_spec(&r.queue.unwrap_or_default());
    }
    if let Ok(r) = m::UpdateQueueRequest::decode(data) {
        let _ = convert::queue_spec(&r.queue.unwrap_or_default());
    }
    let _ = m::SetIamPolicyRequest::decode(data);
    let _ = m::ListQueuesRequest::decode(data);
    let _ = m::ListTasksRequest::decode(data);
    let _ = m::UpdateCmekConfigRequest::decode(data);
});
