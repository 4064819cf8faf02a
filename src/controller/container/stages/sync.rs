//! Sync: run config-sync.sh (packages), then each enabled template script in
//! order, streaming every output line; the percent is spread over the scripts.

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::super::job::Job;
use crate::crd::conditions::reasons;
use crate::error::Error;
use crate::k8s;
use crate::layout::{self, SCRIPT_MODE, SYNC_COMMAND};
use crate::ssh::{ExitStatus, SshSession, Stream};

/// How many of a failed script's last output lines go into the Error message.
const TAIL_LINES: usize = 10;
const CONFIG_SYNC_NAME: &str = "config-sync.sh";
const CONFIG_SYNC_TIMEOUT: Duration = Duration::from_secs(1800);

/// What replaces a secret value in script output.
const REDACTED: &str = "[redacted]";
/// Shorter values are not redacted: they would blank out ordinary words.
const MIN_REDACTED_LEN: usize = 4;

pub(super) async fn run(job: &mut Job<'_>) -> Result<(), Error> {
    let redactions = Redactions::new(known_secrets(job).await?);
    let session = job.ssh_recorded().await?;

    let scripts: Vec<_> = job
        .template
        .as_ref()
        .map(|(_, t)| t.scripts.iter().filter(|s| s.enabled).cloned().collect())
        .unwrap_or_default();
    let steps = scripts.len() as i32 + 1;
    let percent = |done: i32| 100 * done / steps;

    job.progress(percent(0), "Running config-sync.sh (packages)").await?;
    settle_earlier_run(job, &session, CONFIG_SYNC_NAME, CONFIG_SYNC_TIMEOUT).await?;
    run_script(job, &session, &redactions, CONFIG_SYNC_NAME, SYNC_COMMAND, CONFIG_SYNC_TIMEOUT).await?;

    for (index, script) in scripts.iter().enumerate() {
        let done = index as i32 + 1;
        job.progress(percent(done), format!("Running script {} ({}/{})", script.name, done, scripts.len())).await?;
        let timeout = Duration::from_secs(script.timeout_seconds.max(1) as u64);
        settle_earlier_run(job, &session, &script.name, timeout).await?;
        let path = layout::script_path(&script.name)?;
        session.upload(&path, script.content.as_bytes(), SCRIPT_MODE).await?;
        let command = layout::script_command(&script.name)?;
        run_script(job, &session, &redactions, &script.name, &command, timeout).await?;
    }
    job.progress(100, format!("{} scripts completed", scripts.len())).await?;
    Ok(())
}

/// The marker of a script's runs for this Container: the same in every run,
/// in every controller process, so a later Sync finds an earlier run.
fn exec_id(uid: &str, script: &str) -> String {
    super::super::short_sha256(format!("{uid}/{script}").as_bytes(), 8)
}

/// A run of `script` may still be going on in the guest: its controller was
/// killed, or its reconcile dropped (shutdown grace, lost Lease) while it
/// ran. It is waited for (up to the script's timeout, then killed) before the
/// script is uploaded and started again, so the two never run at once.
async fn settle_earlier_run(
    job: &mut Job<'_>,
    session: &SshSession,
    script: &str,
    timeout: Duration,
) -> Result<(), Error> {
    if session.settle_exec(&exec_id(&job.uid, script), timeout).await? {
        let message = format!("{script}: waited for its earlier run, still going on in the guest, to end");
        tracing::info!(script, "{message}");
        job.log(script, Stream::Stderr, &message).await;
    }
    Ok(())
}

