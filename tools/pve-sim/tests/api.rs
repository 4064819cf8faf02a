//! The API of pve-sim, endpoint by endpoint: successes and Proxmox's errors.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::common::{Sim, SshKey, DEBIAN};

#[tokio::test]
async fn authentication_tokens_tickets_and_csrf() -> Result<()> {
    let sim = Sim::start(&["--user", "root@pam:hunter22"]).await?;
    let version = sim.url("/version");

    let none = sim.send(sim.client.get(&version)).await?;
    assert_eq!((none.status, none.reason.as_str()), (401, "No ticket"));
    let wrong = sim.send(sim.client.get(&version).header("Authorization", "PVEAPIToken=root@pam!ci=wrong")).await?;
    assert_eq!(wrong.status, 401);
    assert_eq!(Sim::ok(sim.get("/version").await?)?["version"], "8.3.0");

    let ticket_url = sim.url("/access/ticket");
    let bad = sim.send(sim.client.post(&ticket_url).form(&[("username", "root@pam"), ("password", "nope")])).await?;
    assert_eq!((bad.status, bad.reason.as_str()), (401, "authentication failure"));
    let login = sim
        .send(sim.client.post(&ticket_url).form(&[("username", "root"), ("realm", "pam"), ("password", "hunter22")]))
        .await?;
    let login = Sim::ok(login)?;
    let ticket = login["ticket"].as_str().context("ticket")?;
    let csrf = login["CSRFPreventionToken"].as_str().context("csrf")?;
    assert!(ticket.starts_with("PVE:root@pam:"));
    let cookie = format!("PVEAuthCookie={ticket}");

    let read = sim.send(sim.client.get(&version).header("Cookie", &cookie)).await?;
    assert_eq!(read.status, 200);
    let put = sim.url(&sim.node_path("/lxc/100/config"));
    let no_csrf = sim.send(sim.client.put(&put).header("Cookie", &cookie).form(&[("description", "x")])).await?;
    assert_eq!((no_csrf.status, no_csrf.reason.as_str()), (401, "Permission denied - invalid csrf token"));
    let with_csrf = sim
        .send(
            sim.client
                .put(&put)
                .header("Cookie", &cookie)
                .header("CSRFPreventionToken", csrf)
                .form(&[("description", "x")]),
        )
        .await?;
    assert_eq!(with_csrf.status, 500, "authenticated, then refused for the missing CT: {}", with_csrf.body);
    assert_eq!(with_csrf.reason, "Configuration file 'nodes/pve1/lxc/100.conf' does not exist");
    Ok(())
}

