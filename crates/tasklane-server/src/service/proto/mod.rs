//! The protobuf model of the Cloud Tasks API: the messages (`messages`) and the one
//! mapping between them and core types (`convert`). Services use it to keep records
//! (policies, batch operations) in the API's own form; the gRPC edge speaks it.

pub mod convert;
pub mod messages;
