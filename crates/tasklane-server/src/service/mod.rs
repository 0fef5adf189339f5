//! The services: the operations of each API, transport-free (Cloud Tasks, its batches,
//! policies and operations; jobs, pull workers, dead letters; the access rules). They take
//! core types and answer core types or the protobuf model (`proto`), and never see a wire
//! format. Imports go down only: service → engine → store.

pub mod access;
pub mod cloud_tasks;
pub mod dead_letters;
pub mod jobs;
pub mod operations;
pub mod page_token;
pub mod policy;
pub mod proto;
pub mod pull;

// `crate::service::CloudTasks` and friends: the Cloud Tasks service is this layer's core.
pub use cloud_tasks::*;
