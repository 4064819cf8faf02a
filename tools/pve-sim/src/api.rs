//! HTTPS front end: routing under `/api2/json`, authentication, parameter
//! collection and verification, the `{"data": ...}` envelope, and the `/sim/*` admin API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::faults;
use crate::schema::{parse_boolean, verify_params, Params, RawParams, RawValue};
use crate::sim::{ApiError, ApiResult, Caller, Sim, TaskFilter};

const API_PREFIX: &str = "/api2/json";
const MAX_BODY: usize = 1 << 20;

/// Credentials pve-sim accepts: API tokens from the command line, user
/// passwords for `POST /access/ticket`, and the tickets handed out since start.
pub(crate) struct Auth {
    tokens: HashMap<String, String>,
    users: HashMap<String, String>,
    tickets: Mutex<HashMap<String, (String, String)>>,
}

impl Auth {
    pub(crate) fn new(tokens: HashMap<String, String>, users: HashMap<String, String>) -> Self {
        Self { tokens, users, tickets: Mutex::new(HashMap::new()) }
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        self.tickets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn issue_ticket(&self, userid: &str) -> (String, String) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let b64 = base64::engine::general_purpose::STANDARD;
        let ticket = format!("PVE:{userid}:{now:08X}::{}", b64.encode(rand::random::<[u8; 48]>()));
        let csrf = format!(
            "{now:08X}:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(rand::random::<[u8; 24]>())
        );
        self.tickets().insert(ticket.clone(), (userid.to_string(), csrf.clone()));
        (ticket, csrf)
    }

