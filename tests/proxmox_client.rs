//! The Proxmox client against pve-sim: TLS verification, the envelope and error
//! shapes, and a guest's life from create to delete.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use infrahaus_operator::proxmox::{
    self, ApiToken, Backoff, Client, ClientConfig, CreateLxcParams, DeleteLxcOptions, Error, RequestRecord, Secret,
    TlsOptions, Upid,
};
use testbed::{PveSim, PveSimOptions};

const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";
const POLL: Duration = Duration::from_millis(100);
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

fn pinned(sim: &PveSim) -> TlsOptions {
    TlsOptions { fingerprint: Some(sim.fingerprint.clone()), ..Default::default() }
}

fn config(sim: &PveSim, tls: TlsOptions) -> ClientConfig {
    let mut config = ClientConfig::new(&sim.url, ApiToken::new(&sim.token_id, sim.token_secret.as_str()), tls);
    config.retry = Backoff {
        initial: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_elapsed: Duration::from_secs(10),
    };
    config
}

fn client(sim: &PveSim) -> Client {
    Client::new(config(sim, pinned(sim))).expect("client for pve-sim")
}

async fn sim_with(extra_args: &[&str]) -> Result<PveSim> {
    PveSim::start(PveSimOptions {
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
}

fn params(vmid: u32, hostname: &str) -> CreateLxcParams {
    CreateLxcParams {
        vmid,
        ostemplate: TEMPLATE.into(),
        hostname: hostname.into(),
        cores: Some(1),
        memory_mib: Some(128),
        swap_mib: Some(0),
        rootfs: Some(proxmox::rootfs("local-lvm", 1)),
        net0: Some(proxmox::net0(&proxmox::Net0::default())),
        password: Some(Secret::new("correct-horse-battery")),
        unprivileged: true,
        features: Some("nesting=1".into()),
        tags: Some(proxmox::render_tags(&["web".to_string()])),
        description: Some(proxmox::description_with_marker("uid-1", None)),
        ..Default::default()
    }
}

/// The full chain of an error, for assertions on its cause.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[tokio::test]
async fn tls_pin_and_ca_bundle_are_honoured() -> Result<()> {
    let sim = sim_with(&[]).await?;

    let bare_hex = sim.fingerprint.replace(':', "").to_lowercase();
    for tls in [
        pinned(&sim),
        TlsOptions { fingerprint: Some(bare_hex), ..Default::default() },
        TlsOptions { ca_bundle: Some(sim.cert_pem.clone()), ..Default::default() },
        TlsOptions {
            ca_bundle: Some(sim.cert_pem.clone()),
            fingerprint: Some(sim.fingerprint.clone()),
            ..Default::default()
        },
        TlsOptions { insecure_skip_verify: true, ..Default::default() },
    ] {
        let version = Client::new(config(&sim, tls.clone()))?.version().await;
        assert!(version.is_ok(), "{tls:?}: {:?}", version.err().map(|e| chain(&e)));
        assert!(!version?.version.is_empty());
    }

    let wrong_pin = "00:".repeat(31) + "00";
    for (tls, cause) in [
        (TlsOptions { fingerprint: Some(wrong_pin), ..Default::default() }, "is pinned"),
        (TlsOptions::default(), "certificate"),
    ] {
        let err = Client::new(config(&sim, tls.clone()))?.version().await.expect_err("rejected");
        assert!(matches!(err, Error::Tls { .. }), "{tls:?}: {}", chain(&err));
        assert!(!err.is_transient(), "{tls:?}: a certificate problem is not retried");
        assert_eq!(err.metric_label(), "tls");
        assert!(chain(&err).contains(cause), "{tls:?}: {}", chain(&err));
    }
    Ok(())
}

#[tokio::test]
async fn a_rejected_token_is_permanent_and_not_revealed() -> Result<()> {
    let sim = sim_with(&[]).await?;
    let mut config = config(&sim, pinned(&sim));
    config.token = ApiToken::new(&sim.token_id, "not-the-secret-0000");
    let err = Client::new(config)?.version().await.expect_err("rejected");
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(!err.is_transient());
    assert!(!chain(&err).contains("not-the-secret-0000"));
    Ok(())
}

#[tokio::test]
async fn a_guest_lives_from_create_to_delete() -> Result<()> {
    let sim = sim_with(&[]).await?;
    let records: Arc<Mutex<Vec<RequestRecord>>> = Arc::default();
    let mut config = config(&sim, pinned(&sim));
    let sink = records.clone();
    config.observer = Some(Arc::new(move |r: &RequestRecord| sink.lock().expect("records").push(r.clone())));
    let pve = Client::new(config)?;
    let node = sim.node.as_str();

    let vmid = pve.next_id().await?;
    assert!(vmid >= 100);
    let upid = pve.create_lxc(node, &params(vmid, "life-1")).await?;
    assert_eq!(upid.node(), node);
    assert_eq!(upid.task_type(), "vzcreate");
    assert_eq!(upid.id(), vmid.to_string());
    let outcome = pve.wait_task(&upid, POLL, TASK_TIMEOUT).await?;
    assert_eq!(outcome.warnings, 0);

    let log = pve.task_log(&upid, 0, 1000).await?;
    let fingerprints = proxmox::host_key_fingerprints(log.lines.iter().map(|l| l.t.as_str()));
    assert!(!fingerprints.is_empty(), "create log names host keys: {:?}", log.lines);

    let config = pve.lxc_config(node, vmid).await?;
    assert_eq!(config.hostname.as_deref(), Some("life-1"));
    assert!(
        proxmox::is_owned_by(config.description.as_deref(), config.tags.as_deref(), "uid-1"),
        "{:?}",
        config.description
    );
    let tags = config.tags.as_deref().unwrap_or_default();
    assert!(tags.split(';').any(|tag| tag == proxmox::MANAGED_TAG), "{tags:?}");
    assert_eq!(config.memory, Some(128));
    assert_eq!(config.unprivileged, Some(true));
    assert!(config.lock.is_none());
    assert!(config.digest.is_some());

    let status = pve.wait_unlocked(node, vmid, POLL, Duration::from_secs(10)).await?;
    assert!(!status.is_running());
    assert_eq!(pve.lxc_interfaces(node, vmid).await?, None, "no interfaces while stopped");

    let start = pve.start_lxc(node, vmid).await?;
    pve.wait_task(&start, POLL, TASK_TIMEOUT).await?;
    assert!(pve.lxc_status(node, vmid).await?.is_running());
    let interfaces = pve.lxc_interfaces(node, vmid).await?.expect("interfaces while running");
    let address = proxmox::eth0_ipv4(&interfaces).expect("eth0 has an address");
    assert!(address.is_loopback(), "pve-sim hands out loopback addresses, got {address}");

    let stop = pve.stop_lxc(node, vmid).await?;
    pve.wait_task(&stop, POLL, TASK_TIMEOUT).await?;
    assert!(!pve.lxc_status(node, vmid).await?.is_running());

    let tasks = pve.list_tasks(node, Some(vmid), Some("vzcreate")).await?;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].upid.parse::<Upid>()?, upid);

    let options = DeleteLxcOptions { purge: true, destroy_unreferenced_disks: true, force: false };
    let delete = pve.delete_lxc(node, vmid, options).await?;
    pve.wait_task(&delete, POLL, TASK_TIMEOUT).await?;
    let gone = pve.lxc_config(node, vmid).await.expect_err("guest is gone");
    assert!(gone.is_not_found(), "{gone}");
    assert!(!gone.is_transient());

    let records = records.lock().expect("records");
    assert!(records.iter().any(|r| r.endpoint == "/nodes/{node}/lxc/{vmid}/config" && r.status == Some(200)));
    assert!(records.iter().any(|r| r.endpoint == "/nodes/{node}/tasks/{upid}/status" && r.method == "GET"));
    assert!(records.iter().all(|r| !r.endpoint.contains(&vmid.to_string())), "endpoints are templates");
    Ok(())
}

