//! Finalize: discover application services, listening ports and credentials;
//! write them to status and to the Secret `<name>-credentials`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};

use super::super::job::Job;
use crate::crd::{conditions::reasons, ListeningPort, ObjectRef, PortProtocol};
use crate::discovery::{self, Protocol};
use crate::error::Error;
use crate::k8s::FIELD_MANAGER;

const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) async fn run(job: &mut Job<'_>) -> Result<(), Error> {
    let session = job.ssh_recorded().await?;

    let services = session.exec_capture(discovery::SERVICES_COMMAND, DISCOVERY_TIMEOUT).await?;
    let tcp = session.exec_capture(discovery::TCP_PORTS_COMMAND, DISCOVERY_TIMEOUT).await?;
    let udp = session.exec_capture(discovery::UDP_PORTS_COMMAND, DISCOVERY_TIMEOUT).await?;
    let credentials = session.exec_capture(&discovery::credentials_command(), DISCOVERY_TIMEOUT).await?;
    if !credentials.status.success() {
        return Err(Error::permanent(
            reasons::FAILED,
            format!("could not read /etc/infrahaus/credentials: {}", credentials.stderr.trim()),
        ));
    }

    job.status.services = discovery::parse_running_services(&services);
    job.status.listening_ports = discovery::parse_listening_ports(&tcp.stdout, &udp.stdout)
        .into_iter()
        .map(|p| ListeningPort {
            port: i32::from(p.port),
            protocol: match p.protocol {
                Protocol::Tcp => PortProtocol::Tcp,
                Protocol::Udp => PortProtocol::Udp,
            },
            process: Some(p.process),
        })
        .collect();

    let found = discovery::parse_credentials(&credentials.stdout);
    for skipped in &found.skipped {
        tracing::warn!(file = %skipped.name, reason = %skipped.reason, "credential file skipped");
    }
    let secret_name = format!("{}-credentials", job.name);
    write_credentials(job, &secret_name, found.files).await?;
    job.status.credentials_secret_ref = Some(ObjectRef { name: secret_name });
    job.progress(
        60,
        format!("Found {} services, {} listening ports", job.status.services.len(), job.status.listening_ports.len()),
    )
    .await?;
    Ok(())
}

async fn write_credentials(job: &Job<'_>, name: &str, files: BTreeMap<String, Vec<u8>>) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(job.ctx.client.clone(), &job.namespace);
    let secret = Secret {
        metadata: job.owned_metadata(name),
        data: Some(files.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let mut value =
        serde_json::to_value(&secret).map_err(|e| Error::transient(format!("encode Secret {name}: {e}")))?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    secrets.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value)).await?;
    Ok(())
}
