//! The dashboard page in a real browser: Debian's headless Chromium driven
//! through chromedriver (WebDriver) on loopback, against the dashboard, the
//! controller and pve-sim. A person's view: sign in with a token, watch a
//! Container's row go to Ready and its log fill, lose the dashboard and get
//! every event exactly once after it is back, see a failed script in red.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::dashboard::{add_log_events, service_account_token, stream_ids, Dashboard};
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;
use testbed::ManagedProcess;

const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// A browser session and the chromedriver it runs through.
struct Browser {
    client: Client,
    _driver: ManagedProcess,
}

/// Chromium without anything that would reach past loopback: no sync,
/// updates, safe browsing or DNS (every host name fails to resolve).
fn chromium_args(profile: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1360,900",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}

async fn browser(world: &World) -> Result<Browser> {
    let port = testbed::process::free_port()?;
    let mut cmd = Command::new("chromedriver");
    cmd.arg(format!("--port={port}")).arg("--allowed-ips=127.0.0.1");
    let driver = ManagedProcess::spawn("chromedriver", cmd, &world.dir.join("chromedriver.log"))
        .context("chromedriver is not installed; hack/deps installs chromium-driver")?;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + UI_TIMEOUT;
    while reqwest::get(format!("{url}/status")).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("chromedriver did not come up:\n{}", driver.log_tail(20));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = world.dir.join("chromium-profile");
    let capabilities = json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": chromium_args(&profile)}});
    let Value::Object(capabilities) = capabilities else { unreachable!("an object literal") };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&url)
        .await
        .with_context(|| format!("starting Chromium through chromedriver:\n{}", driver.log_tail(20)))?;
    Ok(Browser { client, _driver: driver })
}

impl Browser {
    /// The value of a script run in the page.
    async fn eval(&self, script: &str) -> Result<Value> {
        Ok(self.client.execute(script, Vec::new()).await?)
    }

    /// Waits until `script` returns something that `done` accepts; returns it.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.eval(script).await?;
            if done(&value) {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{what}: not reached within {timeout:?}; the page shows {value}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, css: &str) -> Result<()> {
        self.client.wait().at_most(UI_TIMEOUT).for_element(Locator::Css(css)).await?.click().await?;
        Ok(())
    }

