//! Pure rules of tasklane: names, queue and task configuration, validation, backoff,
//! the give-up rule, rate limiting and status mapping. No IO, no async, no wire formats.

pub mod access;
pub mod clock;
pub mod egress;
pub mod filter;
pub mod header;
pub mod job;
pub mod mask;
pub mod name;
pub mod outcome;
pub mod queue;
pub mod rate;
pub mod retry;
pub mod status;
pub mod target;
pub mod task;
pub mod throttle;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use name::{LocationName, QueueName, TaskName};
pub use queue::{Queue, QueueKind, QueueState, RateLimits};
pub use retry::RetryConfig;
pub use status::{Code, Status};
pub use task::{Attempt, AuthToken, HttpMethod, HttpRequest, PullSpec, ResponseStatus, Task, TaskSpec, TaskView};