#[tokio::test]
async fn node_cluster_and_storage_endpoints() -> Result<()> {
    let sim = Sim::start(&["--template", "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst"]).await?;
    let nodes = Sim::ok(sim.get("/nodes").await?)?;
    assert_eq!(nodes[0]["node"], "pve1");
    assert_eq!(nodes[0]["status"], "online");
    assert_eq!(nodes[0]["ssl_fingerprint"], sim.sim.fingerprint.as_str());

    assert_eq!(Sim::ok(sim.get("/cluster/nextid").await?)?, json!("100"));
    assert_eq!(Sim::ok(sim.get("/cluster/resources?type=vm").await?)?, json!([]));
    let kinds = Sim::ok(sim.get("/cluster/resources").await?)?;
    assert!(kinds.as_array().is_some_and(|all| all.iter().any(|r| r["type"] == "storage")));
    let bad_type = sim.get("/cluster/resources?type=disk").await?;
    assert!(bad_type.error("type").contains("enumeration"));

    let templates = Sim::ok(sim.get(&sim.node_path("/storage/local/content?content=vztmpl")).await?)?;
    let volids: Vec<&str> = templates.as_array().context("list")?.iter().filter_map(|t| t["volid"].as_str()).collect();
    assert!(volids.contains(&DEBIAN));
    assert!(volids.iter().any(|v| v.contains("alpine")));
    assert!(volids.iter().any(|v| v.contains("ubuntu-24.04")));
    let missing = sim.get(&sim.node_path("/storage/nfs/content")).await?;
    assert_eq!((missing.status, missing.reason.as_str()), (500, "storage 'nfs' does not exist"));

    sim.create(100, &[("rootfs", "local-lvm:8")]).await?;
    let used = sim.get("/cluster/nextid?vmid=100").await?;
    assert_eq!((used.status, used.error("vmid")), (400, "VM 100 already exists"));
    assert_eq!(Sim::ok(sim.get("/cluster/nextid").await?)?, json!("101"));
    assert_eq!(Sim::ok(sim.get("/cluster/nextid?vmid=105").await?)?, json!("105"));
    let vms = Sim::ok(sim.get("/cluster/resources?type=vm").await?)?;
    assert_eq!((vms[0]["id"].as_str(), vms[0]["type"].as_str()), (Some("lxc/100"), Some("lxc")));
    let disks = Sim::ok(sim.get(&sim.node_path("/storage/local-lvm/content")).await?)?;
    assert_eq!(disks[0]["volid"], "local-lvm:vm-100-disk-0");

    let unknown = sim.get("/nodes/pve1/qemu").await?;
    assert_eq!((unknown.status, unknown.reason.as_str()), (501, "Method 'GET /nodes/pve1/qemu' not implemented"));
    assert!(unknown.body["message"].as_str().is_some_and(|m| m.contains("not implemented")));
    let wrong_method = sim.put("/version", &[]).await?;
    assert_eq!(wrong_method.reason, "Method 'PUT /version' not implemented");
    let other_node = sim.get("/nodes/pve9/lxc").await?;
    assert!(other_node.reason.contains("hostname lookup 'pve9' failed"));
    Ok(())
}

#[tokio::test]
async fn create_verifies_parameters_like_proxmox() -> Result<()> {
    let sim = Sim::start(&[]).await?;
    let lxc = sim.node_path("/lxc");
    let create = |extra: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> = vec![("vmid", "110".into()), ("ostemplate", DEBIAN.into())];
        form.extend(extra);
        form
    };
    // (extra form fields, expected status, parameter named in `errors`, its message)
    type Case = (Vec<(&'static str, String)>, u16, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (vec![("colour", "red".into())], 400, "colour", "not defined in schema"),
        (vec![("net0", "bridge=vmbr0,ip=dhcp".into())], 400, "net0", "name: property is missing"),
        (vec![("net0", "name=eth0,ip=192.0.2.10/24".into())], 400, "net0", "outside 127.0.0.0/8"),
        (vec![("rootfs", "local-lvm:8,size=big".into())], 400, "rootfs", "size"),
        (vec![("features", "nesting=perhaps".into())], 400, "features", "nesting"),
        (vec![("tags", "bad$tag".into())], 400, "tags", "invalid characters in tag"),
        (
            vec![("ssh-public-keys", "ssh-ed25519 notbase64".into())],
            400,
            "ssh-public-keys",
            "unable to parse ssh public key",
        ),
        (vec![("memory", "8".into())], 400, "memory", "minimum value of 16"),
        (vec![("hostname", "under_score".into())], 400, "hostname", "valid DNS name"),
    ];
    for (extra, status, key, text) in cases {
        let form = create(extra.clone());
        let reply = sim.post(&lxc, &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>()).await?;
        assert_eq!(reply.status, status, "{extra:?}: {}", reply.body);
        assert_eq!(reply.reason, "Parameter verification failed.");
        assert!(reply.error(key).contains(text), "{extra:?}: {}", reply.body);
    }
    let missing = sim.post(&lxc, &[("vmid", "110")]).await?;
    assert_eq!(missing.error("ostemplate"), "property is missing and it is not optional");
    let no_template = sim.post(&lxc, &[("vmid", "110"), ("ostemplate", "local:vztmpl/nope.tar.zst")]).await?;
    assert_eq!(
        (no_template.status, no_template.reason.as_str()),
        (500, "volume 'local:vztmpl/nope.tar.zst' does not exist")
    );
    let keyctl = sim.post(&lxc, &[("vmid", "110"), ("ostemplate", DEBIAN), ("features", "nesting=1,keyctl=1")]).await?;
    assert_eq!(keyctl.status, 403);
    assert_eq!(
        keyctl.reason,
        "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)"
    );

    // JSON bodies are accepted like form bodies.
    let body = json!({"vmid": 110, "ostemplate": DEBIAN, "hostname": "json-ct", "features": "nesting=1",
        "tags": "infrahaus;web", "description": "infrahaus.io/uid=abc", "unprivileged": true, "memory": 256});
    let reply =
        sim.send(sim.client.post(sim.url(&lxc)).header("Authorization", sim.sim.auth_header()).json(&body)).await?;
    sim.run_task(reply).await?;
    let config = Sim::ok(sim.get(&sim.node_path("/lxc/110/config")).await?)?;
    assert_eq!(config["hostname"], "json-ct");
    assert_eq!(config["tags"], "infrahaus;web");
    assert_eq!(config["description"], "infrahaus.io/uid=abc");
    assert_eq!(config["features"], "nesting=1");
    assert_eq!(config["memory"], 256);
    assert_eq!(config["unprivileged"], 1);
    assert!(config["digest"].as_str().is_some_and(|d| d.len() == 40));

    let again = sim.post(&lxc, &[("vmid", "110"), ("ostemplate", DEBIAN)]).await?;
    assert_eq!((again.status, again.reason.as_str()), (500, "CT 110 already exists on node 'pve1'"));
    Ok(())
}

