//! Opaque page tokens: the last name of a page, base64url-encoded.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tasklane_core::Status;

pub fn encode(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

pub fn invalid() -> Status {
    Status::invalid_argument("Invalid page_token")
}

pub fn decode(token: &str) -> Result<String, Status> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}
