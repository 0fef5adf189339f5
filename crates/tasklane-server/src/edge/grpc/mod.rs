//! The Cloud Tasks v2 API over gRPC, on the same port as REST: requests whose content type
//! is `application/grpc…` come here (HTTP/2 cleartext). Each method decodes its message,
//! converts it to core types, calls the same `CloudTasks` operation REST calls, and encodes
//! the result. No generated code: one `unary` adapter over tonic's server codec serves every method.

pub mod convert;
mod front;
pub use crate::service::proto::messages;

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{Request, Response};
use tasklane_core::Status;

use crate::access::Principal;
use crate::operations::BatchCreateItem;
use crate::service::CloudTasks;
use messages as m;

type GrpcResult<T> = Result<T, Status>;

/// Whether a request is gRPC, by its content type.
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

pub fn to_tonic(s: Status) -> tonic::Status {
    let code = tonic::Code::from_i32(s.code as i32);
    if s.details.is_empty() {
        return tonic::Status::new(code, s.message);
    }
    // Details travel as a whole `google.rpc.Status` in `grpc-status-details-bin`.
    let full = convert::rpc_status(&s);
    tonic::Status::with_details(code, s.message, prost::Message::encode_to_vec(&full).into())
}

/// One call of one method: a `tonic::server::UnaryService` over a closure.
struct Call<F>(Option<F>);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<Req, Resp, F, Fut> tonic::server::UnaryService<Req> for Call<F>
where
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = GrpcResult<Resp>> + Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type Future = BoxFuture<Result<tonic::Response<Resp>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        match self.0.take() {
            Some(f) => {
                let fut = f(request.into_inner());
                Box::pin(async move { fut.await.map(tonic::Response::new).map_err(to_tonic) })
            }
            None => Box::pin(async { Err(tonic::Status::internal("a unary call was made twice")) }),
        }
    }
}

async fn unary<Req, Resp, F, Fut>(req: Request<Body>, f: F) -> Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: Future<Output = GrpcResult<Resp>> + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
    grpc.unary(Call(Some(f)), req).await.map(Body::new)
}

fn unimplemented(path: &str) -> Response<Body> {
    // The Operations methods Cloud Tasks does not serve get the refusal Google's front end gives.
    let status = if path.starts_with("/google.longrunning.Operations/") {
        tonic::Status::permission_denied(
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key \
             or other form of API consumer identity to call this API.",
        )
    } else {
        tonic::Status::unimplemented(format!("Method not found: {}", path.trim_start_matches('/')))
    };
    status.into_http::<Body>()
}