#[tokio::test]
async fn lifecycle_locks_and_power_errors() -> Result<()> {
    let sim = Sim::start(&["--task-duration", "vzcreate=700"]).await?;
    let key = SshKey::generate()?;
    let ct = |rest: &str| sim.node_path(&format!("/lxc/130{rest}"));
    let upid = Sim::ok(
        sim.post(
            &sim.node_path("/lxc"),
            &[
                ("vmid", "130"),
                ("ostemplate", DEBIAN),
                ("hostname", "life"),
                ("description", "made by the lifecycle test"),
                ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
                ("ssh-public-keys", &key.public),
            ],
        )
        .await?,
    )?;
    let upid = upid.as_str().context("upid")?.to_string();
    assert!(upid.starts_with("UPID:pve1:") && upid.ends_with(":vzcreate:130:root@pam!ci:"), "{upid}");
    let during = Sim::ok(sim.get(&ct("/status/current")).await?)?;
    assert_eq!((during["lock"].as_str(), during["status"].as_str()), (Some("create"), Some("stopped")));
    let config = Sim::ok(sim.get(&ct("/config")).await?)?;
    let keys: Vec<&str> = config.as_object().context("config")?.keys().map(String::as_str).collect();
    assert_eq!(keys, ["digest", "lock"], "until the worker ends the config holds the create lock alone: {config}");
    let locked = sim.post(&ct("/status/start"), &[]).await?;
    assert_eq!((locked.status, locked.reason.as_str()), (500, "CT is locked (create)"));
    let locked = sim.delete(&ct("")).await?;
    assert_eq!(locked.reason, "CT is locked (create)");
    assert_eq!(sim.wait_task(&upid).await?["exitstatus"], "OK");
    assert!(Sim::ok(sim.get(&ct("/status/current")).await?)?.get("lock").is_none());
    let config = Sim::ok(sim.get(&ct("/config")).await?)?;
    assert_eq!((config["description"].as_str(), config.get("lock")), (Some("made by the lifecycle test"), None));

    assert_eq!(Sim::ok(sim.get(&ct("/interfaces")).await?)?, json!(null));
    let not_running = sim.post(&ct("/status/stop"), &[]).await?;
    assert_eq!(not_running.reason, "CT 130 not running");
    let not_running = sim.post(&ct("/status/shutdown"), &[]).await?;
    assert_eq!(not_running.reason, "CT 130 not running");

    sim.start_ct(130).await?;
    let running = Sim::ok(sim.get(&ct("/status/current")).await?)?;
    assert_eq!(running["status"], "running");
    assert!(running["mem"].as_u64().is_some_and(|m| m > 0));
    let already = sim.post(&ct("/status/start"), &[]).await?;
    assert_eq!((already.status, already.reason.as_str()), (500, "CT 130 already running"));
    let interfaces = Sim::ok(sim.get(&ct("/interfaces")).await?)?;
    let eth0 = interfaces.as_array().and_then(|i| i.iter().find(|i| i["name"] == "eth0")).context("eth0")?;
    let ip = eth0["ip-addresses"][0]["ip-address"].as_str().context("ip")?.to_string();
    assert_eq!(ip, format!("{}.2", sim.pool_prefix));
    assert_eq!(eth0["inet"], format!("{ip}/24"));
    assert!(eth0["hardware-address"].as_str().is_some_and(|h| h.starts_with("BC:24:11:")));
    let list = Sim::ok(sim.get(&sim.node_path("/lxc")).await?)?;
    assert_eq!((list[0]["vmid"].as_u64(), list[0]["status"].as_str()), (Some(130), Some("running")));

    let refuse = sim.delete(&ct("")).await?;
    assert_eq!((refuse.status, refuse.reason.as_str()), (500, "unable to destroy CT 130 - container is running"));

    let reboot = sim.run_task(sim.post(&ct("/status/reboot"), &[]).await?).await?;
    assert_eq!(reboot.last().map(String::as_str), Some("TASK OK"));
    let out = key.ssh(&ip, "hostname").await?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "life");
    sim.run_task(sim.post(&ct("/status/shutdown"), &[("timeout", "5")]).await?).await?;
    sim.start_ct(130).await?;

    sim.run_task(sim.delete(&ct("?force=1&purge=1&destroy-unreferenced-disks=1")).await?).await?;
    let gone = sim.get(&ct("/status/current")).await?;
    assert_eq!(gone.reason, "Configuration file 'nodes/pve1/lxc/130.conf' does not exist");
    Ok(())
}