    async fn phase_of(&self, name: &str, phase: &str, timeout: Duration) -> Result<()> {
        let script =
            format!(r#"return document.querySelector('tr[data-name="{name}"] td.phase')?.textContent ?? null"#);
        self.wait_for(&format!("{name} in phase {phase}"), timeout, &script, |v| v == phase).await.map(drop)
    }

    async fn log_text_contains(&self, needles: &[&str], timeout: Duration) -> Result<()> {
        let script = "return document.getElementById('log').innerText";
        self.wait_for(&format!("the log shows {needles:?}"), timeout, script, |v| {
            v.as_str().is_some_and(|text| needles.iter().all(|n| text.contains(n)))
        })
        .await
        .map(drop)
    }

    /// The SSE ids of the events in the log view, in the order shown.
    async fn log_ids(&self) -> Result<Vec<String>> {
        let ids =
            self.eval("return [...document.querySelectorAll('#log li[data-id]')].map(li => li.dataset.id)").await?;
        Ok(serde_json::from_value(ids)?)
    }

    /// Waits until the log view shows exactly `expected` ids.
    async fn log_ids_become(&self, expected: &[String], timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let shown = self.log_ids().await?;
            if shown == expected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the log shows {} events {shown:?}, Redis holds {} {expected:?}", shown.len(), expected.len());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stream_state(&self, state: &str) -> Result<()> {
        let script = "return document.getElementById('stream-state').textContent";
        self.wait_for(&format!("the stream {state}"), UI_TIMEOUT, script, |v| v == state).await.map(drop)
    }

    async fn screenshot(&self, name: &str) -> Result<std::path::PathBuf> {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }
}

/// Whether a CSS colour is a red: `rgb(r, g, b)` with red well above the rest.
fn is_red(color: &str) -> bool {
    let channels: Vec<u32> = color
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    matches!(channels[..], [r, g, b, ..] if r >= 180 && g < 130 && b < 150)
}

#[test]
fn reds_are_told_from_other_colours() {
    assert!(is_red("rgb(255, 92, 108)"));
    assert!(is_red("rgba(192, 24, 43, 1)"));
    assert!(!is_red("rgb(242, 180, 90)"), "the stderr orange");
    assert!(!is_red("rgb(214, 218, 226)"));
    assert!(!is_red("not a colour"));
}

#[tokio::test]
async fn the_page_follows_containers_live_resumes_after_a_restart_and_shows_failures() -> Result<()> {
    let mut world = World::new("dash-page").await?;
    let redis = world.redis_url.clone().context("redis")?;
    world.start_controller(&[])?;
    world.apply(template("web", false)).await?;
    world.apply(template("web-fail", true)).await?;
    let mut dashboard = Dashboard::start(&world, Some(&redis), &[]).await?;
    let token = service_account_token(&world, "viewer", true).await?;
    let browser = browser(&world).await?;
    let page = &browser.client;

    page.goto(&format!("{}/?namespace={}", dashboard.base, world.ns)).await?;
    browser
        .wait_for("the sign-in form", UI_TIMEOUT, "return !document.getElementById('login').hidden", |v| v == true)
        .await?;
    page.find(Locator::Css("#token")).await?.send_keys(&token).await?;
    browser.click("#login-submit").await?;

    world.apply(container("web-1", "web", json!({"ipv4": "dhcp"}))).await?;
    browser.click(r#"tr[data-name="web-1"]"#).await?;
    browser.stream_state("live").await?;
    browser.phase_of("web-1", "Ready", READY_TIMEOUT).await?;
    browser
        .log_text_contains(
            &["10-listener.sh: listener started on", "20-credentials.sh (stderr): credentials written"],
            UI_TIMEOUT,
        )
        .await?;
    let stderr = browser.eval("return document.querySelectorAll('#log li.event-log.stream-stderr').length").await?;
    assert!(stderr.as_u64() > Some(0), "stderr lines are marked as such");
    browser
        .wait_for(
            "the complete event",
            UI_TIMEOUT,
            "return document.querySelectorAll('#log li.event-complete').length",
            |v| v == 1,
        )
        .await?;
    browser.log_ids_become(&stream_ids(&world, &redis, "web-1").await?, UI_TIMEOUT).await?;

    // The dashboard goes away; events arrive meanwhile and after it is back.
    dashboard.kill();
    browser.stream_state("reconnecting").await?;
    add_log_events(&world, &redis, "web-1", 0, 3).await?;
    dashboard.start_again().await?;
    browser.stream_state("live").await?;
    add_log_events(&world, &redis, "web-1", 3, 2).await?;
    let all = stream_ids(&world, &redis, "web-1").await?;
    browser.log_ids_become(&all, UI_TIMEOUT).await.context("after the restart: no event lost or repeated")?;
    browser.log_text_contains(&["10-test.sh: line 4"], UI_TIMEOUT).await?;

    // A failing script: the row goes to Error, the log ends in red with the script's name.
    world.apply(container("web-fail", "web-fail", json!({"ipv4": "dhcp"}))).await?;
    browser.click(r#"tr[data-name="web-fail"]"#).await?;
    browser.phase_of("web-fail", "Error", READY_TIMEOUT).await?;
    let error = browser
        .wait_for(
            "the error event",
            UI_TIMEOUT,
            "const e = document.querySelector('#log li.event-error'); return e ? [getComputedStyle(e).color, e.textContent] : null",
            |v| v.is_array(),
        )
        .await?;
    let (color, text) = (error[0].as_str().unwrap_or_default(), error[1].as_str().unwrap_or_default());
    assert!(is_red(color), "the error is shown in red, not {color}");
    assert!(text.contains("syncing failed") && text.contains("20-credentials.sh"), "{text}");
    let phase_color = browser
        .eval(r#"return getComputedStyle(document.querySelector('tr[data-name="web-fail"] td.phase')).color"#)
        .await?;
    assert!(is_red(phase_color.as_str().unwrap_or_default()), "the Error phase is red: {phase_color}");
    browser.log_text_contains(&["20-credentials.sh (stderr): disk full"], UI_TIMEOUT).await?;

    let shot = browser.screenshot("dashboard.png").await?;
    println!("screenshot: {}", shot.display());
    assert!(std::fs::metadata(&shot)?.len() > 10_000, "a screenshot of the page");
    let log = dashboard.log_text();
    assert!(!log.contains(&token), "the token is in the dashboard's log");
    browser.client.close().await?;
    Ok(())
}
