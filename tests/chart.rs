//! The Helm chart: it lints, its values are validated, its output is
//! accepted by a real API server (server-side dry-run), its CRDs are the
//! repository's, and its RBAC is enough: the controller, holding nothing but
//! a token of the chart's ServiceAccount, takes a Container to Ready and
//! deletes it again, cluster-wide and in a single namespace with leader
//! election.

use crate::support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use infrahaus_operator::crd::{Container, Phase};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde::Deserialize as _;
use serde_json::{json, Value};
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/infrahaus-operator")
}

/// `HELM_BIN` (set by hack/test), or the binary `tools/helm.sh` installs or
/// finds in its cache.
fn helm_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("HELM_BIN") {
            return PathBuf::from(path);
        }
        let script = repo_root().join("tools/helm.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run tools/helm.sh");
        assert!(out.status.success(), "tools/helm.sh failed ({})", out.status);
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn helm(args: &[&str]) -> Result<Output> {
    Command::new(helm_bin())
        .args(args)
        .env("HELM_CACHE_HOME", std::env::temp_dir().join("infrahaus-helm/cache"))
        .env("HELM_CONFIG_HOME", std::env::temp_dir().join("infrahaus-helm/config"))
        .env("HELM_DATA_HOME", std::env::temp_dir().join("infrahaus-helm/data"))
        .output()
        .context("run helm")
}

