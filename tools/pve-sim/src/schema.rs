//! Parameter verification driven by the official API schema, with the
//! messages of pve-common's `PVE::JSONSchema`.
//!
//! Every parameter arrives as a string (query, form or JSON body alike), or as
//! an array of strings for a key given more than once, as it does in
//! pve-http-server, and is checked against the schema of its endpoint.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

/// The schema of the endpoints pve-sim implements, copied from the official
/// `pve-api-schema.json` (a test checks that the copy is exact).
const EMBEDDED_SCHEMA: &str = include_str!("../schema/pve-api.json");

pub(crate) type ParamErrors = BTreeMap<String, String>;
pub(crate) type Params = BTreeMap<String, String>;

/// A parameter as the request carried it. A key repeated in a form or query
/// (`tags=a&tags=b`, how Python clients send a list) or a JSON array is
/// `Many`: the array pve-http-server's `decode_urlencoded` builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawValue {
    One(String),
    Many(Vec<String>),
}

/// Request parameters before verification.
pub(crate) type RawParams = BTreeMap<String, RawValue>;

pub(crate) struct ApiSchema {
    endpoints: Map<String, Value>,
}

impl ApiSchema {
    pub(crate) fn embedded() -> anyhow::Result<Self> {
        let endpoints: Map<String, Value> = serde_json::from_str(EMBEDDED_SCHEMA)?;
        Ok(Self { endpoints })
    }

    /// The `parameters` object of one endpoint, e.g. (`/nodes/{node}/lxc`, `POST`).
    pub(crate) fn parameters(&self, path_template: &str, method: &str) -> Option<&Value> {
        self.endpoints.get(path_template)?.get(method)?.get("parameters")
    }

    /// The schema of one property, e.g. a config key, as the given endpoint declares it.
    pub(crate) fn property(&self, path_template: &str, method: &str, name: &str) -> Option<&Value> {
        let properties = self.parameters(path_template, method)?.get("properties")?.as_object()?;
        lookup_property(properties, name)
    }
}

/// Finds `net0` under `net[n]` and the like; plain names match exactly.
fn lookup_property<'a>(properties: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(schema) = properties.get(name) {
        return Some(schema);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let index = &name[base.len()..];
    if base.is_empty() || index.is_empty() || (index.len() > 1 && index.starts_with('0')) {
        return None;
    }
    let limit = array_limit(base)?;
    let n: u32 = index.parse().ok()?;
    if n >= limit {
        return None;
    }
    properties.get(&format!("{base}[n]"))
}

/// How many of each indexed option PVE allows (`PVE::LXC::Config`).
fn array_limit(base: &str) -> Option<u32> {
    match base {
        "net" => Some(32),
        "mp" | "unused" | "dev" => Some(256),
        _ => None,
    }
}

/// Verifies request parameters against an endpoint's `parameters` schema and
/// hands them on as single strings, as `PVE::RESTHandler::handle` does: an
/// array for a string property of a `-list` format is joined by `,` first
/// (`normalize_legacy_param_formats`), and any other array fails the type check.
pub(crate) fn verify_params(parameters: &Value, params: RawParams) -> Result<Params, ParamErrors> {
    let empty = Map::new();
    let properties = parameters.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let params = join_lists(properties, params);
    validate_params(properties, &params)?;
    Ok(params
        .into_iter()
        .filter_map(|(name, value)| match value {
            RawValue::One(text) => Some((name, text)),
            RawValue::Many(_) => None,
        })
        .collect())
}

/// Joins an array given for a string property whose format ends in `-list`
/// into the comma-separated list that format parses.
fn join_lists(properties: &Map<String, Value>, params: RawParams) -> RawParams {
    params
        .into_iter()
        .map(|(name, value)| match value {
            RawValue::Many(values) if lookup_property(properties, &name).is_some_and(is_string_list) => {
                (name, RawValue::One(values.join(",")))
            }
            other => (name, other),
        })
        .collect()
}