#[tokio::test]
async fn config_update_honours_digest_delete_and_locks() -> Result<()> {
    let sim = Sim::start(&["--lock-timeout-ms", "300"]).await?;
    sim.create(140, &[("description", "first"), ("tags", "a")]).await?;
    let path = sim.node_path("/lxc/140/config");
    let config = Sim::ok(sim.get(&path).await?)?;
    let digest = config["digest"].as_str().context("digest")?.to_string();

    Sim::ok(sim.put(&path, &[("description", "second"), ("delete", "tags"), ("digest", &digest)]).await?)?;
    let updated = Sim::ok(sim.get(&path).await?)?;
    assert_eq!(updated["description"], "second");
    assert!(updated.get("tags").is_none());

    let stale = sim.put(&path, &[("description", "third"), ("digest", &digest)]).await?;
    assert_eq!(
        (stale.status, stale.reason.as_str()),
        (500, "detected modified configuration - file changed by other user? Try again.")
    );
    let bad = sim.put(&path, &[("delete", "nonsense")]).await?;
    assert_eq!(bad.status, 400);
    let bad = sim.put(&path, &[("cores", "0")]).await?;
    assert!(bad.error("cores").contains("minimum value of 1"));
    let outside = sim.put(&path, &[("net0", "name=eth0,ip=10.1.1.1/24")]).await?;
    assert!(outside.error("net0").contains("outside 127.0.0.0/8"));

    Sim::ok(sim.admin("hold-lock", json!({"vmid": 140, "ms": 1500})).await?)?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let timeout = sim.put(&path, &[("description", "fourth")]).await?;
    assert_eq!(
        (timeout.status, timeout.reason.as_str()),
        (500, "can't lock file '/run/lock/lxc/pve-config-140.lock' - got timeout")
    );
    let upid = Sim::ok(sim.post(&sim.node_path("/lxc/140/status/start"), &[]).await?)?;
    let status = sim.wait_task(upid.as_str().context("upid")?).await?;
    assert_eq!(status["exitstatus"], "can't lock file '/run/lock/lxc/pve-config-140.lock' - got timeout");
    Ok(())
}