/// `helm template` of the chart as `release` in `namespace` with `--set`
/// values; `extra` adds flags such as `--include-crds` or `--show-only`.
fn render(release: &str, namespace: &str, sets: &[&str], extra: &[&str]) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let out = helm(&args)?;
    if !out.status.success() {
        bail!("helm template {sets:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The objects of a multi-document YAML stream.
fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// `kubectl apply --server-side` of a manifest stream, optionally as a
/// server-side dry-run.
fn kubectl_apply(kubeconfig: &Path, manifests: &str, dry_run: bool) -> Result<String> {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    file.write_all(manifests.as_bytes())?;
    let mut cmd = Command::new("kubectl");
    cmd.args(["apply", "--server-side", "--force-conflicts", "--field-manager", "helm-chart-tests", "-f"])
        .arg(file.path())
        .arg("--kubeconfig")
        .arg(kubeconfig);
    if dry_run {
        cmd.arg("--dry-run=server");
    }
    let out = cmd.output().context("run kubectl")?;
    if !out.status.success() {
        bail!("kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn chart_crds_are_the_repository_crds() {
    let names = |dir: PathBuf| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let repo_crds = repo_root().join("crds");
    let chart_crds = chart_dir().join("crds");
    let fix = "copy them with `cp crds/*.yaml charts/infrahaus-operator/crds/`";
    assert_eq!(
        names(repo_crds.clone()),
        names(chart_crds.clone()),
        "the chart's crds/ holds other files than crds/; {fix}"
    );
    for name in names(repo_crds.clone()) {
        let repo = std::fs::read(repo_crds.join(&name)).expect("read repository CRD");
        let chart = std::fs::read(chart_crds.join(&name)).expect("read chart CRD");
        assert!(repo == chart, "charts/infrahaus-operator/crds/{name} differs from crds/{name}; {fix}");
    }
}

#[test]
fn helm_lint_passes_in_every_mode() {
    let chart = chart_dir().display().to_string();
    let modes: [&[&str]; 8] = [
        &[],
        &["--set", "replicaCount=2"],
        &["--set", "watchNamespace=apps"],
        &["--set", "redis.existingSecret.name=redis", "--set", "logFormat=text"],
        &["--set", "metrics.serviceMonitor.enabled=true", "--set", "leaderElection.enabled=true"],
        &["--set", "dashboard.enabled=true", "--set", "redis.url=redis://redis:6379"],
        &["--set", "dashboard.enabled=true", "--set", "watchNamespace=apps"],
        &[
            "--set",
            "dashboard.enabled=true",
            "--set",
            "redis.url=rediss://redis:6380",
            "--set",
            "redis.caConfigMap.name=redis-ca",
            "--set",
            "sshKey.deleteWithRelease=true",
        ],
    ];
    for mode in modes {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(mode);
        let out = helm(&args).expect("helm");
        assert!(
            out.status.success(),
            "helm lint {mode:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn values_outside_the_schema_are_rejected() {
    let cases = [
        ("concurrency=0", "concurrency"),
        ("logFormat=xml", "logFormat"),
        ("replicasCount=2", "replicasCount"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("redis.url=http://redis:6379", "redis"),
        ("terminationGracePeriodSeconds=5", "terminationGracePeriodSeconds"),
    ];
    for (set, field) in cases {
        let error = render("schema", "default", &[set], &[]).expect_err(set).to_string();
        assert!(error.contains(field), "--set {set}: {error}");
    }
    let error = render("schema", "default", &["redis.url=redis://r:6379", "redis.existingSecret.name=r"], &[])
        .expect_err("both Redis sources")
        .to_string();
    assert!(error.contains("either redis.url or redis.existingSecret.name"), "{error}");
}

#[test]
fn rendered_manifests_hold_the_promised_settings() -> Result<()> {
    let default = documents(&render("rel", "ops", &[], &[])?)?;
    let kinds: Vec<&str> = default.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment"]
    {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(!kinds.contains(&"ServiceMonitor"), "the ServiceMonitor is opt-in");

    let deployment = find(&default, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let controller = &pod["containers"][0];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(controller["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(controller["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(controller["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(controller["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(controller["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(controller["resources"]["requests"].is_object() && controller["resources"]["limits"].is_object());
    assert_eq!(
        controller["env"][0],
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    );
    assert!(controller["env"].as_array().into_iter().flatten().all(|e| e["name"] != "REDIS_URL"), "Redis is optional");
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "one controller at a time without leader election");
    assert!(!args(&default).contains(&"--leader-elect".to_string()));
    assert!(
        rules(&default).iter().all(|r| r["apiGroups"] != json!(["coordination.k8s.io"])),
        "no Lease rules without leader election"
    );

    for sets in [&["replicaCount=2"][..], &["leaderElection.enabled=true"][..]] {
        let elected = documents(&render("rel", "ops", sets, &[])?)?;
        assert!(args(&elected).contains(&"--leader-elect".to_string()), "{sets:?}");
        assert!(
            find(&elected, "Deployment")[0]["spec"].get("strategy").is_none(),
            "{sets:?}: rolling updates with a standby"
        );
        assert!(
            rules(&elected).iter().any(|r| r["apiGroups"] == json!(["coordination.k8s.io"])),
            "{sets:?}: Lease rules"
        );
    }

    let namespaced = documents(&render("rel", "ops", &["watchNamespace=apps"], &[])?)?;
    assert!(find(&namespaced, "ClusterRole").is_empty() && find(&namespaced, "ClusterRoleBinding").is_empty());
    let role_namespaces: Vec<&str> =
        find(&namespaced, "Role").iter().filter_map(|r| r["metadata"]["namespace"].as_str()).collect();
    assert_eq!(role_namespaces, ["apps", "ops"], "workload Role in the watched namespace, own Role in the release's");
    assert!(args(&namespaced).contains(&"--watch-namespace=apps".to_string()));

    let with_redis = documents(&render("rel", "ops", &["redis.existingSecret.name=redis-url"], &[])?)?;
    let env = &find(&with_redis, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "REDIS_URL" && e["valueFrom"]["secretKeyRef"]["name"] == "redis-url"),
        "{env}"
    );

    let monitored = documents(&render("rel", "ops", &["metrics.serviceMonitor.enabled=true"], &[])?)?;
    assert_eq!(find(&monitored, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"], "metrics");

    for objects in [&default, &namespaced] {
        for rule in rules(objects) {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(rule[field].as_array().into_iter().flatten().all(|v| v != "*"), "no wildcards in RBAC: {rule}");
            }
        }
    }
    Ok(())
}

fn args(objects: &[Value]) -> Vec<String> {
    let deployment = find(objects, "Deployment")[0];
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone()).unwrap_or_default()
}

fn rules(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
        .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn rendered_manifests_pass_a_server_side_dry_run() -> Result<()> {
    let kube = testbed::kube().await?;
    let client = kube.client().await?;
    let release_ns = testbed::unique_namespace(&client, "chart-dry-run").await?;
    let watched_ns = testbed::unique_namespace(&client, "chart-dry-run-apps").await?;
    let watch = format!("watchNamespace={watched_ns}");
    let variants: [&[&str]; 6] = [
        &[],
        &["replicaCount=2"],
        &[watch.as_str()],
        &[watch.as_str(), "replicaCount=3", "redis.existingSecret.name=redis-url", "serviceAccount.name=custom"],
        &["dashboard.enabled=true", "redis.url=redis://redis:6379"],
        &[watch.as_str(), "dashboard.enabled=true"],
    ];
    for sets in variants {
        let manifests = render(&format!("dry-run-{}", std::process::id()), &release_ns, sets, &["--include-crds"])?;
        let applied = kubectl_apply(&kube.kubeconfig, &manifests, true).with_context(|| format!("variant {sets:?}"))?;
        for kind in [
            "customresourcedefinition",
            "serviceaccount",
            "role.rbac",
            "rolebinding.rbac",
            "service/",
            "deployment.apps",
        ] {
            assert!(applied.contains(kind), "{sets:?}: nothing of kind {kind} applied:\n{applied}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn helm_install_and_uninstall_work() -> Result<()> {
    let kube = testbed::kube().await?;
    let client = kube.client().await?;
    let release_ns = testbed::unique_namespace(&client, "chart-install").await?;
    let release = format!("install-{}", std::process::id());
    let kubeconfig = kube.kubeconfig.display().to_string();
    let chart = chart_dir().display().to_string();
    let install = helm(&[
        "install",
        &release,
        &chart,
        "--namespace",
        &release_ns,
        "--kubeconfig",
        &kubeconfig,
        "--set",
        "replicaCount=2",
        "--set",
        "dashboard.enabled=true",
    ])?;
    let printed = String::from_utf8_lossy(&install.stdout);
    assert!(install.status.success(), "helm install: {printed}{}", String::from_utf8_lossy(&install.stderr));
    assert!(printed.contains("STATUS: deployed"), "{printed}");
    assert!(printed.contains("Leader election is on: one of 2 replicas reconciles at a time."), "NOTES: {printed}");
    assert!(printed.contains(&format!("port-forward svc/{release}-infrahaus-operator-dashboard")), "NOTES: {printed}");

    let uninstall = helm(&["uninstall", &release, "--namespace", &release_ns, "--kubeconfig", &kubeconfig, "--wait"])?;
    assert!(uninstall.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&uninstall.stderr));
    Ok(())
}

/// A kubeconfig for the test bed's API server holding only `token`.
fn token_kubeconfig(url: &str, ca_file: &Path, namespace: &str, token: &str) -> Result<tempfile::NamedTempFile> {
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": {"server": url, "certificate-authority": ca_file}}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [{"name": "service-account", "context": {"cluster": "testbed", "user": "service-account", "namespace": namespace}}],
        "current-context": "service-account"
    });
    let mut file = tempfile::Builder::new().suffix(".kubeconfig").tempfile()?;
    file.write_all(serde_json::to_string(&config)?.as_bytes())?;
    Ok(file)
}

/// Whether `kubectl auth can-i` grants `verb resource` in `namespace` to
/// the holder of `kubeconfig`.
fn can_i(kubeconfig: &Path, verb: &str, resource: &str, namespace: &str) -> Result<bool> {
    let out = Command::new("kubectl")
        .args(["auth", "can-i", verb, resource, "-n", namespace, "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .context("run kubectl auth can-i")?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!("kubectl auth can-i {verb} {resource}: {other} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Installs the chart's ServiceAccount and RBAC for a release in
/// `release_ns`, runs the controller as the Deployment would (its args, a
/// token of that ServiceAccount and nothing else) and takes a Container in
/// `world`'s namespace to Ready and through deletion.
async fn prove_rbac(world: &mut World, release_ns: &str, sets: &[&str]) -> Result<()> {
    let release = format!("rbac-{}", world.ns);
    let rbac = render(
        &release,
        release_ns,
        sets,
        &["--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
    )?;
    kubectl_apply(&world.kube.kubeconfig, &rbac, false)?;
    let objects = documents(&render(&release, release_ns, sets, &[])?)?;
    let pod = &find(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    let service_account = pod["serviceAccountName"].as_str().context("serviceAccountName")?;
    let args: Vec<String> = serde_json::from_value(pod["containers"][0]["args"].clone())?;
    let args: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--metrics-addr")).collect();

    let request = TokenRequest {
        spec: TokenRequestSpec { audiences: Vec::new(), expiration_seconds: Some(3600), bound_object_ref: None },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(world.client.clone(), release_ns)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await?
        .status
        .context("TokenRequest without a token")?
        .token;
    let kubeconfig = token_kubeconfig(&world.kube.url, &world.kube.ca_file, release_ns, &token)?;
    // The Deployment that owns the SSH key with sshKey.deleteWithRelease
    // (not running: the controller runs here as a process on its token).
    let owner = args.iter().find_map(|a| a.strip_prefix("--ssh-key-owner=")).map(str::to_owned);
    if let Some(name) = &owner {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": release_ns},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "none"}]}}}
        });
        kubectl_apply(&world.kube.kubeconfig, &serde_json::to_string(&deployment)?, false)?;
    }

    for (verb, resource, namespace) in [
        ("delete", "containers.infrahaus.io", world.ns.as_str()),
        ("update", "containers.infrahaus.io", world.ns.as_str()),
        ("create", "containers.infrahaus.io", world.ns.as_str()),
        ("patch", "containertemplates.infrahaus.io", world.ns.as_str()),
        ("list", "secrets", world.ns.as_str()),
        ("delete", "secrets", world.ns.as_str()),
        ("list", "secrets", release_ns),
        ("create", "pods", world.ns.as_str()),
    ] {
        assert!(
            !can_i(kubeconfig.path(), verb, resource, namespace)?,
            "{sets:?}: the token may {verb} {resource} in {namespace}"
        );
    }
    assert!(can_i(kubeconfig.path(), "patch", "containers.infrahaus.io", &world.ns)?, "{sets:?}: the token works");

    world.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"}, "data": {"greeting": "hello\n"}})).await?;
    world.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-secret"}, "stringData": {"token": "file-secret-1234"}})).await?;
    let mut web = template("web", false);
    let files = web["spec"]["files"].as_array_mut().context("template files")?;
    files.push(json!({"path": "/etc/app/greeting", "contentFrom": {"configMapKeyRef": {"name": "web-config", "key": "greeting"}}}));
    files.push(json!({"path": "/etc/app/token", "contentFrom": {"secretKeyRef": {"name": "web-secret", "key": "token"}}, "mode": "0600"}));
    world.apply(web).await?;
    world.apply(container("web-1", "web", json!({"ipv4": "dhcp"}))).await?;

    let index = world.start_controller_with_kubeconfig(kubeconfig.path(), release_ns, &args)?;
    world
        .wait_phase("web-1", Phase::Ready, READY_TIMEOUT)
        .await
        .with_context(|| format!("{sets:?}: not Ready with the chart's RBAC"))?;

    let secrets = Api::<Secret>::namespaced(world.client.clone(), release_ns);
    let key = secrets.get_opt("infrahaus-ssh-key").await?.context("the SSH key lives in the release namespace")?;
    let owners: Vec<String> = key
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect();
    let expected: Vec<String> = owner.iter().map(|name| format!("Deployment/{name}")).collect();
    assert_eq!(owners, expected, "{sets:?}: the SSH key's owner");
    if args.iter().any(|a| a == "--leader-elect") {
        let lease = Api::<Lease>::namespaced(world.client.clone(), release_ns).get("infrahaus-operator-leader").await?;
        let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
        assert!(!holder.is_empty(), "the controller holds the Lease");
    }

    world.api::<Container>().delete("web-1", &DeleteParams::default()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while world.api::<Container>().get_opt("web-1").await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!("{sets:?}: the Container was not deleted\n{}", world.controller(index).log_tail(40));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.controller(index).stop(Duration::from_secs(25));
    if let Some(name) = &owner {
        // Uninstalling deletes the Deployment, and with it the key.
        let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(world.client.clone(), release_ns);
        deployments.delete(name, &DeleteParams::background()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while secrets.get_opt("infrahaus-ssh-key").await?.is_some() {
            if tokio::time::Instant::now() > deadline {
                bail!("{sets:?}: the SSH key outlived its owner");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let denied: Vec<String> =
        world.controller_logs().lines().filter(|l| l.to_lowercase().contains("forbidden")).map(str::to_owned).collect();
    assert!(
        denied.is_empty(),
        "{sets:?}: the controller was denied something:\n{}",
        denied[..denied.len().min(3)].join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn the_chart_rbac_is_enough_for_the_controller() -> Result<()> {
    // The cluster-wide controller gets an API server of its own: on the
    // shared one it would act on every other test's Containers too.
    let mut cluster_wide = World::isolated("chart-rbac-all").await?;
    let release_ns = testbed::unique_namespace(&cluster_wide.client, "chart-rbac-all-sys").await?;
    prove_rbac(&mut cluster_wide, &release_ns, &[]).await?;

    let mut namespaced = World::new("chart-rbac-ns").await?;
    let release_ns = testbed::unique_namespace(&namespaced.client, "chart-rbac-ns-sys").await?;
    let watch = format!("watchNamespace={}", namespaced.ns);
    prove_rbac(&mut namespaced, &release_ns, &[watch.as_str(), "replicaCount=2", "sshKey.deleteWithRelease=true"])
        .await?;
    Ok(())
}

/// The dashboard's objects in a render: its Deployment, by name.
fn dashboard_deployment(objects: &[Value]) -> Option<&Value> {
    find(objects, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-dashboard")))
}

/// The rules of the Roles and ClusterRoles named `name`.
fn rules_of(objects: &[Value], name: &str) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| (o["kind"] == "Role" || o["kind"] == "ClusterRole") && o["metadata"]["name"] == name)
        .flat_map(|o| o["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Whether `selector` (matchLabels) selects a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|wanted| wanted.iter().all(|(key, value)| labels[key] == *value))
}

#[test]
fn the_dashboard_is_off_by_default_and_holds_exactly_its_rbac() -> Result<()> {
    let default = documents(&render("rel", "ops", &[], &[])?)?;
    assert!(dashboard_deployment(&default).is_none(), "the dashboard is opt-in");
    assert!(rules_of(&default, "rel-infrahaus-operator-dashboard").is_empty());

    let reviews = [
        json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}),
        json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}),
    ];
    let containers =
        json!({"apiGroups": ["infrahaus.io"], "resources": ["containers"], "verbs": ["get", "list", "watch"]});

    let enabled = documents(&render("rel", "ops", &["dashboard.enabled=true", "redis.url=redis://r:6379"], &[])?)?;
    let dashboard = dashboard_deployment(&enabled).context("the dashboard's Deployment")?;
    let mut expected = reviews.to_vec();
    expected.push(containers.clone());
    assert_eq!(rules_of(&enabled, "rel-infrahaus-operator-dashboard"), expected, "exactly what the dashboard needs");
    let pod = &dashboard["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "rel-infrahaus-operator-dashboard", "a ServiceAccount of its own");
    let binding = find(&enabled, "ClusterRoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["name"] == "rel-infrahaus-operator-dashboard")
        .context("the dashboard's ClusterRoleBinding")?;
    assert_eq!(binding["subjects"][0]["name"], "rel-infrahaus-operator-dashboard");
    let container = &pod["containers"][0];
    assert_eq!(container["args"][0], "dashboard");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(
        container["env"].as_array().into_iter().flatten().any(|e| e["name"] == "REDIS_URL"),
        "Redis as the controller's"
    );

    let controller =
        find(&enabled, "Deployment").into_iter().find(|d| !std::ptr::eq(*d, dashboard)).context("controller")?;
    let dashboard_pods = &dashboard["spec"]["template"]["metadata"]["labels"];
    let controller_pods = &controller["spec"]["template"]["metadata"]["labels"];
    assert!(!selects(&controller["spec"]["selector"]["matchLabels"], dashboard_pods), "the controller's Deployment");
    assert!(!selects(&dashboard["spec"]["selector"]["matchLabels"], controller_pods), "the dashboard's Deployment");
    for service in find(&enabled, "Service") {
        let pods = if service["metadata"]["name"] == "rel-infrahaus-operator-dashboard" {
            dashboard_pods
        } else {
            controller_pods
        };
        assert!(selects(&service["spec"]["selector"], pods), "{} selects its own pods", service["metadata"]["name"]);
    }

    let namespaced = documents(&render("rel", "ops", &["dashboard.enabled=true", "watchNamespace=apps"], &[])?)?;
    let cluster_rules: Vec<Value> = find(&namespaced, "ClusterRole")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == "rel-infrahaus-operator-dashboard")
        .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(cluster_rules, reviews.to_vec(), "with watchNamespace only the reviews are cluster-wide");
    let role = find(&namespaced, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "rel-infrahaus-operator-dashboard")
        .context("the dashboard's Role")?;
    assert_eq!(role["metadata"]["namespace"], "apps");
    assert_eq!(role["rules"], json!([containers]));
    Ok(())
}

/// Installs the chart's dashboard ServiceAccount and RBAC, runs the
/// dashboard as its Deployment would (its args, a token of that
/// ServiceAccount and nothing else), with Redis and without (following the
/// status, which watches), and checks what callers get.
#[tokio::test]
async fn the_chart_rbac_is_enough_for_the_dashboard() -> Result<()> {
    use support::dashboard::{add_log_events, idle_container, service_account_token, token_for, Dashboard};
    let world = World::new("chart-dashboard").await?;
    let release_ns = testbed::unique_namespace(&world.client, "chart-dashboard-sys").await?;
    let release = format!("dash-{}", world.ns);
    let sets = ["dashboard.enabled=true"];
    let rbac = render(&release, &release_ns, &sets, &["--show-only", "templates/dashboard-rbac.yaml"])?;
    kubectl_apply(&world.kube.kubeconfig, &rbac, false)?;
    let objects = documents(&render(&release, &release_ns, &sets, &[])?)?;
    let pod = &dashboard_deployment(&objects).context("the dashboard's Deployment")?["spec"]["template"]["spec"];
    let service_account = pod["serviceAccountName"].as_str().context("serviceAccountName")?;
    let args: Vec<String> = serde_json::from_value(pod["containers"][0]["args"].clone())?;
    let args: Vec<&str> = args.iter().skip(1).map(String::as_str).filter(|a| !a.starts_with("--listen")).collect();
    let token = token_for(&world.client, &release_ns, service_account).await?;
    let kubeconfig = token_kubeconfig(&world.kube.url, &world.kube.ca_file, &release_ns, &token)?;

    for (verb, resource) in [
        ("patch", "containers.infrahaus.io"),
        ("delete", "containers.infrahaus.io"),
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods"),
    ] {
        assert!(!can_i(kubeconfig.path(), verb, resource, &world.ns)?, "the dashboard's token may {verb} {resource}");
    }
    for verb in ["get", "list", "watch"] {
        assert!(can_i(kubeconfig.path(), verb, "containers.infrahaus.io", &world.ns)?, "{verb} containers");
    }

    idle_container(&world, "web-1").await?;
    let viewer = service_account_token(&world, "viewer", true).await?;
    let nobody = service_account_token(&world, "nobody", false).await?;
    let redis = world.redis_url.clone().context("redis")?;
    let added = add_log_events(&world, &redis, "web-1", 0, 2).await?;
    let list = format!("/api/v1/containers?namespace={}", world.ns);

    let with_redis = Dashboard::start_with_kubeconfig(&world, kubeconfig.path(), Some(&redis), &args).await?;
    assert_eq!(with_redis.get(&list, Some(&viewer), &[]).await?.status(), 200, "{}", with_redis.log_text());
    assert_eq!(with_redis.get(&list, Some(&nobody), &[]).await?.status(), 403);
    let mut stream = with_redis.events(&world.ns, "web-1", Some(&viewer), &[]).await?;
    let replayed: Vec<Option<String>> =
        stream.take(2, Duration::from_secs(10)).await?.into_iter().map(|e| e.id).collect();
    assert_eq!(replayed, added.iter().map(|(id, _)| Some(id.clone())).collect::<Vec<_>>());
    let absent = format!("/api/v1/namespaces/{}/containers/absent/events", world.ns);
    assert_eq!(with_redis.get(&absent, Some(&viewer), &[]).await?.status(), 404);

    let from_status = Dashboard::start_with_kubeconfig(&world, kubeconfig.path(), None, &args).await?;
    let mut stream = from_status.events(&world.ns, "web-1", Some(&viewer), &[]).await?;
    let event = stream.next(Duration::from_secs(10)).await?.context("the status as an event")?;
    let event: Value = serde_json::from_str(&event.data)?;
    assert_eq!(event["step"], "pending", "{event}");

    for (name, log) in [("with Redis", with_redis.log_text()), ("from the status", from_status.log_text())] {
        let denied: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("forbidden")).collect();
        assert!(denied.is_empty(), "the dashboard {name} was denied something:\n{}", denied.join("\n"));
        assert!(!log.contains(&token) && !log.contains(&viewer), "a token is in the dashboard's log");
    }
    Ok(())
}
