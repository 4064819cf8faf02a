//! Proxmox is loose about JSON types: numbers may come as strings and booleans as
//! 0/1. These accept every form seen in the wild.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

fn value_to_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            value_to_u64(&v).map(Some).ok_or_else(|| serde::de::Error::custom(format!("expected a number, got {v}")))
        }
    }
}

pub(crate) fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    opt_u64(d)?
        .map(|n| u32::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is out of range"))))
        .transpose()
}

pub(crate) fn u32_any<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    opt_u32(d)?.ok_or_else(|| serde::de::Error::custom("expected a number, got null"))
}

pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(v) => match value_to_u64(&v) {
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            _ => Err(serde::de::Error::custom(format!("expected a boolean, got {v}"))),
        },
    }
}

/// Strings that may come as numbers (a hostname of digits, a description of `1`).
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Loose {
        #[serde(default, deserialize_with = "opt_u64")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "opt_bool")]
        b: Option<bool>,
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
    }

    #[test]
    fn loose_values_table() {
        let cases = [
            (r#"{}"#, Some(Loose { n: None, b: None, s: None })),
            (r#"{"n": 512, "b": 1, "s": "x"}"#, Some(Loose { n: Some(512), b: Some(true), s: Some("x".into()) })),
            (r#"{"n": "512", "b": "0", "s": 12}"#, Some(Loose { n: Some(512), b: Some(false), s: Some("12".into()) })),
            (r#"{"n": null, "b": true, "s": null}"#, Some(Loose { n: None, b: Some(true), s: None })),
            (r#"{"n": "lots"}"#, None),
            (r#"{"b": 2}"#, None),
        ];
        for (json, expected) in cases {
            let parsed = serde_json::from_str::<Loose>(json).ok();
            assert_eq!(parsed, expected, "{json}");
        }
    }
}