#[tokio::test]
async fn parameter_errors_and_taken_vmids_are_recognised() -> Result<()> {
    let sim = sim_with(&[]).await?;
    let pve = client(&sim);
    let node = sim.node.as_str();

    let mut too_small = params(200, "small");
    too_small.memory_mib = Some(8);
    let err = pve.create_lxc(node, &too_small).await.expect_err("rejected");
    let Error::Api { status, errors, .. } = &err else { panic!("expected an API error, got {err}") };
    assert_eq!(*status, 400);
    assert!(errors.contains_key("memory"), "{errors:?}");
    assert!(err.to_string().contains("memory:"), "{err}");
    assert!(!err.is_transient());
    assert!(!err.to_string().contains("correct-horse-battery"), "{err}");

    let upid = pve.create_lxc(node, &params(201, "first")).await?;
    pve.wait_task(&upid, POLL, TASK_TIMEOUT).await?;
    let err = pve.create_lxc(node, &params(201, "second")).await.expect_err("taken");
    assert!(err.is_already_exists(), "{err}");
    assert!(!err.is_transient());
    assert_eq!(err.metric_label(), "already_exists");
    Ok(())
}

#[tokio::test]
async fn failed_tasks_carry_their_log_and_warnings_are_success() -> Result<()> {
    let sim =
        sim_with(&["--fail-task", "vzcreate=unable to create CT 300 - simulated failure", "--warn-task", "vzstart=2"])
            .await?;
    let pve = client(&sim);
    let node = sim.node.as_str();

    let upid = pve.create_lxc(node, &params(300, "doomed")).await?;
    let err = pve.wait_task(&upid, POLL, TASK_TIMEOUT).await.expect_err("task fails");
    let Error::TaskFailed { exitstatus, log_tail, .. } = &err else { panic!("expected a task failure, got {err}") };
    assert!(exitstatus.contains("simulated failure"), "{exitstatus}");
    assert!(!log_tail.is_empty() && log_tail.len() <= 10, "{log_tail:?}");
    assert!(err.to_string().contains("simulated failure"), "{err}");
    assert!(!err.is_transient());

    let upid = pve.create_lxc(node, &params(301, "warned")).await?;
    pve.wait_task(&upid, POLL, TASK_TIMEOUT).await?;
    let start = pve.start_lxc(node, 301).await?;
    let outcome = pve.wait_task(&start, POLL, TASK_TIMEOUT).await?;
    assert_eq!(outcome.warnings, 2, "{outcome:?}");
    Ok(())
}

