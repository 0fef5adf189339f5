//! The protobuf messages of the Cloud Tasks v2 API and the Google APIs it uses
//! (IAM, locations, long-running operations), written here from the published API
//! reference: message and field names and numbers are the API's, the code is ours.
//!
//! Enums are carried as `int32` (their wire form) and oneof members as separate optional
//! fields (the same wire form); the conversions in `convert.rs` check both.
//! Well-known types (`Timestamp`, `Duration`, `FieldMask`, `Any`, `Empty`) come from `prost-types`.

use std::collections::BTreeMap;

use prost_types::{Any, Duration, FieldMask, Timestamp};

// ---- google.cloud.tasks.v2: queues ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct Queue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub app_engine_routing_override: Option<AppEngineRouting>,
    #[prost(message, optional, tag = "10")]
    pub http_target: Option<HttpTarget>,
    #[prost(message, optional, tag = "3")]
    pub rate_limits: Option<RateLimits>,
    #[prost(message, optional, tag = "4")]
    pub retry_config: Option<RetryConfig>,
    /// `Queue.State`: 1 RUNNING, 2 PAUSED, 3 DISABLED.
    #[prost(int32, tag = "5")]
    pub state: i32,
    #[prost(message, optional, tag = "6")]
    pub purge_time: Option<Timestamp>,
    #[prost(message, optional, tag = "9")]
    pub stackdriver_logging_config: Option<StackdriverLoggingConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimits {
    #[prost(double, tag = "1")]
    pub max_dispatches_per_second: f64,
    #[prost(int32, tag = "2")]
    pub max_burst_size: i32,
    #[prost(int32, tag = "3")]
    pub max_concurrent_dispatches: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryConfig {
    #[prost(int32, tag = "1")]
    pub max_attempts: i32,
    #[prost(message, optional, tag = "2")]
    pub max_retry_duration: Option<Duration>,
    #[prost(message, optional, tag = "3")]
    pub min_backoff: Option<Duration>,
    #[prost(message, optional, tag = "4")]
    pub max_backoff: Option<Duration>,
    #[prost(int32, tag = "5")]
    pub max_doublings: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StackdriverLoggingConfig {
    #[prost(double, tag = "1")]
    pub sampling_ratio: f64,
}

// ---- google.cloud.tasks.v2: targets ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct PathOverride {
    #[prost(string, tag = "1")]
    pub path: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryOverride {
    #[prost(string, tag = "1")]
    pub query_params: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UriOverride {
    /// `UriOverride.Scheme`: 1 HTTP, 2 HTTPS.
    #[prost(int32, optional, tag = "1")]
    pub scheme: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub host: Option<String>,
    #[prost(int64, optional, tag = "3")]
    pub port: Option<i64>,
    #[prost(message, optional, tag = "4")]
    pub path_override: Option<PathOverride>,
    #[prost(message, optional, tag = "5")]
    pub query_override: Option<QueryOverride>,
    /// `UriOverride.UriOverrideEnforceMode`: 1 IF_NOT_EXISTS, 2 ALWAYS.
    #[prost(int32, tag = "6")]
    pub uri_override_enforce_mode: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderOverride {
    #[prost(message, optional, tag = "1")]
    pub header: Option<Header>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpTarget {
    #[prost(message, optional, tag = "1")]
    pub uri_override: Option<UriOverride>,
    #[prost(int32, tag = "2")]
    pub http_method: i32,
    #[prost(message, repeated, tag = "3")]
    pub header_overrides: Vec<HeaderOverride>,
    #[prost(message, optional, tag = "5")]
    pub oauth_token: Option<OAuthToken>,
    #[prost(message, optional, tag = "6")]
    pub oidc_token: Option<OidcToken>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(string, tag = "1")]
    pub url: String,
    #[prost(int32, tag = "2")]
    pub http_method: i32,
    #[prost(btree_map = "string, string", tag = "3")]
    pub headers: BTreeMap<String, String>,
    #[prost(bytes = "vec", tag = "4")]
    pub body: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub oauth_token: Option<OAuthToken>,
    #[prost(message, optional, tag = "6")]
    pub oidc_token: Option<OidcToken>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppEngineHttpRequest {
    #[prost(int32, tag = "1")]
    pub http_method: i32,
    #[prost(message, optional, tag = "2")]
    pub app_engine_routing: Option<AppEngineRouting>,
    #[prost(string, tag = "3")]
    pub relative_uri: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub headers: BTreeMap<String, String>,
    #[prost(bytes = "vec", tag = "5")]
    pub body: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppEngineRouting {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(string, tag = "3")]
    pub instance: String,
    #[prost(string, tag = "4")]
    pub host: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OAuthToken {
    #[prost(string, tag = "1")]
    pub service_account_email: String,
    #[prost(string, tag = "2")]
    pub scope: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OidcToken {
    #[prost(string, tag = "1")]
    pub service_account_email: String,
    #[prost(string, tag = "2")]
    pub audience: String,
}

// ---- google.cloud.tasks.v2: tasks ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct Task {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub app_engine_http_request: Option<AppEngineHttpRequest>,
    #[prost(message, optional, tag = "3")]
    pub http_request: Option<HttpRequest>,
    #[prost(message, optional, tag = "4")]
    pub schedule_time: Option<Timestamp>,
    #[prost(message, optional, tag = "5")]
    pub create_time: Option<Timestamp>,
    #[prost(message, optional, tag = "6")]
    pub dispatch_deadline: Option<Duration>,
    #[prost(int32, tag = "7")]
    pub dispatch_count: i32,
    #[prost(int32, tag = "8")]
    pub response_count: i32,
    #[prost(message, optional, tag = "9")]
    pub first_attempt: Option<Attempt>,
    #[prost(message, optional, tag = "10")]
    pub last_attempt: Option<Attempt>,
    /// `Task.View`: 1 BASIC, 2 FULL.
    #[prost(int32, tag = "11")]
    pub view: i32,
    #[prost(message, optional, tag = "12")]
    pub retry_config: Option<RetryConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Attempt {
    #[prost(message, optional, tag = "1")]
    pub schedule_time: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    pub dispatch_time: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    pub response_time: Option<Timestamp>,
    #[prost(message, optional, tag = "4")]
    pub response_status: Option<RpcStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CmekConfig {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub kms_key: String,
}

// ---- google.cloud.tasks.v2: requests and responses ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListQueuesRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(string, tag = "2")]
    pub filter: String,
    #[prost(int32, tag = "3")]
    pub page_size: i32,
    #[prost(string, tag = "4")]
    pub page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListQueuesResponse {
    #[prost(message, repeated, tag = "1")]
    pub queues: Vec<Queue>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}

/// `GetQueueRequest`, `DeleteQueueRequest`, `PurgeQueueRequest`, `PauseQueueRequest`,
/// `ResumeQueueRequest`, `DeleteTaskRequest`, `GetCmekConfigRequest`, `GetOperationRequest`
/// and `GetLocationRequest` are all one string field `name = 1`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateQueueRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub queue: Option<Queue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateQueueRequest {
    #[prost(message, optional, tag = "1")]
    pub queue: Option<Queue>,
    #[prost(message, optional, tag = "2")]
    pub update_mask: Option<FieldMask>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListTasksRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(int32, tag = "2")]
    pub response_view: i32,
    #[prost(int32, tag = "3")]
    pub page_size: i32,
    #[prost(string, tag = "4")]
    pub page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListTasksResponse {
    #[prost(message, repeated, tag = "1")]
    pub tasks: Vec<Task>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}

/// `GetTaskRequest` and `RunTaskRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameViewRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub response_view: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateTaskRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub task: Option<Task>,
    #[prost(int32, tag = "3")]
    pub response_view: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchCreateTasksRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, repeated, tag = "2")]
    pub requests: Vec<CreateTaskRequest>,
    #[prost(string, tag = "3")]
    pub request_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchCreateTasksResponse {
    #[prost(message, repeated, tag = "1")]
    pub tasks: Vec<Task>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchDeleteTasksRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(string, repeated, tag = "2")]
    pub names: Vec<String>,
    #[prost(string, tag = "3")]
    pub request_id: String,
}

/// `BatchCreateTasksMetadata` and `BatchDeleteTasksMetadata` share their fields; only the
/// numbers of their `State` enums differ, which `convert.rs` handles.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchMetadata {
    #[prost(message, optional, tag = "1")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    pub end_time: Option<Timestamp>,
    #[prost(int32, tag = "3")]
    pub state: i32,
    #[prost(btree_map = "int32, message", tag = "4")]
    pub failed_requests: BTreeMap<i32, RpcStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateCmekConfigRequest {
    #[prost(message, optional, tag = "1")]
    pub cmek_config: Option<CmekConfig>,
    #[prost(message, optional, tag = "2")]
    pub update_mask: Option<FieldMask>,
}

// ---- google.rpc ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

// ---- google.rpc error details ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub domain: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelpLink {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub url: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Help {
    #[prost(message, repeated, tag = "1")]
    pub links: Vec<HelpLink>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldViolation {
    #[prost(string, tag = "1")]
    pub field: String,
    #[prost(string, tag = "2")]
    pub description: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    pub field_violations: Vec<FieldViolation>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LocalizedMessage {
    #[prost(string, tag = "1")]
    pub locale: String,
    #[prost(string, tag = "2")]
    pub message: String,
}

// ---- google.longrunning ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<Any>,
    #[prost(bool, tag = "3")]
    pub done: bool,
    #[prost(message, optional, tag = "4")]
    pub error: Option<RpcStatus>,
    #[prost(message, optional, tag = "5")]
    pub response: Option<Any>,
}

// ---- google.iam.v1 ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetIamPolicyRequest {
    #[prost(string, tag = "1")]
    pub resource: String,
    #[prost(message, optional, tag = "2")]
    pub options: Option<GetPolicyOptions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPolicyOptions {
    #[prost(int32, tag = "1")]
    pub requested_policy_version: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetIamPolicyRequest {
    #[prost(string, tag = "1")]
    pub resource: String,
    #[prost(message, optional, tag = "2")]
    pub policy: Option<Policy>,
    #[prost(message, optional, tag = "3")]
    pub update_mask: Option<FieldMask>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TestIamPermissionsRequest {
    #[prost(string, tag = "1")]
    pub resource: String,
    #[prost(string, repeated, tag = "2")]
    pub permissions: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TestIamPermissionsResponse {
    #[prost(string, repeated, tag = "1")]
    pub permissions: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Policy {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, repeated, tag = "4")]
    pub bindings: Vec<Binding>,
    #[prost(message, repeated, tag = "6")]
    pub audit_configs: Vec<AuditConfig>,
    #[prost(bytes = "vec", tag = "3")]
    pub etag: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Binding {
    #[prost(string, tag = "1")]
    pub role: String,
    #[prost(string, repeated, tag = "2")]
    pub members: Vec<String>,
    #[prost(message, optional, tag = "3")]
    pub condition: Option<Expr>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditConfig {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(message, repeated, tag = "3")]
    pub audit_log_configs: Vec<AuditLogConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditLogConfig {
    #[prost(int32, tag = "1")]
    pub log_type: i32,
    #[prost(string, repeated, tag = "2")]
    pub exempted_members: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Expr {
    #[prost(string, tag = "1")]
    pub expression: String,
    #[prost(string, tag = "2")]
    pub title: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub location: String,
}

// ---- google.cloud.location ----

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub location_id: String,
    #[prost(string, tag = "5")]
    pub display_name: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListLocationsRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub filter: String,
    #[prost(int32, tag = "3")]
    pub page_size: i32,
    #[prost(string, tag = "4")]
    pub page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListLocationsResponse {
    #[prost(message, repeated, tag = "1")]
    pub locations: Vec<Location>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}
