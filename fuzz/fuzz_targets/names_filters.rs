//! Resource names, ListQueues filters, token limits and egress rules parsed from arbitrary
//! text: each parser answers with a value or an error, never a panic, and a parsed name
//! prints back to the text it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasklane_core::access::Resource;
use tasklane_core::egress::{Cidr, EgressPolicy, Rule};
use tasklane_core::filter::QueueFilter;
use tasklane_core::{LocationName, QueueName, TaskName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(q) = QueueName::parse(text) {
        assert_eq!(q.to_string(), text, "a queue name prints back as written");
    }
    if let Ok(t) = TaskName::parse(text) {
        assert_eq!(t.to_string(), text, "a task name prints back as written");
    }
    let _ = LocationName::parse(text);
    let _ = QueueFilter::parse(text);
    let _ = Resource::of(text);
    let _ = Cidr::parse(text);
    if let Ok(rule) = Rule::parse(text) {
        let policy = EgressPolicy { open: false, allow: vec![rule.clone()], deny: vec![rule] };
        let _ = policy.check_host(text);
    }
    let _ = EgressPolicy::default().check_host(text);
});