#[tokio::test]
async fn lock_timeouts_are_retried_but_other_write_failures_are_not() -> Result<()> {
    let sim = sim_with(&[
        "--fail-request",
        "POST ^/nodes/pve1/lxc$=2:500:can't lock file '/run/lock/lxc/pve-config-400.lock' - got timeout",
        "--fail-request",
        "POST ^/nodes/pve1/lxc/400/status/start$=1:500:Internal Server Error",
        "--fail-request",
        "GET ^/nodes/pve1/lxc/400/status/current$=2:596:Connection timed out",
    ])
    .await?;
    let records: Arc<Mutex<Vec<RequestRecord>>> = Arc::default();
    let mut config = config(&sim, pinned(&sim));
    let sink = records.clone();
    config.observer = Some(Arc::new(move |r: &RequestRecord| sink.lock().expect("records").push(r.clone())));
    let pve = Client::new(config)?;
    let node = sim.node.as_str();

    let upid = pve.create_lxc(node, &params(400, "busy")).await?;
    pve.wait_task(&upid, POLL, TASK_TIMEOUT).await?;
    let creates: Vec<Option<u16>> = records
        .lock()
        .expect("records")
        .iter()
        .filter(|r| r.method == "POST" && r.endpoint == "/nodes/{node}/lxc")
        .map(|r| r.status)
        .collect();
    assert_eq!(creates, vec![Some(500), Some(500), Some(200)]);

    let err = pve.start_lxc(node, 400).await.expect_err("not retried");
    assert_eq!(err.status(), Some(500));
    assert!(err.is_transient(), "the caller may retry after checking the guest");

    let status = pve.lxc_status(node, 400).await?;
    assert!(!status.is_running());
    let reads: Vec<Option<u16>> = records
        .lock()
        .expect("records")
        .iter()
        .filter(|r| r.endpoint == "/nodes/{node}/lxc/{vmid}/status/current")
        .map(|r| r.status)
        .collect();
    assert_eq!(reads, vec![Some(596), Some(596), Some(200)]);
    Ok(())
}