fn is_string_list(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("string")
        && schema.get("format").and_then(Value::as_str).is_some_and(|f| f.ends_with("-list"))
}

fn validate_params(properties: &Map<String, Value>, params: &RawParams) -> Result<(), ParamErrors> {
    let mut errors = ParamErrors::new();
    for (name, value) in params {
        match lookup_property(properties, name) {
            None => {
                errors.insert(
                    name.clone(),
                    "property is not defined in schema and the schema does not allow additional properties".into(),
                );
            }
            Some(schema) => {
                let checked = match value {
                    RawValue::One(text) => check_value(schema, text),
                    RawValue::Many(_) => Err(format!("type check ('{}') failed - got ARRAY", schema_type(schema))),
                };
                if let Err(message) = checked {
                    errors.insert(name.clone(), message);
                }
            }
        }
    }
    for (name, schema) in properties {
        if name.ends_with("[n]") {
            continue;
        }
        if !is_optional(schema) && !params.contains_key(name) {
            errors.insert(name.clone(), "property is missing and it is not optional".into());
        }
        if let Some(required) = schema.get("requires").and_then(Value::as_str) {
            if params.contains_key(name) && !params.contains_key(required) {
                errors.insert(required.to_string(), format!("missing property - '{name}' requires this property"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The JSON type a property declares; one that declares none is checked as a string.
fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("string")
}

fn is_optional(schema: &Value) -> bool {
    match schema.get("optional") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

pub(crate) fn parse_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn is_integer(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Checks one value against a property schema: type, bounds, enum, pattern and format.
fn check_value(schema: &Value, value: &str) -> Result<(), String> {
    let kind = schema_type(schema);
    match kind {
        "integer" | "number" => {
            let number: f64 = if kind == "integer" {
                if !is_integer(value) {
                    return Err(format!("type check ('integer') failed - got '{value}'"));
                }
                value.parse::<f64>().map_err(|_| format!("type check ('integer') failed - got '{value}'"))?
            } else {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| format!("type check ('number') failed - got '{value}'"))?
            };
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if number < min {
                    return Err(format!("value must have a minimum value of {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if number > max {
                    return Err(format!("value must have a maximum value of {max}"));
                }
            }
        }
        "boolean" => {
            if parse_boolean(value).is_none() {
                return Err(format!("type check ('boolean') failed - got '{value}'"));
            }
        }
        _ => {
            let len = value.chars().count();
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if len as u64 > max {
                    return Err(format!("value may only be {max} characters long"));
                }
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if (len as u64) < min {
                    return Err(format!("value must be at least {min} characters long"));
                }
            }
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<&str> = options.iter().filter_map(Value::as_str).collect();
        if !names.contains(&value) {
            return Err(format!("value '{value}' does not have a value in the enumeration '{}'", names.join(", ")));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if let Some(re) = perl_pattern(pattern) {
            if !re.is_match(value) {
                return Err("value does not match the regex pattern".into());
            }
        }
    }
    match schema.get("format") {
        Some(Value::String(name)) => check_format(name, value).map_err(|e| format!("invalid format - {e}"))?,
        Some(Value::Object(format)) => {
            parse_property_string(format, value).map_err(|e| format!("invalid format - {e}"))?;
        }
        _ => {}
    }
    Ok(())
}

/// Translates a schema pattern written for Perl into an anchored Rust regex.
fn perl_pattern(pattern: &str) -> Option<Regex> {
    let translated = pattern.replace("(?^:", "(?:").replace("\\0", "\\x00");
    Regex::new(&format!("^(?:{translated})$")).ok()
}

/// Parses a property string such as `name=eth0,bridge=vmbr0,ip=dhcp` against
/// its format, as `PVE::JSONSchema::parse_property_string` does.
pub(crate) fn parse_property_string(format: &Map<String, Value>, value: &str) -> Result<Params, String> {
    let default_key = format
        .iter()
        .find(|(_, schema)| schema.get("default_key").is_some_and(|d| d.as_i64() == Some(1)))
        .map(|(key, _)| key.as_str());
    let mut parsed = Params::new();
    for part in value.split(',') {
        if part.is_empty() {
            continue;
        }
        let (key, val) = match part.split_once('=') {
            Some((k, v)) if format.contains_key(k) => (k.to_string(), v.to_string()),
            Some((k, _)) if default_key.is_none() => {
                return Err(format!("format error\n{k}: property is not defined in schema"));
            }
            _ => match default_key {
                Some(k) if !parsed.contains_key(k) => (k.to_string(), part.to_string()),
                _ => return Err(format!("value without key, but schema does not define a default key: {part}")),
            },
        };
        if parsed.contains_key(&key) {
            return Err(format!("duplicate key in comma-separated list property: {key}"));
        }
        parsed.insert(key, val);
    }
    let mut errors = Vec::new();
    for (key, schema) in format {
        match parsed.get(key) {
            Some(val) => {
                if let Err(e) = check_value(schema, val) {
                    errors.push(format!("{key}: {e}"));
                }
            }
            None if !is_optional(schema) => errors.push(format!("{key}: property is missing and it is not optional")),
            None => {}
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(format!("format error\n{}", errors.join("\n")))
    }
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static pattern compiles"))
}

const DNS_LABEL: &str = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?";

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(|c: char| c == ',' || c == ';' || c == '\0' || c.is_whitespace()).filter(|s| !s.is_empty())
}

/// The named formats of `PVE::JSONSchema` that the implemented endpoints use.
/// Unknown names pass, as they would for a client of an older schema.
fn check_format(name: &str, value: &str) -> Result<(), String> {
    static NODE: OnceLock<Regex> = OnceLock::new();
    static STORAGE: OnceLock<Regex> = OnceLock::new();
    static DNS: OnceLock<Regex> = OnceLock::new();
    static TAG: OnceLock<Regex> = OnceLock::new();
    static MAC: OnceLock<Regex> = OnceLock::new();
    static CONFIGID: OnceLock<Regex> = OnceLock::new();
    static POOLID: OnceLock<Regex> = OnceLock::new();
    static VOLID: OnceLock<Regex> = OnceLock::new();
    static DISKSIZE: OnceLock<Regex> = OnceLock::new();
    static REALM: OnceLock<Regex> = OnceLock::new();
    static PRIV: OnceLock<Regex> = OnceLock::new();
    static TIMEZONE: OnceLock<Regex> = OnceLock::new();
    if let Some(item_format) = name.strip_suffix("-list") {
        for item in split_list(value) {
            check_format(item_format, item)?;
        }
        return Ok(());
    }
    let ok = match name {
        "pve-vmid" => is_integer(value),
        "pve-node" => regex(&NODE, &format!("^{DNS_LABEL}$")).is_match(value),
        "pve-storage-id" => regex(&STORAGE, r"^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$").is_match(value),
        "dns-name" => regex(&DNS, &format!(r"^{DNS_LABEL}(\.{DNS_LABEL})*$")).is_match(value),
        "pve-tag" => regex(&TAG, r"^(?i)[a-z0-9_][a-z0-9_\-+.]*$").is_match(value),
        "ipv4" => value.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => value.parse::<Ipv6Addr>().is_ok(),
        "pve-ipv4-config" => matches!(value, "dhcp" | "manual") || parse_ipv4_cidr(value).is_some(),
        "pve-ipv6-config" => matches!(value, "auto" | "dhcp" | "manual") || is_ipv6_cidr(value),
        "lxc-ip-with-ll-iface" => {
            let ip = value.split_once('%').map_or(value, |(ip, _)| ip);
            ip.parse::<std::net::IpAddr>().is_ok()
        }
        "mac-addr" => {
            regex(&MAC, r"^(?i)[a-f0-9]{2}(:[a-f0-9]{2}){5}$").is_match(value)
                && u8::from_str_radix(&value[..2], 16).is_ok_and(|b| b & 1 == 0)
        }
        "pve-configid" => regex(&CONFIGID, r"^(?i)[a-z][a-z0-9_-]+$").is_match(value),
        "pve-poolid" => regex(&POOLID, r"^[A-Za-z0-9_\-]+$").is_match(value),
        "pve-volume-id" => regex(&VOLID, r"^(?i)[a-z][a-z0-9\-_.]*[a-z0-9]:.+$").is_match(value),
        "pve-lxc-mp-string" => !value.split('/').any(|c| c == ".." || c == "."),
        "pve-lxc-dev-string" => value.starts_with("/dev/") && !value.split('/').any(|c| c == ".."),
        "disk-size" => regex(&DISKSIZE, r"^\d+(\.\d+)?[KMGT]?$").is_match(value),
        "pve-startup-order" => value.split(',').all(|part| {
            let number = part.strip_prefix("order=").or(part.strip_prefix("up=")).or(part.strip_prefix("down="));
            number.unwrap_or(part).parse::<u64>().is_ok()
        }),
        "pve-ct-timezone" => value == "host" || regex(&TIMEZONE, r"^[\w\-+/]+$").is_match(value),
        "pve-storage-content" => {
            matches!(value, "images" | "rootdir" | "vztmpl" | "iso" | "backup" | "snippets" | "import")
        }
        "pve-task-status-type" => matches!(value, "ok" | "error" | "warning" | "unknown"),
        "pve-realm" => regex(&REALM, r"^[A-Za-z][A-Za-z0-9.\-_]+$").is_match(value),
        "pve-priv" => regex(&PRIV, r"^[A-Za-z.]+$").is_match(value),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format_error(name, value))
    }
}

fn format_error(name: &str, value: &str) -> String {
    match name {
        "dns-name" => format!("value '{value}' does not look like a valid DNS name"),
        "pve-tag" => format!("invalid characters in tag '{value}'"),
        "ipv4" | "pve-ipv4-config" => format!("value '{value}' is not a valid IPv4 address"),
        "ipv6" | "pve-ipv6-config" => format!("value '{value}' is not a valid IPv6 address"),
        "mac-addr" => format!("value '{value}' is not a valid unicast MAC address"),
        "pve-node" => format!("value '{value}' does not look like a valid node name"),
        "pve-storage-id" => format!("storage ID '{value}' contains illegal characters"),
        "pve-volume-id" => format!("unable to parse volume ID '{value}'"),
        _ => format!("value '{value}' does not match format '{name}'"),
    }
}

/// `192.0.2.10/24` into its address and prefix length.
pub(crate) fn parse_ipv4_cidr(value: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = value.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((addr.parse().ok()?, prefix))
}

fn is_ipv6_cidr(value: &str) -> bool {
    value.split_once('/').is_some_and(|(a, p)| a.parse::<Ipv6Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 128))
}

/// Renders a stored config value with its schema type, as PVE's JSON output does.
pub(crate) fn typed_json(schema: Option<&Value>, value: &str) -> Value {
    let kind = schema.and_then(|s| s.get("type")).and_then(Value::as_str).unwrap_or("string");
    match kind {
        "integer" => value.parse::<i64>().map_or_else(|_| Value::String(value.into()), Value::from),
        "boolean" => parse_boolean(value).map_or_else(|| Value::String(value.into()), |b| Value::from(i64::from(b))),
        "number" => value.parse::<f64>().map_or_else(|_| Value::String(value.into()), Value::from),
        _ => Value::String(value.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create_schema() -> Value {
        ApiSchema::embedded()
            .expect("embedded schema parses")
            .parameters("/nodes/{node}/lxc", "POST")
            .expect("create endpoint present")
            .clone()
    }

    fn params(pairs: &[(&str, &str)]) -> RawParams {
        pairs.iter().map(|(k, v)| (k.to_string(), RawValue::One(v.to_string()))).collect()
    }

    fn many(values: &[&str]) -> RawValue {
        RawValue::Many(values.iter().map(|v| v.to_string()).collect())
    }

    #[test]
    fn indexed_properties_resolve_within_their_limits() {
        let schema = create_schema();
        let props = schema["properties"].as_object().expect("properties");
        let cases = [
            ("net0", true),
            ("net31", true),
            ("net32", false),
            ("net01", false),
            ("mp255", true),
            ("unused0", true),
            ("dev3", true),
            ("hostname", true),
            ("hostname1", false),
            ("net", false),
            ("bogus", false),
        ];
        for (name, found) in cases {
            assert_eq!(lookup_property(props, name).is_some(), found, "{name}");
        }
    }

    #[test]
    fn create_parameters_are_verified_like_pve() {
        let schema = create_schema();
        let base = [("node", "pve1"), ("vmid", "100"), ("ostemplate", "local:vztmpl/x.tar.zst")];
        // (extra parameters, the parameter and message of the expected error)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (&[], None),
            (&[("hostname", "web-1")], None),
            (&[("hostname", "web_1")], Some(("hostname", "does not look like a valid DNS name"))),
            (&[("memory", "8")], Some(("memory", "minimum value of 16"))),
            (&[("memory", "lots")], Some(("memory", "type check ('integer') failed"))),
            (&[("cores", "8193")], Some(("cores", "maximum value of 8192"))),
            (&[("unprivileged", "maybe")], Some(("unprivileged", "type check ('boolean')"))),
            (&[("unprivileged", "yes")], None),
            (&[("arch", "sparc")], Some(("arch", "enumeration"))),
            (&[("password", "abc")], Some(("password", "at least 5 characters"))),
            (&[("colour", "red")], Some(("colour", "not defined in schema"))),
            (&[("net0", "name=eth0,bridge=vmbr0,ip=dhcp")], None),
            (&[("net0", "name=eth0,bridge=vmbr0,ip=127.0.100.7/24,gw=127.0.100.1")], None),
            (&[("net0", "bridge=vmbr0,ip=dhcp")], Some(("net0", "name: property is missing"))),
            (&[("net0", "name=eth0,ip=300.1.1.1/24")], Some(("net0", "ip:"))),
            (&[("net0", "name=eth0,speed=fast")], Some(("net0", "speed"))),
            (&[("net0", "name=eth0,hwaddr=01:00:00:00:00:01")], Some(("net0", "hwaddr"))),
            (&[("net0", "name=eth0,mtu=10")], Some(("net0", "mtu"))),
            (&[("net32", "name=eth0")], Some(("net32", "not defined in schema"))),
            (&[("rootfs", "local-lvm:8")], None),
            (&[("rootfs", "volume=local-lvm:8,size=8G")], None),
            (&[("rootfs", "local-lvm:8,size=lots")], Some(("rootfs", "size"))),
            (&[("features", "nesting=1,keyctl=1")], None),
            (&[("features", "nesting=maybe")], Some(("features", "nesting"))),
            (&[("features", "docker=1")], Some(("features", "docker"))),
            (&[("tags", "web;infrahaus")], None),
            (&[("tags", "web;in frahaus,x")], None),
            (&[("tags", "we$b")], Some(("tags", "invalid characters in tag"))),
            (&[("nameserver", "127.0.0.53 ::1")], None),
            (&[("nameserver", "dns.example")], Some(("nameserver", "invalid format"))),
            (&[("startup", "order=1,up=5")], None),
            (&[("startup", "first")], Some(("startup", "invalid format"))),
        ];
        for (extra, expected) in cases {
            let mut p = params(&base);
            p.extend(params(extra));
            match (verify_params(&schema, p).map(|_| ()), expected) {
                (Ok(()), None) => {}
                (Err(errors), Some((key, text))) => {
                    let message = errors.get(*key).unwrap_or_else(|| panic!("{extra:?}: {errors:?}"));
                    assert!(message.contains(text), "{extra:?}: {message}");
                }
                (result, expected) => panic!("{extra:?}: got {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn missing_required_parameters_are_reported() {
        let errors = verify_params(&create_schema(), params(&[("node", "pve1")])).expect_err("fails");
        assert_eq!(errors.get("vmid").map(String::as_str), Some("property is missing and it is not optional"));
        assert!(errors.contains_key("ostemplate"));
    }

    #[test]
    fn arrays_are_joined_for_list_formats_and_fail_the_type_check_elsewhere() {
        let schema = create_schema();
        let base = [("node", "pve1"), ("vmid", "100"), ("ostemplate", "local:vztmpl/x.tar.zst")];
        let with = |name: &str, value: RawValue| {
            let mut p = params(&base);
            p.insert(name.to_string(), value);
            verify_params(&schema, p)
        };
        let verified = with("tags", many(&["a", "B", "a"])).expect("a tag list");
        assert_eq!(verified.get("tags").map(String::as_str), Some("a,B,a"));
        let verified = with("nameserver", many(&["127.0.0.53", "::1"])).expect("a nameserver list");
        assert_eq!(verified.get("nameserver").map(String::as_str), Some("127.0.0.53,::1"));
        let errors = with("tags", many(&["a", "we$b"])).expect_err("every tag is checked");
        assert!(errors["tags"].contains("invalid characters in tag"), "{errors:?}");

        let errors = with("hostname", many(&["a", "b"])).expect_err("hostname is one string");
        assert_eq!(errors.get("hostname").map(String::as_str), Some("type check ('string') failed - got ARRAY"));
        let errors = with("hostname", many(&["a"])).expect_err("a one-element array is an array too");
        assert_eq!(errors.get("hostname").map(String::as_str), Some("type check ('string') failed - got ARRAY"));
        let errors = with("memory", many(&["512", "1024"])).expect_err("memory is one integer");
        assert_eq!(errors.get("memory").map(String::as_str), Some("type check ('integer') failed - got ARRAY"));
        let errors = with("vmid", many(&["100", "101"])).expect_err("a required property given twice");
        assert_eq!(errors.get("vmid").map(String::as_str), Some("type check ('integer') failed - got ARRAY"));
        let errors = with("colour", many(&["red", "blue"])).expect_err("unknown");
        assert!(errors["colour"].contains("not defined in schema"), "{errors:?}");
    }

    #[test]
    fn property_strings_use_the_default_key() {
        let schema = create_schema();
        let rootfs = schema["properties"]["rootfs"]["format"].as_object().expect("rootfs format");
        let parsed = parse_property_string(rootfs, "local-lvm:8,mountoptions=noatime").expect("parses");
        assert_eq!(parsed.get("volume").map(String::as_str), Some("local-lvm:8"));
        assert_eq!(parsed.get("mountoptions").map(String::as_str), Some("noatime"));
        assert!(parse_property_string(rootfs, "a:1,b:2").is_err());
    }

    #[test]
    fn formats() {
        let cases = [
            ("pve-ipv4-config", "dhcp", true),
            ("pve-ipv4-config", "127.0.0.2/8", true),
            ("pve-ipv4-config", "127.0.0.2", false),
            ("pve-ipv4-config", "127.0.0.2/33", false),
            ("dns-name", "a.b-c.d", true),
            ("dns-name", "-a", false),
            ("pve-tag-list", "a;b,c d", true),
            ("mac-addr", "BC:24:11:00:00:01", true),
            ("mac-addr", "BC:24:11:00:00", false),
            ("pve-configid-list", "description,net1", true),
            ("pve-configid-list", "1abc", false),
            ("disk-size", "8G", true),
            ("disk-size", "8Q", false),
            ("pve-lxc-mp-string", "/srv/../etc", false),
            ("something-new", "anything", true),
        ];
        for (format, value, ok) in cases {
            assert_eq!(check_format(format, value).is_ok(), ok, "{format} {value}");
        }
    }

    #[test]
    fn typed_output() {
        let int = json!({"type": "integer"});
        let boolean = json!({"type": "boolean"});
        assert_eq!(typed_json(Some(&int), "512"), json!(512));
        assert_eq!(typed_json(Some(&boolean), "yes"), json!(1));
        assert_eq!(typed_json(None, "web"), json!("web"));
    }
}
