//! Kubernetes helpers shared by the controllers: the field manager, status
//! writes, Events, Secret keys, owner references and labels.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Resource;
use serde::Serialize;
use serde_json::json;

/// The field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "infrahaus-operator";

const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The labels of every object the controller creates.
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), FIELD_MANAGER.to_string())])
}

/// The reporter the controller's Events carry.
pub fn reporter() -> Reporter {
    Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() }
}

/// Writes an object's whole status with server-side apply. The controller
/// owns every status field, so it always applies all of them.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Logs and publishes a Kubernetes Event on `object`; failure to publish is
/// logged, not fatal.
/// The longest Event note events.k8s.io/v1 accepts, in bytes; a longer one is
/// rejected and the Event lost.
pub const EVENT_NOTE_LIMIT: usize = 1024;

/// The longest message written into status and conditions, in bytes: enough
/// for a failed script's last lines, small enough that a status never nears
/// the object size limit.
pub const STATUS_MESSAGE_LIMIT: usize = 8 * 1024;

const TRUNCATED: &str = " [truncated]";

/// `text` cut to at most `limit` bytes at a character boundary, marked when cut.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut cut = limit.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{TRUNCATED}", &text[..cut])
}

pub async fn publish_event<K>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    match type_ {
        EventType::Normal => tracing::info!(reason, action, "{note}"),
        EventType::Warning => tracing::warn!(reason, action, "{note}"),
    }
    let note = truncate(&note, EVENT_NOTE_LIMIT);
    let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, "could not publish Kubernetes Event");
    }
}

/// The value of `key` in a Secret (`data`, or `stringData` of an object not
/// yet stored).
pub fn secret_key(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(value.0.clone());
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).map(|v| v.clone().into_bytes())
}

/// Metadata for an object `owner` controls: garbage-collected with it, and
/// labelled as the controller's.
pub fn owned_metadata<K>(owner: &K, name: &str) -> ObjectMeta
where
    K: Resource<DynamicType = ()>,
{
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: owner.meta().namespace.clone(),
        owner_references: owner.controller_owner_ref(&()).map(|r| vec![r]),
        labels: Some(managed_labels()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_text_and_marks_cuts_at_character_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate(&"x".repeat(10), 10), "x".repeat(10));
        let cut = truncate(&"é".repeat(1000), EVENT_NOTE_LIMIT);
        assert!(cut.len() <= EVENT_NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with(" [truncated]") && cut.starts_with("éé"), "{cut}");
    }
    use k8s_openapi::ByteString;

    #[test]
    fn secret_keys_come_from_data_or_string_data() {
        let secret = Secret {
            data: Some(BTreeMap::from([("a".to_string(), ByteString(b"from data".to_vec()))])),
            string_data: Some(BTreeMap::from([("b".to_string(), "from stringData".to_string())])),
            ..Default::default()
        };
        assert_eq!(secret_key(&secret, "a").as_deref(), Some(&b"from data"[..]));
        assert_eq!(secret_key(&secret, "b").as_deref(), Some(&b"from stringData"[..]));
        assert_eq!(secret_key(&secret, "c"), None);
    }
}
