use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use super::breaker::Breaker;
use super::error::Error;
use super::retry::{retry, Backoff};
use super::secret::ApiToken;
use super::tls::{client_config, TlsOptions};

/// One HTTP exchange with Proxmox, as reported to a [`RequestObserver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// Path template, e.g. `/nodes/{node}/lxc/{vmid}/status/current`; bounded, so it
    /// can be a metric label.
    pub endpoint: &'static str,
    /// HTTP status, or `None` when no answer arrived.
    pub status: Option<u16>,
    /// Time until the answer (or the failure).
    pub elapsed: Duration,
}

/// Gets told about every request the client makes, retries included; the metrics
/// module plugs in here.
pub trait RequestObserver: Send + Sync {
    /// Called once per HTTP exchange.
    fn observe(&self, record: &RequestRecord);
}

impl<F> RequestObserver for F
where
    F: Fn(&RequestRecord) + Send + Sync,
{
    fn observe(&self, record: &RequestRecord) {
        self(record)
    }
}

/// Everything needed to talk to one Proxmox VE API endpoint.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://pve1.example.com:8006`; `/api2/json` is appended.
    pub endpoint: String,
    /// The API token.
    pub token: ApiToken,
    /// Certificate verification.
    pub tls: TlsOptions,
    /// Time limit for connecting.
    pub connect_timeout: Duration,
    /// Time limit for one request, answer included.
    pub request_timeout: Duration,
    /// Retries inside the client: reads are retried on every transient error, writes
    /// only when Proxmox says a lock was busy (then nothing was applied).
    pub retry: Backoff,
    /// Told about every request.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Shared by the clients of one node: requests fail fast while the node
    /// does not answer.
    pub breaker: Option<Arc<Breaker>>,
}

impl ClientConfig {
    /// Settings with default timeouts and retries.
    pub fn new(endpoint: impl Into<String>, token: ApiToken, tls: TlsOptions) -> Self {
        Self {
            endpoint: endpoint.into(),
            token,
            tls,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retry: Backoff::default(),
            observer: None,
            breaker: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &shown(&self.endpoint))
            .field("token", &self.token)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("observer", &self.observer.as_ref().map(|_| "<observer>"))
            .field("breaker", &self.breaker.is_some())
            .finish()
    }
}

/// The Proxmox VE API client: the only code that talks to Proxmox.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    retry: Backoff,
    observer: Option<Arc<dyn RequestObserver>>,
    breaker: Option<Arc<Breaker>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// A path below `/api2/json`: its template (for metrics and errors) and the values
/// of its placeholders, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiPath {
    pub(crate) template: &'static str,
    values: Vec<String>,
}

impl ApiPath {
    /// `template` with each `{...}` segment standing for the next of `values`.
    pub(crate) fn new(template: &'static str, values: &[&str]) -> Self {
        Self { template, values: values.iter().map(|v| v.to_string()).collect() }
    }

    /// The segments with the placeholders filled in, not yet percent-encoded.
    fn segments(&self) -> Vec<&str> {
        let mut values = self.values.iter();
        self.template
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| if s.starts_with('{') { values.next().map_or("", String::as_str) } else { s })
            .collect()
    }

    /// The concrete path, for error messages.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for segment in self.segments() {
            out.push('/');
            out.push_str(segment);
        }
        out
    }
}