#[tokio::test]
async fn repeated_keys_are_lists_for_list_formats_and_type_errors_elsewhere() -> Result<()> {
    let sim = Sim::start(&[]).await?;
    sim.create(145, &[("tags", "a"), ("tags", "B"), ("tags", "a"), ("description", "first")]).await?;
    let path = sim.node_path("/lxc/145/config");
    let config = Sim::ok(sim.get(&path).await?)?;
    assert_eq!(config["tags"], "a;b", "joined, then normalized like get_unique_tags: {config}");

    Sim::ok(sim.put(&path, &[("tags", "web"), ("tags", "DB"), ("tags", "web")]).await?)?;
    assert_eq!(Sim::ok(sim.get(&path).await?)?["tags"], "db;web");
    let json_tags = json!({"tags": ["x", "Y", "x"]});
    let reply = sim
        .send(sim.client.put(sim.url(&path)).header("Authorization", sim.sim.auth_header()).json(&json_tags))
        .await?;
    Sim::ok(reply)?;
    assert_eq!(Sim::ok(sim.get(&path).await?)?["tags"], "x;y", "a JSON array is joined the same way");
    Sim::ok(sim.put(&path, &[("delete", "tags"), ("delete", "description")]).await?)?;
    let config = Sim::ok(sim.get(&path).await?)?;
    assert!(config.get("tags").is_none() && config.get("description").is_none(), "{config}");

    let twice = sim.put(&path, &[("hostname", "a"), ("hostname", "b")]).await?;
    assert_eq!((twice.status, twice.reason.as_str()), (400, "Parameter verification failed."));
    assert_eq!(twice.error("hostname"), "type check ('string') failed - got ARRAY", "{}", twice.body);
    let create = [("vmid", "146"), ("ostemplate", DEBIAN), ("hostname", "a"), ("hostname", "b")];
    let twice = sim.post(&sim.node_path("/lxc"), &create).await?;
    assert_eq!((twice.status, twice.error("hostname")), (400, "type check ('string') failed - got ARRAY"));

    let query = sim.get("/cluster/resources?type=vm&type=node").await?;
    assert_eq!((query.status, query.error("type")), (400, "type check ('string') failed - got ARRAY"));
    let tasks = Sim::ok(sim.get(&sim.node_path("/tasks?statusfilter=ok&statusfilter=error")).await?)?;
    assert_eq!(tasks[0]["type"], "vzcreate", "a repeated list key in a query is joined too: {tasks}");
    let url = sim.url(&format!("{path}?description=query"));
    let both = sim.client.put(url).header("Authorization", sim.sim.auth_header()).form(&[("description", "body")]);
    Sim::ok(sim.send(both).await?)?;
    assert_eq!(Sim::ok(sim.get(&path).await?)?["description"], "query", "a query key replaces the body's");
    Ok(())
}

#[tokio::test]
async fn sim_state_counts_proxmox_api_requests() -> Result<()> {
    let sim = Sim::start(&["--user", "root@pam:hunter22"]).await?;
    let requests = || async { Ok::<_, anyhow::Error>(sim.admin_state().await?["requests"].clone()) };
    let zero = json!({"total": 0, "reads": 0, "writes": 0, "logins": 0,
        "by_method": {"GET": 0, "POST": 0, "PUT": 0, "DELETE": 0}});
    assert_eq!(requests().await?, zero);
    Sim::ok(sim.admin("reset", json!({})).await?)?;
    assert_eq!(requests().await?, zero, "neither /sim/state nor other /sim/* calls count");

    Sim::ok(sim.get("/version").await?)?;
    let login = sim.client.post(sim.url("/access/ticket")).form(&[("username", "root@pam"), ("password", "hunter22")]);
    Sim::ok(sim.send(login).await?)?;
    let counts = requests().await?;
    assert_eq!((counts["total"].clone(), counts["reads"].clone()), (json!(2), json!(1)));
    assert_eq!((counts["writes"].clone(), counts["logins"].clone()), (json!(0), json!(1)), "a login writes nothing");
    assert_eq!(counts["by_method"]["POST"], 1);

    let missing = sim.put(&sim.node_path("/lxc/100/config"), &[("description", "x")]).await?;
    assert_eq!(missing.status, 500);
    assert_eq!(sim.get("/nodes/pve1/qemu").await?.status, 501);
    let counts = requests().await?;
    assert_eq!(
        counts,
        json!({"total": 4, "reads": 2, "writes": 1, "logins": 1,
            "by_method": {"GET": 2, "POST": 1, "PUT": 1, "DELETE": 0}}),
        "every request counts, whatever its answer"
    );
    Ok(())
}

