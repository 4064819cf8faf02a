//! Who is asking, and may they see it: the bearer token is checked with a
//! TokenReview, access with a SubjectAccessReview for the user the review
//! named. Answers are cached briefly (keyed by a hash of the token, never the
//! token itself), so a page polling every few seconds costs the API server
//! one review per token and resource per cache period.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::api::ApiError;
use super::args::AuthMode;
use crate::crd::Container;

/// The cookie the page keeps the token in: `EventSource` cannot send headers.
pub const TOKEN_COOKIE: &str = "infrahaus_token";

/// The user every request is in `--auth none` mode.
const ANONYMOUS: &str = "system:anonymous";

/// Cached answers at most; beyond it expired ones go, then all.
const CACHE_CAPACITY: usize = 10_000;

/// A verified caller.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The Kubernetes user name, for limits and logs.
    pub user: String,
    /// The reviewed user, for SubjectAccessReviews; `None` without auth.
    info: Option<UserInfo>,
    /// SHA-256 of the token, the cache key.
    token_hash: [u8; 32],
}

/// The access a request needs: `verb` on Containers in `namespace` (empty:
/// every namespace), on the one called `name` if given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access<'a> {
    pub verb: &'a str,
    pub namespace: &'a str,
    pub name: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CacheKey {
    Token([u8; 32]),
    Access { token: [u8; 32], verb: String, namespace: String, name: Option<String> },
}

#[derive(Clone, Debug)]
enum Answer {
    /// The TokenReview: the user, or `None` for a token it rejected.
    User(Option<UserInfo>),
    Allowed(bool),
}

/// Entries that expire `ttl` after they were stored.
struct TtlCache {
    ttl: Duration,
    entries: HashMap<CacheKey, (Instant, Answer)>,
}

impl TtlCache {
    fn get(&self, key: &CacheKey) -> Option<Answer> {
        let (stored, answer) = self.entries.get(key)?;
        (stored.elapsed() < self.ttl).then(|| answer.clone())
    }

    fn put(&mut self, key: CacheKey, answer: Answer) {
        if self.entries.len() >= CACHE_CAPACITY {
            let ttl = self.ttl;
            self.entries.retain(|_, (stored, _)| stored.elapsed() < ttl);
            if self.entries.len() >= CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (Instant::now(), answer));
    }
}

/// Authenticates and authorizes requests as `--auth` says.
pub struct Authorizer {
    mode: AuthMode,
    client: kube::Client,
    cache: Mutex<TtlCache>,
}

impl Authorizer {
    pub fn new(mode: AuthMode, client: kube::Client, ttl: Duration) -> Self {
        Self { mode, client, cache: Mutex::new(TtlCache { ttl, entries: HashMap::new() }) }
    }

    /// The caller of a request with these headers, or 401.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(Identity { user: ANONYMOUS.to_owned(), info: None, token_hash: [0; 32] });
        }
        let token = bearer_token(headers).ok_or(ApiError::Unauthorized)?;
        let token_hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let key = CacheKey::Token(token_hash);
        // Bound first: a guard in the match scrutinee would be held (and
        // taken again) in the arms.
        let cached = self.cache.lock().await.get(&key);
        let user = match cached {
            Some(Answer::User(user)) => user,
            _ => {
                let user = self.review_token(token).await?;
                self.cache.lock().await.put(key, Answer::User(user.clone()));
                user
            }
        };
        let info = user.ok_or(ApiError::Unauthorized)?;
        Ok(Identity { user: info.username.clone().unwrap_or_default(), info: Some(info), token_hash })
    }

    /// Ok when the caller may do `access`, otherwise 403.
    pub async fn authorize(&self, identity: &Identity, access: &Access<'_>) -> Result<(), ApiError> {
        let Some(info) = &identity.info else { return Ok(()) };
        let key = CacheKey::Access {
            token: identity.token_hash,
            verb: access.verb.to_owned(),
            namespace: access.namespace.to_owned(),
            name: access.name.map(str::to_owned),
        };
        let cached = self.cache.lock().await.get(&key);
        let allowed = match cached {
            Some(Answer::Allowed(allowed)) => allowed,
            _ => {
                let allowed = self.review_access(info, access).await?;
                self.cache.lock().await.put(key, Answer::Allowed(allowed));
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            tracing::debug!(user = %identity.user, verb = access.verb, namespace = access.namespace, "access denied");
            Err(ApiError::Forbidden(denial(access)))
        }
    }

    /// The user a TokenReview names, `None` when it rejects the token.
    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, ApiError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_owned()), audiences: None },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| review_failed("TokenReview", &error))?;
        let status = reviewed.status.unwrap_or_default();
        Ok(status.user.filter(|_| status.authenticated == Some(true)))
    }

    async fn review_access(&self, user: &UserInfo, access: &Access<'_>) -> Result<bool, ApiError> {
        let review = SubjectAccessReview { spec: access_review_spec(user, access), ..Default::default() };
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|error| review_failed("SubjectAccessReview", &error))?;
        Ok(reviewed.status.is_some_and(|status| status.allowed))
    }
}