/// Request parameters: sent in the query for GET and DELETE, as a form otherwise.
pub(crate) type Params = Vec<(&'static str, String)>;

/// A successful answer: `data` and, for paged lists, `total`.
pub(crate) struct Answer<T> {
    pub(crate) data: T,
    pub(crate) total: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<BTreeMap<String, serde_json::Value>>,
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// Whether a failed request may be sent again as it is.
fn retryable(method: &Method, err: &Error) -> bool {
    if matches!(err, Error::NodeUnavailable { .. }) {
        // Not sent: the breaker decides when the node is tried again.
        false
    } else if *method == Method::GET {
        err.is_transient()
    } else {
        err.is_lock_contention()
    }
}

/// Whether a transport error was caused by the TLS layer (certificate rejected,
/// handshake failure), which retrying cannot fix.
fn is_tls_failure(err: &reqwest::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<rustls::Error>() {
            return true;
        }
        // io::Error::source skips the error it wraps (and the TLS stream nests one
        // io::Error in another), so step into the wrapped error explicitly.
        current = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

impl Client {
    /// A client for one endpoint. Fails on an endpoint that is not an https URL, a
    /// malformed token id, or unusable TLS settings.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let base = parse_endpoint(&config.endpoint)?;
        if !config.token.id_is_well_formed() {
            return Err(Error::Config(format!("token id {:?} is not of the form user@realm!name", config.token.id)));
        }
        let mut auth = HeaderValue::from_str(&config.token.authorization())
            .map_err(|_| Error::Config("the API token contains characters not allowed in an HTTP header".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);

        let http = reqwest::Client::builder()
            .use_preconfigured_tls(client_config(&config.tls)?)
            .https_only(true)
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("infrahaus-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Build)?;
        Ok(Self { http, base, retry: config.retry, observer: config.observer, breaker: config.breaker })
    }

    fn url(&self, path: &ApiPath) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["api2", "json"]).extend(path.segments());
        }
        url
    }

    /// One request with the client's retry policy.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: ApiPath,
        params: Params,
    ) -> Result<Answer<T>, Error> {
        retry(&self.retry, |e| retryable(&method, e), || self.send(method.clone(), &path, &params)).await
    }

    /// One request, returning only `data`.
    pub(crate) async fn data<T: DeserializeOwned>(
        &self,
        method: Method,
        path: ApiPath,
        params: Params,
    ) -> Result<T, Error> {
        Ok(self.call(method, path, params).await?.data)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &ApiPath,
        params: &Params,
    ) -> Result<Answer<T>, Error> {
        let Some(breaker) = &self.breaker else { return self.send_now(method, path, params).await };
        breaker.admit(method_name(&method), path.template)?;
        let answer = self.send_now(method, path, params).await;
        breaker.record(answer.as_ref().map(|_| ()));
        answer
    }

    async fn send_now<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &ApiPath,
        params: &Params,
    ) -> Result<Answer<T>, Error> {
        let name = method_name(&method);
        let mut request = self.http.request(method.clone(), self.url(path));
        if !params.is_empty() {
            request = if method == Method::GET || method == Method::DELETE {
                request.query(params)
            } else {
                request.form(params)
            };
        }
        let started = Instant::now();
        let outcome = request.send().await;
        let observe = |status: Option<u16>| {
            if let Some(observer) = &self.observer {
                observer.observe(&RequestRecord {
                    method: name,
                    endpoint: path.template,
                    status,
                    elapsed: started.elapsed(),
                });
            }
        };
        let response = match outcome {
            Ok(response) => response,
            Err(source) => {
                observe(None);
                return Err(transport_error(name, path.template, source));
            }
        };
        let status = response.status();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let body = response.bytes().await;
        observe(Some(status.as_u16()));
        let body = body.map_err(|source| transport_error(name, path.template, source))?;

        if status.is_success() {
            return decode_answer(name, path, &body);
        }
        Err(api_error(name, path, status.as_u16(), &reason, &body))
    }
}

/// The `data` (and `total`) of a successful answer's body. Only an object is
/// an envelope: serde would also read `[data, total]` as one.
pub(crate) fn decode_answer<T: DeserializeOwned>(
    method: &'static str,
    path: &ApiPath,
    body: &[u8],
) -> Result<Answer<T>, Error> {
    let decode = |detail: String| Error::Decode {
        method,
        endpoint: path.template,
        path: path.render(),
        detail: format!("{detail} in {}", snippet(body)),
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(decode("expected an object with `data`".to_owned()));
    }
    let envelope: Envelope<T> = serde_json::from_slice(body).map_err(|e| decode(e.to_string()))?;
    Ok(Answer { data: envelope.data, total: envelope.total })
}

/// The error an answer with HTTP `status` stands for: the `message` and the
/// per-parameter `errors` of its body, or the reason phrase when the body
/// says nothing (a proxy's HTML page, an empty body).
pub(crate) fn api_error(method: &'static str, path: &ApiPath, status: u16, reason: &str, body: &[u8]) -> Error {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let message = parsed
        .message
        .map(|m| m.trim_end().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| reason.trim_end().to_string());
    let errors = parsed
        .errors
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text.trim_end().to_string())
        })
        .collect();
    Error::Api { method, endpoint: path.template, path: path.render(), status, message, errors }
}

fn transport_error(method: &'static str, endpoint: &'static str, source: reqwest::Error) -> Error {
    if is_tls_failure(&source) {
        Error::Tls { method, endpoint, source }
    } else {
        Error::Connection { method, endpoint, source }
    }
}

/// The start of a body that could not be read, for the error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut cut: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

/// The endpoint as it may be shown: user info in the authority (`user:pw@`)
/// replaced, so a password put into the URL never reaches a message or a log.
fn shown(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else { return endpoint.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => endpoint.to_owned(),
    }
}