#[tokio::test]
async fn a_running_container_takes_hotpluggable_changes_and_keeps_the_rest_pending() -> Result<()> {
    let sim = Sim::start(&[]).await?;
    sim.create(150, &[("rootfs", "local:4"), ("nameserver", "127.0.0.53"), ("tags", "Web;infrahaus")]).await?;
    sim.start_ct(150).await?;
    let ct = |rest: &str| sim.node_path(&format!("/lxc/150{rest}"));
    let limits = |state: &Value| state["containers"][0]["limits"].clone();

    let config = Sim::ok(sim.get(&ct("/config")).await?)?;
    assert_eq!(config["tags"], "infrahaus;web", "tags sorted, lower-cased, joined by ';'");
    let change = [
        ("memory", "1024"),
        ("swap", "256"),
        ("cores", "2"),
        ("nameserver", "127.0.0.54"),
        ("rootfs", "local:vm-150-disk-0,size=40G"),
        ("tags", "db;web;DB"),
    ];
    Sim::ok(sim.put(&ct("/config"), &change).await?)?;
    let current = Sim::ok(sim.get(&ct("/config?current=1")).await?)?;
    assert_eq!(
        (current["memory"].clone(), current["swap"].clone(), current["cores"].clone()),
        (json!(1024), json!(256), json!(2))
    );
    assert_eq!(current["tags"], "db;web");
    assert_eq!(current["nameserver"], "127.0.0.53", "nameserver waits for the next start");
    assert_eq!(current["rootfs"], "local:vm-150-disk-0,size=4G");
    let with_pending = Sim::ok(sim.get(&ct("/config")).await?)?;
    assert_eq!(with_pending["nameserver"], "127.0.0.54", "GET config shows pending values");
    let pending = Sim::ok(sim.get(&ct("/pending")).await?)?;
    let entry = |key: &str| pending.as_array().and_then(|l| l.iter().find(|e| e["key"] == key)).cloned();
    assert_eq!(entry("nameserver"), Some(json!({"key": "nameserver", "value": "127.0.0.53", "pending": "127.0.0.54"})));
    assert_eq!(entry("memory"), Some(json!({"key": "memory", "value": 1024})));
    let state = sim.admin_state().await?;
    assert_eq!(limits(&state)["memory"], "1024", "the running guest has the new memory: {state}");
    assert_eq!(limits(&state)["disk_bytes"], 4u64 << 30, "a size= through config resizes nothing");

    let shrink = sim.put(&ct("/resize"), &[("disk", "rootfs"), ("size", "2G")]).await?;
    assert_eq!((shrink.status, shrink.reason.as_str()), (500, "unable to shrink disk size"));
    let same = sim.put(&ct("/resize"), &[("disk", "rootfs"), ("size", "4G")]).await?;
    assert_eq!(same.reason, "disk is already at specified size");
    sim.run_task(sim.put(&ct("/resize"), &[("disk", "rootfs"), ("size", "+2G")]).await?).await?;
    assert_eq!(limits(&sim.admin_state().await?)["disk_bytes"], 6u64 << 30);
    let current = Sim::ok(sim.get(&ct("/config?current=1")).await?)?;
    assert_eq!(current["rootfs"], "local:vm-150-disk-0,size=6G");

    Sim::ok(sim.put(&ct("/config"), &[("revert", "rootfs")]).await?)?;
    sim.run_task(sim.post(&ct("/status/reboot"), &[]).await?).await?;
    let current = Sim::ok(sim.get(&ct("/config?current=1")).await?)?;
    assert_eq!(current["nameserver"], "127.0.0.54", "a reboot applies what was pending");
    assert_eq!(
        Sim::ok(sim.get(&ct("/pending")).await?)?
            .as_array()
            .map(|l| l.iter().filter(|e| e.get("pending").is_some()).count()),
        Some(0)
    );
    let status = Sim::ok(sim.get(&ct("/status/current")).await?)?;
    assert_eq!(status["status"], "running");

    sim.run_task(sim.post(&ct("/status/shutdown"), &[("timeout", "5"), ("forceStop", "1")]).await?).await?;
    assert_eq!(Sim::ok(sim.get(&ct("/status/current")).await?)?["status"], "stopped");
    Sim::ok(sim.put(&ct("/config"), &[("nameserver", "127.0.0.55")]).await?)?;
    let current = Sim::ok(sim.get(&ct("/config?current=1")).await?)?;
    assert_eq!(current["nameserver"], "127.0.0.55", "a stopped container takes everything at once");
    let nothing = sim.put(&ct("/config"), &[]).await?;
    assert_eq!((nothing.status, nothing.reason.as_str()), (500, "no options specified"));
    let required = sim.put(&ct("/config"), &[("delete", "memory")]).await?;
    assert_eq!(required.reason, "unable to delete required option 'memory'");
    Ok(())
}