    /// Resolves the caller of a request, as pve-http-server's `auth_handler` does.
    fn authenticate(&self, req: &Request<Incoming>, method: &Method) -> ApiResult<Caller> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(value) = header("authorization") {
            let token = value
                .strip_prefix("PVEAPIToken=")
                .or_else(|| value.strip_prefix("PVEAPIToken "))
                .ok_or_else(|| ApiError::new(401, "invalid authorization header"))?;
            let (tokenid, secret) = token.split_once('=').ok_or_else(|| ApiError::new(401, "invalid token value!"))?;
            return match self.tokens.get(tokenid) {
                Some(expected) if expected == secret => Ok(Caller { userid: tokenid.to_string() }),
                _ => Err(ApiError::new(401, "authentication failure")),
            };
        }
        let ticket = header("cookie").and_then(|cookies| {
            cookies.split(';').find_map(|c| c.trim().strip_prefix("PVEAuthCookie=").map(percent_decode))
        });
        let Some(ticket) = ticket else { return Err(ApiError::new(401, "No ticket")) };
        let (userid, csrf) = self
            .tickets()
            .get(&ticket)
            .cloned()
            .ok_or_else(|| ApiError::new(401, "permission denied - invalid PVE ticket"))?;
        if *method != Method::GET && header("csrfpreventiontoken") != Some(csrf.as_str()) {
            return Err(ApiError::new(401, "Permission denied - invalid csrf token"));
        }
        Ok(Caller { userid })
    }
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() && bytes[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit) {
            if let Ok(byte) = u8::from_str_radix(&input[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The endpoints pve-sim serves, by their schema path.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    template: &'static str,
    path_params: Vec<(&'static str, String)>,
}

/// Maps a path below `/api2/json` to its schema path and path parameters.
fn route(path: &str) -> Option<Route> {
    let segments: Vec<String> = path.trim_matches('/').split('/').map(percent_decode).collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let r = |template, params: &[(&'static str, &str)]| {
        Some(Route { template, path_params: params.iter().map(|(k, v)| (*k, v.to_string())).collect() })
    };
    match s.as_slice() {
        ["version"] => r("/version", &[]),
        ["nodes"] => r("/nodes", &[]),
        ["cluster", "resources"] => r("/cluster/resources", &[]),
        ["cluster", "nextid"] => r("/cluster/nextid", &[]),
        ["access", "ticket"] => r("/access/ticket", &[]),
        ["nodes", node, "storage", storage, "content"] => {
            r("/nodes/{node}/storage/{storage}/content", &[("node", node), ("storage", storage)])
        }
        ["nodes", node, "lxc"] => r("/nodes/{node}/lxc", &[("node", node)]),
        ["nodes", node, "lxc", vmid] => r("/nodes/{node}/lxc/{vmid}", &[("node", node), ("vmid", vmid)]),
        ["nodes", node, "lxc", vmid, "config"] => {
            r("/nodes/{node}/lxc/{vmid}/config", &[("node", node), ("vmid", vmid)])
        }
        ["nodes", node, "lxc", vmid, "pending"] => {
            r("/nodes/{node}/lxc/{vmid}/pending", &[("node", node), ("vmid", vmid)])
        }
        ["nodes", node, "lxc", vmid, "resize"] => {
            r("/nodes/{node}/lxc/{vmid}/resize", &[("node", node), ("vmid", vmid)])
        }
        ["nodes", node, "lxc", vmid, "interfaces"] => {
            r("/nodes/{node}/lxc/{vmid}/interfaces", &[("node", node), ("vmid", vmid)])
        }
        ["nodes", node, "lxc", vmid, "status", action] => {
            let template = match *action {
                "current" => "/nodes/{node}/lxc/{vmid}/status/current",
                "start" => "/nodes/{node}/lxc/{vmid}/status/start",
                "stop" => "/nodes/{node}/lxc/{vmid}/status/stop",
                "shutdown" => "/nodes/{node}/lxc/{vmid}/status/shutdown",
                "reboot" => "/nodes/{node}/lxc/{vmid}/status/reboot",
                _ => return None,
            };
            r(template, &[("node", node), ("vmid", vmid)])
        }
        ["nodes", node, "tasks"] => r("/nodes/{node}/tasks", &[("node", node)]),
        ["nodes", node, "tasks", upid] => r("/nodes/{node}/tasks/{upid}", &[("node", node), ("upid", upid)]),
        ["nodes", node, "tasks", upid, "status"] => {
            r("/nodes/{node}/tasks/{upid}/status", &[("node", node), ("upid", upid)])
        }
        ["nodes", node, "tasks", upid, "log"] => r("/nodes/{node}/tasks/{upid}/log", &[("node", node), ("upid", upid)]),
        _ => None,
    }
}

/// Form or JSON body values as the strings PVE verifies; a JSON array stays an
/// array, as `decode_json` leaves it.
fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<RawParams, String> {
    if body.is_empty() {
        return Ok(RawParams::new());
    }
    if content_type.is_some_and(|ct| ct.starts_with("application/json")) {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        let Value::Object(map) = value else { return Err("JSON body must be an object".into()) };
        return Ok(map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let value = match v {
                    Value::Array(items) => RawValue::Many(items.into_iter().map(json_text).collect()),
                    other => RawValue::One(json_text(other)),
                };
                (k, value)
            })
            .collect());
    }
    Ok(decode_urlencoded(body))
}

fn json_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A form body or query string as pve-http-server's `decode_urlencoded` reads
/// it: pairs split at `&` and `;`, the value ending at the pair's second `=`
/// (Perl's `split(/=/, $kv)` into key and value), and the values of a
/// repeated key collected into an array in their order. A key without `=`
/// reads as empty (Perl leaves it undefined) and an empty pair is skipped.
fn decode_urlencoded(data: &[u8]) -> RawParams {
    let text = String::from_utf8_lossy(data);
    let mut params = RawParams::new();
    for pair in text.split(['&', ';']).filter(|pair| !pair.is_empty()) {
        let mut fields = pair.split('=');
        let key = form_decode(fields.next().unwrap_or_default());
        let value = form_decode(fields.next().unwrap_or_default());
        add_value(&mut params, key, value);
    }
    params
}

fn form_decode(text: &str) -> String {
    percent_decode(&text.replace('+', " "))
}

fn add_value(params: &mut RawParams, key: String, value: String) {
    let merged = match params.remove(&key) {
        None => RawValue::One(value),
        Some(RawValue::One(first)) => RawValue::Many(vec![first, value]),
        Some(RawValue::Many(mut values)) => {
            values.push(value);
            RawValue::Many(values)
        }
    };
    params.insert(key, merged);
}

fn reason_phrase(message: &str) -> Option<hyper::ext::ReasonPhrase> {
    let clean: String = message
        .trim()
        .chars()
        .map(|c| if c == '\n' || c == '\r' || c == '\t' { ' ' } else { c })
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .collect();
    hyper::ext::ReasonPhrase::try_from(clean).ok()
}

fn respond(status: StatusCode, body: Value, reason: Option<&str>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"));
    response.headers_mut().insert(hyper::header::SERVER, hyper::header::HeaderValue::from_static("pve-api-daemon/3.0"));
    if let Some(phrase) = reason.and_then(reason_phrase) {
        response.extensions_mut().insert(phrase);
    }
    response
}

fn error_response(error: ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({"data": null, "message": format!("{}\n", error.message)});
    if let (Some(obj), Some(errors)) = (body.as_object_mut(), error.errors) {
        obj.insert("errors".into(), json!(errors));
    }
    respond(status, body, Some(&error.message))
}

fn ok(data: Value) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, json!({"data": data}), None)
}

