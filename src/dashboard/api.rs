//! The routes: the Container list, each Container's event stream, the page
//! and the health endpoints; and how errors answer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{KeepAlive, KeepAliveStream, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::stream::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::args::DashboardArgs;
use super::auth::{Access, Authorizer};
use super::events::{self, SseStream};
use super::hub::{Hub, StreamId};
use super::limits::StreamLimits;
use super::{page, status};
use crate::crd::Container;
use crate::progress;
use crate::shutdown::Shutdown;
use crate::watch::status::status_view;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    client: kube::Client,
    auth: Authorizer,
    hub: Option<Arc<Hub>>,
    limits: Arc<StreamLimits>,
    heartbeat: Duration,
    stream_max_age: Duration,
    shutdown: Shutdown,
}

impl AppState {
    pub fn new(client: kube::Client, hub: Option<Arc<Hub>>, args: &DashboardArgs, shutdown: Shutdown) -> Self {
        Self(Arc::new(Inner {
            auth: Authorizer::new(args.auth, client.clone(), args.auth_cache_ttl),
            client,
            hub,
            limits: StreamLimits::new(args.max_streams, args.max_streams_per_user),
            heartbeat: args.heartbeat,
            stream_max_age: args.stream_max_age,
            shutdown,
        }))
    }

    pub fn has_redis(&self) -> bool {
        self.0.hub.is_some()
    }
}

/// The dashboard's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/containers", get(list_containers))
        .route("/api/v1/namespaces/{namespace}/containers/{name}/events", get(container_events))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
        .merge(page::routes())
        .with_state(state)
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    TooManyStreams(String),
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid Kubernetes bearer token is required (Authorization: Bearer <token>)".to_owned(),
            ),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::TooManyStreams(message) => (StatusCode::TOO_MANY_REQUESTS, message),
            ApiError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A failed read of the dashboard's own: logged, and 503 for the caller;