#[tokio::test]
async fn task_list_status_log_and_stop() -> Result<()> {
    let sim = Sim::start(&[]).await?;
    let create_log = sim.create(150, &[("hostname", "tasks")]).await?;
    assert_eq!(create_log.last().map(String::as_str), Some("TASK OK"));
    assert!(create_log
        .iter()
        .any(|l| l == "Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ..."));

    Sim::ok(sim.admin("task-duration", json!({"type": "vzstart", "ms": 30000})).await?)?;
    let upid = Sim::ok(sim.post(&sim.node_path("/lxc/150/status/start"), &[]).await?)?;
    let upid = upid.as_str().context("upid")?.to_string();

    let status = Sim::ok(sim.get(&sim.node_path(&format!("/tasks/{upid}/status"))).await?)?;
    let mut keys: Vec<&str> = status.as_object().context("object")?.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["id", "node", "pid", "pstart", "starttime", "status", "type", "upid", "user"]);
    assert_eq!(status["status"], "running");

    let tasks = |query: &str| {
        let path = sim.node_path(&format!("/tasks?{query}"));
        let sim = &sim;
        async move { Sim::ok(sim.get(&path).await?) }
    };
    let types = |list: serde_json::Value| -> Vec<String> {
        list.as_array()
            .map(|l| l.iter().filter_map(|t| t["type"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    assert_eq!(types(tasks("").await?), ["vzcreate"]);
    assert_eq!(types(tasks("source=active").await?), ["vzstart"]);
    assert_eq!(types(tasks("source=all").await?), ["vzstart", "vzcreate"]);
    assert_eq!(types(tasks("source=all&typefilter=vzcreate").await?), ["vzcreate"]);
    assert_eq!(types(tasks("source=all&vmid=999").await?), Vec::<String>::new());
    assert_eq!(types(tasks("source=all&limit=1&start=1").await?), ["vzcreate"]);
    let paged = sim.get(&sim.node_path("/tasks?source=all&limit=1")).await?;
    assert_eq!(paged.body["total"].as_u64(), Some(2));

    Sim::ok(sim.delete(&sim.node_path(&format!("/tasks/{upid}"))).await?)?;
    let stopped = sim.wait_task(&upid).await?;
    assert_eq!(stopped["exitstatus"], "interrupted by signal");
    assert_eq!(sim.task_log(&upid).await?.last().map(String::as_str), Some("TASK ERROR: interrupted by signal"));
    assert_eq!(types(tasks("errors=1").await?), ["vzstart"]);
    assert_eq!(types(tasks("statusfilter=ok").await?), ["vzcreate"]);

    let create_upid = tasks("typefilter=vzcreate").await?[0]["upid"].as_str().context("upid")?.to_string();
    let page = sim.get(&sim.node_path(&format!("/tasks/{create_upid}/log?start=2&limit=3"))).await?;
    assert_eq!(page.body["total"].as_u64(), Some(create_log.len() as u64));
    let numbers: Vec<u64> = page.data().as_array().context("lines")?.iter().filter_map(|l| l["n"].as_u64()).collect();
    assert_eq!(numbers, [3, 4, 5]);

    let bad = sim.get(&sim.node_path("/tasks/not-a-upid/status")).await?;
    assert_eq!(bad.status, 400);
    assert!(bad.error("upid").contains("unable to parse worker upid"));
    let unknown =
        sim.get(&sim.node_path("/tasks/UPID:pve1:00000001:00000001:00000001:vzstart:1:root@pam:/status")).await?;
    assert_eq!((unknown.status, unknown.reason.as_str()), (500, "no such task"));
    Ok(())
}

#[tokio::test]
async fn fault_injection_through_admin_api_and_flags() -> Result<()> {
    let sim = Sim::start(&["--fail-request", "GET ^/version$=1:500:flag failure"]).await?;
    let first = sim.get("/version").await?;
    assert_eq!((first.status, first.reason.as_str()), (500, "flag failure"));
    assert_eq!(sim.get("/version").await?.status, 200);

    Sim::ok(sim.admin("latency", json!({"path": "^/version$", "ms": 300})).await?)?;
    let started = Instant::now();
    assert_eq!(sim.get("/version").await?.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    Sim::ok(sim.admin("fail", json!({"method": "GET", "path": "^/cluster/nextid$", "count": 2, "status": 596, "message": "Connection timed out"})).await?)?;
    for _ in 0..2 {
        let failed = sim.get("/cluster/nextid").await?;
        assert_eq!((failed.status, failed.reason.as_str()), (596, "Connection timed out"));
    }
    assert_eq!(sim.get("/cluster/nextid").await?.status, 200);

    Sim::ok(
        sim.admin("task-fault", json!({"type": "vzcreate", "error": "unable to create CT 160 - no space left"}))
            .await?,
    )?;
    let upid = Sim::ok(sim.post(&sim.node_path("/lxc"), &[("vmid", "160"), ("ostemplate", DEBIAN)]).await?)?;
    let upid = upid.as_str().context("upid")?;
    assert_eq!(sim.wait_task(upid).await?["exitstatus"], "unable to create CT 160 - no space left");
    assert_eq!(
        sim.task_log(upid).await?.last().map(String::as_str),
        Some("TASK ERROR: unable to create CT 160 - no space left")
    );
    assert_eq!(sim.get(&sim.node_path("/lxc/160/config")).await?.status, 500, "a failed create leaves no CT");

    Sim::ok(sim.admin("task-fault", json!({"type": "vzcreate", "warnings": 2})).await?)?;
    let upid = Sim::ok(sim.post(&sim.node_path("/lxc"), &[("vmid", "161"), ("ostemplate", DEBIAN)]).await?)?;
    let upid = upid.as_str().context("upid")?;
    assert_eq!(sim.wait_task(upid).await?["exitstatus"], "WARNINGS: 2");
    assert_eq!(sim.task_log(upid).await?.last().map(String::as_str), Some("TASK WARNINGS: 2"));
    assert_eq!(sim.get(&sim.node_path("/lxc/161/config")).await?.status, 200);

    Sim::ok(sim.admin("drop-response", json!({"method": "POST", "path": "^/nodes/pve1/lxc$"})).await?)?;
    let lost = sim.post(&sim.node_path("/lxc"), &[("vmid", "162"), ("ostemplate", DEBIAN)]).await;
    assert!(lost.is_err(), "the answer is dropped: {lost:?}");
    let tasks = Sim::ok(sim.get(&sim.node_path("/tasks?vmid=162&typefilter=vzcreate&source=all")).await?)?;
    let upid = tasks[0]["upid"].as_str().context("the create ran although its answer was lost")?;
    assert_eq!(sim.wait_task(upid).await?["exitstatus"], "OK");
    assert_eq!(sim.get(&sim.node_path("/lxc/162/config")).await?.status, 200);

    let invalid = sim.admin("task-fault", json!({"type": "vzstart"})).await?;
    assert_eq!(invalid.status, 400);
    Sim::ok(sim.admin("reset", json!({})).await?)?;
    let started = Instant::now();
    sim.get("/version").await?;
    assert!(started.elapsed() < Duration::from_millis(300));
    Ok(())
}