/// Answers one request. An error closes the connection without an answer,
/// which only the drop-response fault asks for.
pub(crate) async fn handle(
    sim: Arc<Sim>,
    auth: Arc<Auth>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let api_path = path.strip_prefix(API_PREFIX);
    if let Some(rel) = api_path {
        sim.requests.record(method.as_str(), is_login(&method, rel));
    }
    let dropped = api_path.is_some_and(|rel| sim.faults().take_drop(method.as_str(), rel));
    let response = match dispatch(&sim, &auth, req).await {
        Ok(response) => response,
        Err(error) => error_response(error),
    };
    tracing::debug!(%method, %path, status = response.status().as_u16(), dropped, "request");
    if dropped {
        return Err(std::io::Error::other(format!("answer to {method} {path} dropped by fault")));
    }
    Ok(response)
}

/// The ticket login, which `writes` of `GET /sim/state` leaves out.
fn is_login(method: &Method, rel: &str) -> bool {
    *method == Method::POST && route(rel).is_some_and(|r| r.template == "/access/ticket")
}

/// The parameters of a request, as pve-http-server's `extract_params` takes
/// them: the body only of a POST or PUT, and a query key replacing the body's.
async fn read_params(req: Request<Incoming>) -> ApiResult<RawParams> {
    let query = req.uri().query().map(|q| decode_urlencoded(q.as_bytes())).unwrap_or_default();
    let mut params = RawParams::new();
    if matches!(*req.method(), Method::POST | Method::PUT) {
        let content_type =
            req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ApiError::new(400, format!("unable to read request body: {e}")))?
            .to_bytes();
        params = parse_body(content_type.as_deref(), &body).map_err(|e| ApiError::new(400, e))?;
    }
    params.extend(query);
    Ok(params)
}

