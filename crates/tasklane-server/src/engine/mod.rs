//! The engine: what runs without a request (the dispatcher and its scheduler, the callback
//! sender, the cluster keeper, the token signer, the event bus) and what they share (the egress policy,
//! sealing of secrets at rest, the mapping of store failures to API errors). Nothing here
//! imports a service or an edge.

pub mod callbacks;
pub mod cluster;
pub mod dispatch;
pub mod egress;
pub mod errors;
pub mod events;
pub mod oidc;
pub mod sealing;

/// `N` bytes from the operating system's random source, for keys, ids and tokens; `what`
/// names the use in the error when the source fails.
pub fn random_bytes<const N: usize>(what: &str) -> Result<[u8; N], tasklane_core::Status> {
    let mut bytes = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| tasklane_core::Status::internal(format!("no randomness for {what}")))?;
    Ok(bytes)
}
