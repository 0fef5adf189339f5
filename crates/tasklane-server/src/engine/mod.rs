//! The engine: what runs without a request (the dispatcher and its scheduler, the callback
//! sender, the cluster keeper, the token signer) and what they share (the egress policy,
//! sealing of secrets at rest, the mapping of store failures to API errors). Nothing here
//! imports a service or an edge.

pub mod callbacks;
pub mod cluster;
pub mod dispatch;
pub mod egress;
pub mod errors;
pub mod oidc;
pub mod sealing;