async fn dispatch(sim: &Arc<Sim>, auth: &Auth, req: Request<Incoming>) -> ApiResult<Response<Full<Bytes>>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if let Some(admin) = path.strip_prefix("/sim/") {
        auth.authenticate(&req, &method)?;
        let admin = admin.to_string();
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ApiError::new(400, format!("unable to read request body: {e}")))?
            .to_bytes();
        return admin_api(sim, &method, &admin, &body).map(ok);
    }
    let not_implemented = || {
        ApiError::new(
            501,
            format!("Method '{method} {}' not implemented", path.strip_prefix(API_PREFIX).unwrap_or(&path)),
        )
    };
    let rel = path.strip_prefix(API_PREFIX).ok_or_else(not_implemented)?.to_string();
    let route = route(&rel).ok_or_else(not_implemented)?;
    let schema = sim.schema.parameters(route.template, method.as_str()).ok_or_else(not_implemented)?.clone();

    let caller = if route.template == "/access/ticket" { None } else { Some(auth.authenticate(&req, &method)?) };

    let latency = sim.faults().latency(method.as_str(), &rel);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some((status, message)) = sim.faults().take_failure(method.as_str(), &rel) {
        return Err(ApiError::new(status, message));
    }

    let mut raw = read_params(req).await?;
    for (name, value) in &route.path_params {
        raw.insert(name.to_string(), RawValue::One(value.clone()));
    }
    let params = verify_params(&schema, raw).map_err(ApiError::params)?;
    if let Some(node) = params.get("node") {
        if *node != sim.cfg.node {
            return Err(ApiError::new(
                595,
                format!("hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"),
            ));
        }
    }

    let Some(caller) = caller else { return login(auth, &params).map(ok) };
    let vmid =
        || params.get("vmid").and_then(|v| v.parse::<u32>().ok()).ok_or_else(|| ApiError::param("vmid", "invalid"));
    let upid = || params.get("upid").cloned().unwrap_or_default();
    let flag = |name: &str| params.get(name).and_then(|v| parse_boolean(v)).unwrap_or(false);
    let number = |name: &str, default: usize| params.get(name).and_then(|v| v.parse().ok()).unwrap_or(default);

    let data = match (route.template, method.as_str()) {
        ("/version", "GET") => sim.version(),
        ("/nodes", "GET") => sim.nodes(),
        ("/cluster/resources", "GET") => sim.resources(params.get("type").map(String::as_str)),
        ("/cluster/nextid", "GET") => sim.next_id(params.get("vmid").and_then(|v| v.parse().ok()))?,
        ("/nodes/{node}/storage/{storage}/content", "GET") => sim.storage_content(
            params.get("storage").map_or("", String::as_str),
            params.get("content").map(String::as_str),
            params.get("vmid").and_then(|v| v.parse().ok()),
        )?,
        ("/nodes/{node}/lxc", "GET") => sim.list(),
        ("/nodes/{node}/lxc", "POST") => json!(sim.create(params.clone(), &caller)?),
        ("/nodes/{node}/lxc/{vmid}", "GET") => {
            sim.config_get(vmid()?, true)?;
            json!(["config", "pending", "status", "interfaces", "resize", "snapshot", "firewall", "rrd", "rrddata"]
                .iter()
                .map(|s| json!({"subdir": s}))
                .collect::<Vec<_>>())
        }
        ("/nodes/{node}/lxc/{vmid}", "DELETE") => json!(sim.destroy(vmid()?, &params, &caller)?),
        ("/nodes/{node}/lxc/{vmid}/config", "GET") => {
            let current = params.get("current").and_then(|c| parse_boolean(c)) == Some(true);
            sim.config_get(vmid()?, current)?
        }
        ("/nodes/{node}/lxc/{vmid}/pending", "GET") => sim.pending_get(vmid()?)?,
        ("/nodes/{node}/lxc/{vmid}/resize", "PUT") => json!(sim.resize(vmid()?, &params, &caller)?),
        ("/nodes/{node}/lxc/{vmid}/config", "PUT") => {
            sim.config_put(vmid()?, params.clone()).await?;
            Value::Null
        }
        ("/nodes/{node}/lxc/{vmid}/status/current", "GET") => sim.status_current(vmid()?)?,
        ("/nodes/{node}/lxc/{vmid}/interfaces", "GET") => sim.interfaces(vmid()?)?,
        (template, "POST") if template.starts_with("/nodes/{node}/lxc/{vmid}/status/") => {
            let action = template.rsplit('/').next().unwrap_or_default();
            json!(sim.power(vmid()?, action, &params, &caller)?)
        }
        ("/nodes/{node}/tasks", "GET") => {
            let filter = TaskFilter {
                vmid: params.get("vmid").cloned(),
                typefilter: params.get("typefilter").cloned(),
                userfilter: params.get("userfilter").cloned(),
                source: params.get("source").cloned().unwrap_or_else(|| "archive".into()),
                errors_only: flag("errors"),
                statusfilter: params
                    .get("statusfilter")
                    .map(|s| s.split([',', ';', ' ']).filter(|x| !x.is_empty()).map(String::from).collect())
                    .unwrap_or_default(),
                since: params.get("since").and_then(|v| v.parse().ok()),
                until: params.get("until").and_then(|v| v.parse().ok()),
                start: number("start", 0),
                limit: number("limit", 50),
            };
            let (data, total) = sim.task_list(&filter);
            return Ok(respond(StatusCode::OK, json!({"data": data, "total": total}), None));
        }
        ("/nodes/{node}/tasks/{upid}", "GET") => {
            sim.task_status(&upid())?;
            json!([{"name": "log"}, {"name": "status"}])
        }
        ("/nodes/{node}/tasks/{upid}", "DELETE") => {
            sim.task_stop(&upid())?;
            Value::Null
        }
        ("/nodes/{node}/tasks/{upid}/status", "GET") => sim.task_status(&upid())?,
        ("/nodes/{node}/tasks/{upid}/log", "GET") => {
            let limit = match number("limit", 50) {
                0 => 50,
                n => n,
            };
            let (data, total) = sim.task_log(&upid(), number("start", 0), limit)?;
            return Ok(respond(StatusCode::OK, json!({"data": data, "total": total}), None));
        }
        _ => return Err(not_implemented()),
    };
    Ok(ok(data))
}