/// Runs one script, publishing each output line, and turns a non-zero exit
/// into a permanent failure that names the script, its exit code and its
/// last lines.
async fn run_script(
    job: &mut Job<'_>,
    session: &SshSession,
    redactions: &Redactions,
    name: &str,
    command: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<(Stream, String)>();
    let marker = exec_id(&job.uid, name);
    let exec = session.exec_as(&marker, command, timeout, move |stream, line| {
        let _ = lines_tx.send((stream, line.to_owned()));
    });
    tokio::pin!(exec);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let remember = |line: &str, tail: &mut VecDeque<String>| {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    };
    let result = loop {
        tokio::select! {
            biased;
            Some((stream, line)) = lines_rx.recv() => {
                let line = redactions.apply(&line);
                remember(&line, &mut tail);
                job.log(name, stream, &line).await;
            }
            result = &mut exec => break result,
        }
    };
    // Lines that arrived together with the exit status.
    while let Ok((stream, line)) = lines_rx.try_recv() {
        let line = redactions.apply(&line);
        remember(&line, &mut tail);
        job.log(name, stream, &line).await;
    }
    let tail_text = tail.into_iter().collect::<Vec<_>>().join("\n");
    match result {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Error::permanent(
            reasons::SCRIPT_FAILED,
            format!("script {name} {}; last output:\n{tail_text}", describe(&status)),
        )),
        Err(crate::ssh::SshError::CommandTimeout { .. }) => Err(Error::permanent(
            reasons::SCRIPT_FAILED,
            format!("script {name} did not finish within {timeout:?}; last output:\n{tail_text}"),
        )),
        Err(error) => Err(error.into()),
    }
}

/// The secret values the controller itself placed in the container: the
/// root password and the content of every file taken from a Secret. A script
/// that prints them (`cat`, `set -x`) must not carry them into Redis, status
/// or Events.
async fn known_secrets(job: &Job<'_>) -> Result<Vec<String>, Error> {
    let mut values = Vec::new();
    if let Some(key_ref) = job.status.root_password_secret_ref.clone() {
        let secrets: Api<Secret> = Api::namespaced(job.ctx.client.clone(), &job.namespace);
        if let Some(value) = secrets.get_opt(&key_ref.name).await?.and_then(|s| k8s::secret_key(&s, &key_ref.key)) {
            values.push(String::from_utf8_lossy(&value).into_owned());
        }
    }
    let files: Vec<_> = job.template.as_ref().map(|(_, t)| t.files.clone()).unwrap_or_default();
    for file in files.iter().filter(|f| f.content_from.as_ref().is_some_and(|c| c.secret_key_ref.is_some())) {
        let content = super::super::resolve::file_content(&job.ctx.client, &job.namespace, file).await?;
        values.push(String::from_utf8_lossy(&content).into_owned());
    }
    Ok(values)
}

/// Known secret values, longest first, each also line by line (output
/// arrives in lines, so a multi-line secret shows up one line at a time).
struct Redactions(Vec<String>);

impl Redactions {
    fn new(values: Vec<String>) -> Self {
        let mut all: Vec<String> = values
            .iter()
            .flat_map(|value| std::iter::once(value.trim()).chain(value.lines().map(str::trim)))
            .filter(|value| value.len() >= MIN_REDACTED_LEN)
            .map(str::to_owned)
            .collect();
        all.sort_by_key(|value| std::cmp::Reverse(value.len()));
        all.dedup();
        Self(all)
    }

    fn apply(&self, line: &str) -> String {
        self.0.iter().fold(line.to_owned(), |line, secret| line.replace(secret.as_str(), REDACTED))
    }
}

fn describe(status: &ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => format!("ended abnormally ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_secrets_are_redacted_from_output_lines() {
        let redactions =
            Redactions::new(vec!["hunter2-long".into(), "line one secret\nline two secret\n".into(), "ab".into()]);
        let cases = [
            ("password: hunter2-long", "password: [redacted]"),
            ("+ echo line two secret", "+ echo [redacted]"),
            ("hunter2-longhunter2-long", "[redacted][redacted]"),
            ("ab is too short to hide", "ab is too short to hide"),
            ("nothing here", "nothing here"),
        ];
        for (line, expected) in cases {
            assert_eq!(redactions.apply(line), expected, "{line}");
        }
    }
}