/// 403 when the dashboard itself may not read there (its Role covers one
/// namespace), which no caller's access changes.
fn kube_failed(what: &str, error: &kube::Error) -> ApiError {
    tracing::error!(%error, "{what} failed");
    match error {
        kube::Error::Api(status) if status.is_forbidden() => {
            ApiError::Forbidden(format!("{what} failed: the dashboard may not read Containers there"))
        }
        _ => ApiError::Unavailable(format!("{what} failed")),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

/// One row of the Container list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    namespace: String,
    name: String,
    uid: String,
    phase: &'static str,
    progress: Option<i32>,
    vmid: Option<i32>,
    node: Option<String>,
    ip_address: Option<String>,
    message: Option<String>,
    conditions: Vec<ConditionSummary>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConditionSummary {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: String,
    message: String,
    last_transition_time: String,
}

fn summary(ct: &Container) -> ContainerSummary {
    let status = ct.status.clone().unwrap_or_default();
    ContainerSummary {
        namespace: ct.metadata.namespace.clone().unwrap_or_default(),
        name: ct.metadata.name.clone().unwrap_or_default(),
        uid: ct.metadata.uid.clone().unwrap_or_default(),
        phase: status_view(ct).phase.as_str(),
        progress: status.progress,
        vmid: status.vmid,
        node: status.node,
        ip_address: status.ip_address,
        message: status.message,
        conditions: status.conditions.iter().map(condition_summary).collect(),
    }
}

fn condition_summary(condition: &Condition) -> ConditionSummary {
    ConditionSummary {
        type_: condition.type_.clone(),
        status: condition.status.clone(),
        reason: condition.reason.clone(),
        message: condition.message.clone(),
        last_transition_time: condition.last_transition_time.0.to_string(),
    }
}

/// `GET /api/v1/containers?namespace=NS`: the Containers of a namespace
/// (of every namespace without one), for a caller who may list them there.
async fn list_containers(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let namespace = query.namespace.unwrap_or_default();
    let identity = state.0.auth.authenticate(&headers).await?;
    state.0.auth.authorize(&identity, &Access { verb: "list", namespace: &namespace, name: None }).await?;
    let api: Api<Container> = if namespace.is_empty() {
        Api::all(state.0.client.clone())
    } else {
        Api::namespaced(state.0.client.clone(), &namespace)
    };
    let list = api.list(&Default::default()).await.map_err(|error| kube_failed("listing Containers", &error))?;
    let mut items: Vec<ContainerSummary> = list.items.iter().map(summary).collect();
    items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(Json(serde_json::json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    last_event_id: Option<String>,
}

/// `GET /api/v1/namespaces/{ns}/containers/{name}/events`: the SSE stream.
/// Access is checked before existence, so a caller without access learns
/// nothing of the namespace, not even which Containers exist.
async fn container_events(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<KeepAliveStream<SseStream>>, ApiError> {
    let identity = state.0.auth.authenticate(&headers).await?;
    state.0.auth.authorize(&identity, &Access { verb: "get", namespace: &namespace, name: Some(&name) }).await?;
    let api: Api<Container> = Api::namespaced(state.0.client.clone(), &namespace);
    let found = api.get_opt(&name).await.map_err(|error| kube_failed("reading the Container", &error))?;
    if found.is_none() {
        return Err(ApiError::NotFound(format!("Container {namespace}/{name} does not exist")));
    }
    let after = events::resume_position(&headers, query.last_event_id.as_deref()).map(str::to_owned);
    let permit = state.0.limits.acquire(&identity.user).map_err(|limit| ApiError::TooManyStreams(limit.to_string()))?;
    tracing::debug!(user = %identity.user, %namespace, %name, open = state.0.limits.open(), "event stream opened");
    let stream = match &state.0.hub {
        Some(hub) => {
            let after = after
                .map(|id| {
                    StreamId::parse(&id).ok_or_else(|| ApiError::BadRequest(format!("{id:?} is not an event id")))
                })
                .transpose()?;
            events::redis_stream(hub.clone(), progress::events_stream(&namespace, &name), after, permit)
        }
        None => status::status_stream(api, &name, after, permit),
    };
    Ok(sse(stream, &state))
}

/// The stream with its reconnect hint first, heartbeats while idle, and an
/// end at the maximum age or at shutdown (which waits for open streams).
fn sse(stream: SseStream, state: &AppState) -> Sse<KeepAliveStream<SseStream>> {
    let shutdown = state.0.shutdown.wait();
    let aged = tokio::time::sleep(state.0.stream_max_age);
    let ends = async move {
        tokio::select! {
            () = shutdown => {}
            () = aged => {}
        }
    };
    let stream = futures::stream::once(async { Ok(events::reconnect_hint()) }).chain(stream).take_until(ends).boxed();
    Sse::new(stream).keep_alive(KeepAlive::new().interval(state.0.heartbeat).text("heartbeat"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ContainerStatus, Phase};

    #[test]
    fn a_summary_holds_what_the_table_shows() {
        let spec = serde_json::from_value(serde_json::json!({"nodeRef": {"name": "pve1"}})).expect("spec");
        let mut ct = Container::new("web-1", spec);
        ct.metadata.namespace = Some("team-a".into());
        ct.status = Some(ContainerStatus {
            phase: Some(Phase::Syncing),
            progress: Some(70),
            vmid: Some(120),
            node: Some("pve1".into()),
            ip_address: Some("127.0.10.2".into()),
            message: Some("Running 10-setup.sh".into()),
            ..Default::default()
        });
        let json = serde_json::to_value(summary(&ct)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "namespace": "team-a", "name": "web-1", "uid": "", "phase": "Syncing", "progress": 70,
                "vmid": 120, "node": "pve1", "ipAddress": "127.0.10.2", "message": "Running 10-setup.sh",
                "conditions": []
            })
        );
    }

    #[test]
    fn what_the_dashboard_may_not_read_is_forbidden_other_failures_unavailable() {
        let forbidden = kube::Error::Api(kube::core::Status::failure("no", "Forbidden").with_code(403).boxed());
        assert!(matches!(kube_failed("listing Containers", &forbidden), ApiError::Forbidden(_)));
        let broken = kube::Error::Api(kube::core::Status::failure("etcd", "InternalError").with_code(500).boxed());
        assert!(matches!(kube_failed("listing Containers", &broken), ApiError::Unavailable(_)));
    }

    #[test]
    fn errors_answer_with_their_status_and_a_json_message() {
        let cases = [
            (ApiError::Unauthorized, 401),
            (ApiError::Forbidden("no".into()), 403),
            (ApiError::NotFound("gone".into()), 404),
            (ApiError::BadRequest("bad".into()), 400),
            (ApiError::TooManyStreams("full".into()), 429),
            (ApiError::Unavailable("down".into()), 503),
        ];
        for (error, status) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers().contains_key(header::WWW_AUTHENTICATE), status == 401);
        }
    }
}