/// Serve one gRPC request. The guard has checked the caller's scope for the method; each
/// method checks the resource its message names against the caller's limits.
pub async fn serve(s: CloudTasks, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let who = req.extensions().get::<Principal>().cloned().unwrap_or(Principal::Open);
    match path.as_str() {
        "/google.longrunning.Operations/GetOperation" => {
            let who = front::Front {
                method: "google.longrunning.Operations.GetOperation".into(),
                shape: front::Shape::Operation,
                permission: "cloudtasks.operations.get",
                who,
            };
            return unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                Ok(convert::operation(&s.get_operation(&r.name).await?))
            })
            .await;
        }
        "/google.cloud.location.Locations/GetLocation" => {
            return unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                Ok(convert::location(&s.get_location(&r.name).await?))
            })
            .await;
        }
        "/google.cloud.location.Locations/ListLocations" => {
            return unary(req, move |r: m::ListLocationsRequest| async move {
                who.within(&r.name)?;
                let locations = s.list_locations(&r.name).await?;
                Ok(m::ListLocationsResponse {
                    locations: locations.iter().map(convert::location).collect(),
                    next_page_token: String::new(),
                })
            })
            .await;
        }
        _ => {}
    }
    let Some(method) = path.strip_prefix("/google.cloud.tasks.v2.CloudTasks/") else {
        return unimplemented(&path);
    };
    let (shape, permission) = front::cloud_tasks(method);
    let who = front::Front { method: format!("google.cloud.tasks.v2.CloudTasks.{method}"), shape, permission, who };
    match method {
        "BatchCreateTasks" => {
            unary(req, move |r: m::BatchCreateTasksRequest| async move {
                who.within(&r.parent)?;
                let items = r
                    .requests
                    .into_iter()
                    .map(|c| BatchCreateItem {
                        parent: c.parent,
                        spec: convert::task_spec(c.task),
                        view: convert::view(c.response_view),
                    })
                    .collect();
                Ok(convert::operation(&s.batch_create_tasks(&r.parent, items, &r.request_id).await?))
            })
            .await
        }
        "BatchDeleteTasks" => {
            unary(req, move |r: m::BatchDeleteTasksRequest| async move {
                who.within(&r.parent)?;
                Ok(convert::operation(&s.batch_delete_tasks(&r.parent, r.names, &r.request_id).await?))
            })
            .await
        }
        "GetIamPolicy" => {
            unary(req, move |r: m::GetIamPolicyRequest| async move {
                who.within(&r.resource)?;
                s.get_iam_policy(&r.resource).await
            })
            .await
        }
        "SetIamPolicy" => {
            unary(req, move |r: m::SetIamPolicyRequest| async move {
                who.within(&r.resource)?;
                s.set_iam_policy(&r.resource, r.policy, r.update_mask.map(|m| m.paths)).await
            })
            .await
        }
        "TestIamPermissions" => {
            unary(req, move |r: m::TestIamPermissionsRequest| async move {
                who.within(&r.resource)?;
                let permissions = s.test_iam_permissions(&r.resource, r.permissions).await?;
                Ok(m::TestIamPermissionsResponse { permissions })
            })
            .await
        }
        "GetCmekConfig" => {
            unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                s.get_cmek_config(&r.name).await
            })
            .await
        }
        "UpdateCmekConfig" => {
            unary(req, move |r: m::UpdateCmekConfigRequest| async move {
                who.within(r.cmek_config.as_ref().map_or("", |c| c.name.as_str()))?;
                s.update_cmek_config(r.cmek_config, r.update_mask.map(|m| m.paths)).await
            })
            .await
        }
        "ListQueues" => {
            unary(req, move |r: m::ListQueuesRequest| async move {
                who.within(&r.parent)?;
                let (queues, next) = s.list_queues(&r.parent, &r.filter, r.page_size, &r.page_token).await?;
                Ok(m::ListQueuesResponse { queues: queues.iter().map(convert::queue).collect(), next_page_token: next })
            })
            .await
        }
        "GetQueue" => {
            unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                Ok(convert::queue(&s.get_queue(&r.name).await?))
            })
            .await
        }
        "CreateQueue" => {
            unary(req, move |r: m::CreateQueueRequest| async move {
                who.within(&r.parent)?;
                let (name, spec) = convert::queue_spec(&r.queue.unwrap_or_default())?;
                Ok(convert::queue(&s.create_queue(&r.parent, &name, spec).await?))
            })
            .await
        }
        "UpdateQueue" => {
            unary(req, move |r: m::UpdateQueueRequest| async move {
                who.within(r.queue.as_ref().map_or("", |q| q.name.as_str()))?;
                let (name, spec) = convert::queue_spec(&r.queue.unwrap_or_default())?;
                let mask = r.update_mask.map(|m| m.paths);
                Ok(convert::queue(&s.update_queue(&name, spec, mask).await?))
            })
            .await
        }
        "DeleteQueue" => {
            unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                s.delete_queue(&r.name).await?;
                Ok(())
            })
            .await
        }
        "PurgeQueue" => {
            unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                Ok(convert::queue(&s.purge_queue(&r.name).await?))
            })
            .await
        }
        "PauseQueue" => {
            unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                Ok(convert::queue(&s.pause_queue(&r.name).await?))
            })
            .await
        }
        "ResumeQueue" => {
            unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                Ok(convert::queue(&s.resume_queue(&r.name).await?))
            })
            .await
        }
        "ListTasks" => {
            unary(req, move |r: m::ListTasksRequest| async move {
                who.within(&r.parent)?;
                let view = convert::view(r.response_view);
                let (tasks, next) = s.list_tasks(&r.parent, r.page_size, &r.page_token, view).await?;
                Ok(m::ListTasksResponse {
                    tasks: tasks.iter().map(|t| convert::task(t, view)).collect(),
                    next_page_token: next,
                })
            })
            .await
        }
        "GetTask" => {
            unary(req, move |r: m::NameViewRequest| async move {
                who.within(&r.name)?;
                let view = convert::view(r.response_view);
                Ok(convert::unknown_view(convert::task(&s.get_task(&r.name, view).await?, view), r.response_view))
            })
            .await
        }
        "CreateTask" => {
            unary(req, move |r: m::CreateTaskRequest| async move {
                who.within(&r.parent)?;
                let view = convert::view(r.response_view);
                let spec = convert::task_spec(r.task)?;
                let task = convert::task(&s.create_task(&r.parent, spec, view).await?, view);
                Ok(convert::unknown_view(task, r.response_view))
            })
            .await
        }
        "DeleteTask" => {
            unary(req, move |r: m::NameRequest| async move {
                who.within(&r.name)?;
                s.delete_task(&r.name).await?;
                Ok(())
            })
            .await
        }
        "RunTask" => {
            unary(req, move |r: m::NameViewRequest| async move {
                who.within(&r.name)?;
                let view = convert::view(r.response_view);
                Ok(convert::task(&s.run_task(&r.name, view).await?, view))
            })
            .await
        }
        _ => unimplemented(&path),
    }
}
