//! The canonical status codes (google.rpc.Code) and the one mapping from a code to an
//! HTTP status, so REST and gRPC answers can never disagree.

/// google.rpc.Code, with the numbers of the published enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    pub fn from_i32(n: i32) -> Option<Code> {
        Code::ALL.into_iter().find(|c| *c as i32 == n)
    }

    /// The HTTP status a Google API answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::Unknown => 500,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::DataLoss => 500,
            Code::Unauthenticated => 401,
        }
    }

    /// The enum name as it appears in Google JSON errors (`"status": "NOT_FOUND"`).
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// An attempt's recorded status text, as the real service writes it:
    /// `INTERNAL(13): HTTP status code 500`, `UNKNOWN(2): HTTP status code 0` for a worker
    /// that could not be reached.
    pub fn attempt_message(self, http_status: u16) -> String {
        format!("{}({}): HTTP status code {http_status}", self.name(), self as i32)
    }

    /// The code recorded for a worker's HTTP answer, as Cloud Tasks records `response_status`.
    pub fn from_worker_http_status(status: u16) -> Code {
        match status {
            200..=299 => Code::Ok,
            301 => Code::Unknown,
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::Aborted,
            416 => Code::OutOfRange,
            429 => Code::ResourceExhausted,
            499 => Code::Cancelled,
            501 => Code::Unimplemented,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            405..=499 | 300..=399 | 100..=199 => Code::FailedPrecondition,
            500..=599 => Code::Internal,
            _ => Code::Unknown,
        }
    }
}

/// What an error says beyond its text, as `google.rpc` error details: the edges render
/// them (`details` in REST JSON, `grpc-status-details-bin` over gRPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// `google.rpc.ErrorInfo`: a machine-readable reason, its domain, and facts about it.
    ErrorInfo { reason: String, domain: String, metadata: Vec<(String, String)> },
    /// `google.rpc.Help`: links as (description, url).
    Help { links: Vec<(String, String)> },
    /// `google.rpc.BadRequest`: the fields at fault as (field, description); the field may be empty.
    BadRequest { violations: Vec<(String, String)> },
    /// `google.rpc.LocalizedMessage`.
    LocalizedMessage { locale: String, message: String },
}

impl Detail {
    /// An `ErrorInfo` in Cloud Tasks' domain.
    pub fn cloud_tasks(reason: &str, metadata: &[(&str, &str)]) -> Detail {
        Detail::ErrorInfo {
            reason: reason.to_string(),
            domain: "cloudtasks.googleapis.com".to_string(),
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// A `Help` with one link.
    pub fn help(description: &str, url: &str) -> Detail {
        Detail::Help { links: vec![(description.to_string(), url.to_string())] }
    }
}

/// A code with a message for the caller: the error type of every validation rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    pub code: Code,
    pub message: String,
    pub details: Vec<Detail>,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status { code, message: message.into(), details: Vec::new() }
    }

    pub fn with_detail(mut self, detail: Detail) -> Self {
        self.details.push(detail);
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Status::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Status::new(Code::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Status::new(Code::AlreadyExists, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Status::new(Code::FailedPrecondition, message)
    }

    pub fn aborted(message: impl Into<String>) -> Self {
        Status::new(Code::Aborted, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Status::new(Code::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Status::new(Code::Unavailable, message)
    }

    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Status::new(Code::ResourceExhausted, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_status_mapping() {
        let check = |http: u16, code: Code| {
            assert_eq!(Code::from_worker_http_status(http), code, "http {http}");
        };
        check(200, Code::Ok);
        check(204, Code::Ok);
        check(400, Code::InvalidArgument);
        check(401, Code::Unauthenticated);
        check(403, Code::PermissionDenied);
        check(404, Code::NotFound);
        check(409, Code::Aborted);
        check(410, Code::FailedPrecondition);
        check(429, Code::ResourceExhausted);
        check(500, Code::Internal);
        check(501, Code::Unimplemented);
        check(502, Code::Internal);
        check(503, Code::Unavailable);
        check(504, Code::DeadlineExceeded);
        check(302, Code::FailedPrecondition);
        check(301, Code::Unknown);
        assert_eq!(Code::Internal.attempt_message(500), "INTERNAL(13): HTTP status code 500");
        assert_eq!(Code::Cancelled.attempt_message(499), "CANCELLED(1): HTTP status code 499");
        assert_eq!(Code::DeadlineExceeded.attempt_message(504), "DEADLINE_EXCEEDED(4): HTTP status code 504");
        assert_eq!(Code::Unknown.attempt_message(0), "UNKNOWN(2): HTTP status code 0");
    }

    #[test]
    fn codes_round_trip_through_numbers() {
        for code in Code::ALL {
            assert_eq!(Code::from_i32(code as i32), Some(code));
        }
        assert_eq!(Code::from_i32(17), None);
        assert_eq!(Code::NotFound.http_status(), 404);
        assert_eq!(Code::NotFound.name(), "NOT_FOUND");
    }
}