/// The question for the API server: may this user do `access` on Containers?
fn access_review_spec(user: &UserInfo, access: &Access<'_>) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: user.username.clone(),
        uid: user.uid.clone(),
        groups: user.groups.clone(),
        extra: user.extra.clone(),
        resource_attributes: Some(ResourceAttributes {
            group: Some(<Container as kube::Resource>::group(&()).into_owned()),
            resource: Some(<Container as kube::Resource>::plural(&()).into_owned()),
            verb: Some(access.verb.to_owned()),
            namespace: Some(access.namespace.to_owned()).filter(|ns| !ns.is_empty()),
            name: access.name.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What a 403 says: the access that was missing, nothing of the namespace.
fn denial(access: &Access<'_>) -> String {
    let scope = if access.namespace.is_empty() {
        "in every namespace".to_owned()
    } else {
        format!("in namespace {}", access.namespace)
    };
    format!("you may not {} containers.infrahaus.io {scope}", access.verb)
}

/// A review the dashboard could not make is its own problem (its RBAC, or
/// the API server), not the caller's: 503, logged without the token.
fn review_failed(kind: &str, error: &kube::Error) -> ApiError {
    tracing::error!(%error, "the {kind} failed; may the dashboard's ServiceAccount create {kind}s?");
    ApiError::Unavailable(format!("the dashboard could not check the token ({kind} failed)"))
}

/// The token of `Authorization: Bearer ...`, else of the page's cookie.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim);
    let from_cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find_map(|(name, value)| (name == TOKEN_COOKIE).then_some(value.trim()))
    };
    from_header.or_else(from_cookie).filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie() {
        let cases: Vec<(&str, HeaderMap, Option<&str>)> = vec![
            ("none", headers(&[]), None),
            ("bearer", headers(&[(header::AUTHORIZATION, "Bearer abc.def")]), Some("abc.def")),
            ("basic is not a token", headers(&[(header::AUTHORIZATION, "Basic dXNlcg==")]), None),
            ("empty bearer", headers(&[(header::AUTHORIZATION, "Bearer ")]), None),
            ("cookie", headers(&[(header::COOKIE, "a=1; infrahaus_token=xyz; b=2")]), Some("xyz")),
            ("another cookie only", headers(&[(header::COOKIE, "infrahaus_token_old=xyz")]), None),
            (
                "the header wins",
                headers(&[(header::AUTHORIZATION, "Bearer from-header"), (header::COOKIE, "infrahaus_token=c")]),
                Some("from-header"),
            ),
        ];
        for (case, headers, expected) in cases {
            assert_eq!(bearer_token(&headers), expected, "{case}");
        }
    }

    #[test]
    fn reviews_ask_about_containers_for_the_reviewed_user() {
        let user = UserInfo {
            username: Some("system:serviceaccount:team-a:viewer".into()),
            uid: Some("u-1".into()),
            groups: Some(vec!["system:serviceaccounts".into()]),
            extra: None,
        };
        let spec = access_review_spec(&user, &Access { verb: "get", namespace: "team-a", name: Some("web-1") });
        assert_eq!(spec.user.as_deref(), Some("system:serviceaccount:team-a:viewer"));
        assert_eq!(spec.groups, user.groups);
        let attributes = spec.resource_attributes.expect("resource attributes");
        assert_eq!(attributes.group.as_deref(), Some("infrahaus.io"));
        assert_eq!(attributes.resource.as_deref(), Some("containers"));
        assert_eq!(attributes.verb.as_deref(), Some("get"));
        assert_eq!(attributes.namespace.as_deref(), Some("team-a"));
        assert_eq!(attributes.name.as_deref(), Some("web-1"));

        let every = access_review_spec(&user, &Access { verb: "list", namespace: "", name: None });
        assert_eq!(every.resource_attributes.expect("attributes").namespace, None, "cluster-wide");
    }

    #[tokio::test(start_paused = true)]
    async fn cached_answers_expire() {
        let mut cache = TtlCache { ttl: Duration::from_secs(30), entries: HashMap::new() };
        let key = CacheKey::Token([1; 32]);
        cache.put(key.clone(), Answer::Allowed(true));
        assert!(matches!(cache.get(&key), Some(Answer::Allowed(true))));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(cache.get(&key).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_makes_room() {
        let mut cache = TtlCache { ttl: Duration::from_secs(30), entries: HashMap::new() };
        for n in 0..CACHE_CAPACITY {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(n as u64).to_le_bytes());
            cache.put(CacheKey::Token(key), Answer::Allowed(true));
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        cache.put(CacheKey::Token([9; 32]), Answer::Allowed(false));
        assert_eq!(cache.entries.len(), 1, "expired entries went");
        assert!(matches!(cache.get(&CacheKey::Token([9; 32])), Some(Answer::Allowed(false))));
    }
}
