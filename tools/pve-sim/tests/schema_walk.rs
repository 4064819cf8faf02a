//! Walks the official API schema for every endpoint pve-sim implements and
//! checks that pve-sim accepts exactly the documented parameters.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::common::Sim;

const EMBEDDED: &str = include_str!("../schema/pve-api.json");
const UNDOCUMENTED: &str = "pve-sim-undocumented";

/// The official schema, committed beside the simulator's copy (see
/// `schema/README.md` for where it comes from).
fn official_schema() -> Result<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/pve-api-schema.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read the official schema {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn embedded_schema_is_the_official_one() -> Result<()> {
    let official = official_schema()?;
    let embedded: Value = serde_json::from_str(EMBEDDED)?;
    for (path, methods) in embedded.as_object().context("object")? {
        for (method, spec) in methods.as_object().context("methods")? {
            assert_eq!(
                spec["parameters"], official[path][method]["parameters"],
                "parameters of {method} {path} differ from pve-api-schema.json"
            );
        }
    }
    Ok(())
}

fn concrete_path(template: &str) -> String {
    template
        .replace("{node}", "pve1")
        .replace("{vmid}", "100")
        .replace("{storage}", "local")
        .replace("{upid}", "UPID:pve1:00001234:00ABCDEF:67400000:vzstart:100:root@pam:")
}

#[tokio::test]
async fn every_documented_parameter_is_known_and_no_other() -> Result<()> {
    let sim = Sim::start(&[]).await?;
    let embedded: Value = serde_json::from_str(EMBEDDED)?;
    let mut checked = 0;
    for (template, methods) in embedded.as_object().context("object")? {
        for (method, spec) in methods.as_object().context("methods")? {
            let properties = spec["parameters"]["properties"].as_object().cloned().unwrap_or_default();
            let path_params: Vec<&str> = ["node", "vmid", "storage", "upid"]
                .into_iter()
                .filter(|p| template.contains(&format!("{{{p}}}")))
                .collect();
            let url = sim.url(&concrete_path(template));
            for name in properties.keys().map(String::as_str).filter(|n| !path_params.contains(n)) {
                let name = name.replace("[n]", "0");
                // The undocumented parameter makes every request fail verification,
                // so no request here changes anything.
                let pairs = [(name.as_str(), "x"), (UNDOCUMENTED, "x")];
                let request = match method.as_str() {
                    "GET" => sim.client.get(&url).query(&pairs),
                    "DELETE" => sim.client.delete(&url).query(&pairs),
                    "POST" => sim.client.post(&url).form(&pairs),
                    "PUT" => sim.client.put(&url).form(&pairs),
                    other => panic!("unexpected method {other}"),
                };
                let reply = sim.send(request.header("Authorization", sim.sim.auth_header())).await?;
                assert_eq!(reply.status, 400, "{method} {template} with {name}: {}", reply.body);
                assert!(
                    reply.error(UNDOCUMENTED).contains("not defined in schema"),
                    "{method} {template} accepted an undocumented parameter: {}",
                    reply.body
                );
                assert!(
                    !reply.error(&name).contains("not defined in schema"),
                    "{method} {template} rejects its documented parameter {name}: {}",
                    reply.body
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "walked only {checked} parameters");
    Ok(())
}
