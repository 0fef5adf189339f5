//! The edge: the only code that knows a wire format. Each edge parses a request into core
//! types, calls a service, and renders the answer (REST and gRPC for Cloud Tasks, `/v1`
//! for tasklane's own API, the admin endpoints), behind the connection handling and the
//! guard every route shares. Imports go down only: edge → service → engine → store.

pub mod admin;
pub mod connections;
pub mod grpc;
pub mod guard;
pub mod rest;
pub mod v1;
pub mod v1_access;