fn login(auth: &Auth, params: &Params) -> ApiResult<Value> {
    let mut username = params.get("username").cloned().unwrap_or_default();
    if !username.contains('@') {
        let realm = params.get("realm").cloned().unwrap_or_else(|| "pam".into());
        username = format!("{username}@{realm}");
    }
    let password = params.get("password").cloned().unwrap_or_default();
    let renewing = auth.tickets().get(&password).is_some_and(|(user, _)| *user == username);
    let valid = renewing || auth.users.get(&username).is_some_and(|expected| *expected == password);
    if !valid {
        return Err(ApiError::new(401, "authentication failure"));
    }
    let (ticket, csrf) = auth.issue_ticket(&username);
    Ok(json!({
        "username": username, "ticket": ticket, "CSRFPreventionToken": csrf, "clustername": null,
        "cap": {"vms": {"VM.Allocate": 1, "VM.PowerMgmt": 1, "VM.Config.Options": 1, "VM.Audit": 1}},
    }))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(400, format!("invalid request body: {e}")))
}

fn admin_api(sim: &Arc<Sim>, method: &Method, path: &str, body: &[u8]) -> ApiResult<Value> {
    let bad = |e: String| ApiError::new(400, e);
    match (method.as_str(), path) {
        ("GET", "state") => Ok(sim.admin_state()),
        ("POST", "latency") => {
            let rule = parse_json::<faults::LatencyRequest>(body)?.into_rule().map_err(bad)?;
            sim.faults().latencies.push(rule);
            Ok(Value::Null)
        }
        ("POST", "fail") => {
            let rule = parse_json::<faults::FailRequest>(body)?.into_rule().map_err(bad)?;
            sim.faults().failures.push(rule);
            Ok(Value::Null)
        }
        ("POST", "drop-response") => {
            let rule = parse_json::<faults::DropRequest>(body)?.into_rule().map_err(bad)?;
            sim.faults().drops.push(rule);
            Ok(Value::Null)
        }
        ("POST", "task-fault") => {
            let rule = parse_json::<faults::TaskFaultRequest>(body)?.into_rule().map_err(bad)?;
            sim.faults().task_rules.push(rule);
            Ok(Value::Null)
        }
        ("POST", "task-duration") => {
            let request: faults::TaskDurationRequest = parse_json(body)?;
            let duration = Duration::from_millis(request.ms);
            let mut faults = sim.faults();
            match request.task_type {
                Some(task_type) => {
                    faults.durations.insert(task_type, duration);
                }
                None => {
                    faults.durations.clear();
                    faults.default_duration = duration;
                }
            }
            Ok(Value::Null)
        }
        ("POST", "hold-lock") => {
            let request: faults::HoldLockRequest = parse_json(body)?;
            sim.hold_lock(request.vmid, Duration::from_millis(request.ms))?;
            Ok(Value::Null)
        }
        ("POST", "ssh-fault") => {
            let fault = parse_json::<faults::SshFaultRequest>(body)?.into_fault().map_err(bad)?;
            if fault.is_some() && sim.cfg.api_only_guests {
                return Err(bad("no guest runs sshd with --api-only-guests".into()));
            }
            sim.faults().ssh = fault;
            Ok(Value::Null)
        }
        ("POST", "reset") => {
            sim.faults().reset();
            Ok(Value::Null)
        }
        _ => Err(ApiError::new(501, format!("Method '{method} /sim/{path}' not implemented"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let upid = "UPID:pve1:00001234:00ABCDEF:67400000:vzcreate:100:root@pam!ci:";
        let cases: Vec<(String, Option<&str>)> = vec![
            ("/version".into(), Some("/version")),
            ("/nodes/pve1/lxc".into(), Some("/nodes/{node}/lxc")),
            ("/nodes/pve1/lxc/100/status/start".into(), Some("/nodes/{node}/lxc/{vmid}/status/start")),
            ("/nodes/pve1/lxc/100/status/suspend".into(), None),
            ("/nodes/pve1/storage/local/content".into(), Some("/nodes/{node}/storage/{storage}/content")),
            (format!("/nodes/pve1/tasks/{upid}/log"), Some("/nodes/{node}/tasks/{upid}/log")),
            ("/nodes/pve1/tasks/UPID%3Apve1%3A00001234%3A/status".into(), Some("/nodes/{node}/tasks/{upid}/status")),
            ("/nodes/pve1/qemu".into(), None),
            ("/".into(), None),
        ];
        for (path, template) in cases {
            assert_eq!(route(&path).map(|r| r.template), template, "{path}");
        }
        let encoded = route("/nodes/pve1/tasks/UPID%3Apve1%3Aroot%40pam%21ci%3A/status").expect("routes");
        assert_eq!(encoded.path_params[1], ("upid", "UPID:pve1:root@pam!ci:".to_string()));
    }

    fn one(value: &str) -> Option<RawValue> {
        Some(RawValue::One(value.into()))
    }

    fn many(values: &[&str]) -> Option<RawValue> {
        Some(RawValue::Many(values.iter().map(|v| v.to_string()).collect()))
    }

    #[test]
    fn bodies() {
        let form = parse_body(
            Some("application/x-www-form-urlencoded"),
            b"vmid=100&hostname=web-1&net0=name%3Deth0%2Cip%3Ddhcp",
        )
        .expect("form");
        assert_eq!(form.get("net0").cloned(), one("name=eth0,ip=dhcp"));
        let json = parse_body(
            Some("application/json"),
            br#"{"vmid":100,"unprivileged":true,"hostname":"a","x":null,"tags":["a",1]}"#,
        )
        .expect("json");
        assert_eq!(json.get("vmid").cloned(), one("100"));
        assert_eq!(json.get("unprivileged").cloned(), one("1"));
        assert_eq!(json.get("tags").cloned(), many(&["a", "1"]));
        assert!(!json.contains_key("x"));
        assert!(parse_body(Some("application/json"), b"[1]").is_err());
        assert!(parse_body(None, b"").expect("empty").is_empty());
    }

    #[test]
    fn repeated_form_keys_become_arrays() {
        let form = decode_urlencoded(b"tags=a&vmid=100&tags=B&tags=a");
        assert_eq!(form.get("tags").cloned(), many(&["a", "B", "a"]));
        assert_eq!(form.get("vmid").cloned(), one("100"));
        let two = decode_urlencoded(b"hostname=a&hostname=b");
        assert_eq!(two.get("hostname").cloned(), many(&["a", "b"]));
    }

    #[test]
    fn urlencoded_data_is_split_like_decode_urlencoded() {
        let form = decode_urlencoded(b"a=1;b=x+y%21&&c=&d&e=f=g&h=%3D%3B%26");
        assert_eq!(form.get("a").cloned(), one("1"));
        assert_eq!(form.get("b").cloned(), one("x y!"));
        assert_eq!(form.get("c").cloned(), one(""));
        assert_eq!(form.get("d").cloned(), one(""));
        assert_eq!(form.get("e").cloned(), one("f"), "the value ends at a second '='");
        assert_eq!(form.get("h").cloned(), one("=;&"));
        assert_eq!(form.len(), 6);
        assert_eq!(decode_urlencoded("name=caf%C3%A9".as_bytes()).get("name").cloned(), one("café"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab%21"), "a:b!");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn reason_phrases_are_single_line() {
        assert!(reason_phrase("CT 100 already running\n").is_some());
        assert!(reason_phrase("invalid format - format error\nname: missing").is_some());
    }
}