fn parse_endpoint(endpoint: &str) -> Result<Url, Error> {
    let invalid = |why: String| Error::Config(format!("endpoint {:?} {why}", shown(endpoint)));
    let url = Url::parse(endpoint.trim()).map_err(|e| invalid(format!("is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(invalid("must use https".to_owned()));
    }
    if url.host_str().is_none() || url.cannot_be_a_base() {
        return Err(invalid("has no host".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials, a query or a fragment".to_owned()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(endpoint: &str) -> Result<Client, Error> {
        Client::new(ClientConfig::new(endpoint, ApiToken::new("root@pam!ci", "s3cr3t"), TlsOptions::default()))
    }

    #[test]
    fn user_info_in_an_endpoint_is_never_shown() {
        let error = client("https://root:hunter2@pve1.example.com:8006").expect_err("user info is refused");
        let text = error.to_string();
        assert!(!text.contains("hunter2") && !text.contains("root:"), "{text}");
        assert!(text.contains("https://***@pve1.example.com:8006"), "{text}");
        let config = ClientConfig::new(
            "https://root:hunter2@pve1.example.com:8006",
            ApiToken::new("root@pam!ci", "s3cr3t"),
            TlsOptions::default(),
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(shown("https://pve1.example.com:8006/a@b"), "https://pve1.example.com:8006/a@b");
    }

    #[test]
    fn endpoint_table() {
        let cases = [
            (
                "https://pve1.example.com:8006",
                Some("https://pve1.example.com:8006/api2/json/nodes/pve1/lxc/120/config"),
            ),
            (
                "https://pve1.example.com:8006/",
                Some("https://pve1.example.com:8006/api2/json/nodes/pve1/lxc/120/config"),
            ),
            (
                "https://proxy.example.com/pve/",
                Some("https://proxy.example.com/pve/api2/json/nodes/pve1/lxc/120/config"),
            ),
            ("https://127.0.0.1:8006", Some("https://127.0.0.1:8006/api2/json/nodes/pve1/lxc/120/config")),
            ("http://pve1.example.com:8006", None),
            ("pve1.example.com:8006", None),
            ("https://user:pw@pve1.example.com:8006", None),
            ("https://pve1.example.com:8006/?x=1", None),
        ];
        let path = ApiPath::new("/nodes/{node}/lxc/{vmid}/config", &["pve1", "120"]);
        for (endpoint, expected) in cases {
            match (client(endpoint), expected) {
                (Ok(c), Some(url)) => assert_eq!(c.url(&path).as_str(), url, "{endpoint}"),
                (Err(_), None) => {}
                (Ok(_), None) => panic!("{endpoint} should be rejected"),
                (Err(e), Some(_)) => panic!("{endpoint} should be accepted: {e}"),
            }
        }
    }

    #[test]
    fn path_values_are_percent_encoded_and_rendered_raw() {
        let c = client("https://pve1:8006").expect("client");
        let upid = "UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam!ci:";
        let path = ApiPath::new("/nodes/{node}/tasks/{upid}/status", &["pve1", upid]);
        assert_eq!(path.render(), format!("/nodes/pve1/tasks/{upid}/status"));
        let url = c.url(&path);
        assert!(
            url.as_str().ends_with("/tasks/UPID:pve1:00001C3A:0001B5E2:6553F0A1:vzcreate:120:root@pam!ci:/status"),
            "{url}"
        );
        let sneaky = ApiPath::new("/nodes/{node}/lxc", &["../../access"]);
        assert!(c.url(&sneaky).as_str().ends_with("/api2/json/nodes/..%2F..%2Faccess/lxc"), "{}", c.url(&sneaky));
    }

    #[test]
    fn malformed_token_ids_are_rejected() {
        let err = Client::new(ClientConfig::new(
            "https://pve1:8006",
            ApiToken::new("root@pam", "s3cr3t"),
            TlsOptions::default(),
        ))
        .expect_err("rejected");
        assert!(err.to_string().contains("user@realm!name"), "{err}");
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn debug_output_hides_the_token_secret() {
        let config =
            ClientConfig::new("https://pve1:8006", ApiToken::new("root@pam!ci", "s3cr3t"), TlsOptions::default());
        let client = Client::new(config.clone()).expect("client");
        for text in [format!("{config:?}"), format!("{client:?}")] {
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }

    #[test]
    fn only_an_object_is_an_envelope() {
        let path = ApiPath::new("/version", &[]);
        type Decoded = Option<(serde_json::Value, Option<u64>)>;
        let cases: [(&[u8], Decoded); 6] = [
            (br#"{"data":{"version":"8.3.0"}}"#, Some((serde_json::json!({"version": "8.3.0"}), None))),
            (b" {\"data\":[1,2],\"total\":2}\n", Some((serde_json::json!([1, 2]), Some(2)))),
            (br#"{"data":null}"#, Some((serde_json::Value::Null, None))),
            // A positional array is not an envelope, though serde reads it as one.
            (br#"["6\/n6\/n"]          "#, None),
            (br#"[{"version":"8.3.0"}, 1]"#, None),
            (b"", None),
        ];
        for (body, expected) in cases {
            let decoded = decode_answer::<serde_json::Value>("GET", &path, body).map(|a| (a.data, a.total));
            match (decoded, expected) {
                (Ok(got), Some(expected)) => assert_eq!(got, expected, "{}", String::from_utf8_lossy(body)),
                (Err(Error::Decode { .. }), None) => {}
                (got, _) => panic!("{}: {got:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn writes_retry_only_on_lock_contention() {
        let api = |status, message: &str| super::super::error::test_api_error(status, message, &[]);
        let lock = api(500, "can't lock file '/run/lock/lxc/pve-config-120.lock' - got timeout");
        let server = api(500, "Internal Server Error");
        assert!(retryable(&Method::GET, &lock));
        assert!(retryable(&Method::GET, &server));
        assert!(retryable(&Method::POST, &lock));
        assert!(!retryable(&Method::POST, &server));
        assert!(!retryable(&Method::DELETE, &server));
    }
}
