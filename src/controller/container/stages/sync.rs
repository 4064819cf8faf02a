//! Sync: run config-sync.sh (packages), then each enabled template script in
//! order, streaming every output line; the percent is spread over the scripts.

use std::collections::VecDeque;
use std::time::Duration;

use super::super::job::Job;
use crate::crd::conditions::reasons;
use crate::error::Error;
use crate::layout::{self, SCRIPT_MODE, SYNC_COMMAND};
use crate::ssh::{ExitStatus, SshSession, Stream};

/// How many of a failed script's last output lines go into the Error message.
const TAIL_LINES: usize = 10;
const CONFIG_SYNC_NAME: &str = "config-sync.sh";
const CONFIG_SYNC_TIMEOUT: Duration = Duration::from_secs(1800);

pub(super) async fn run(job: &mut Job<'_>) -> Result<(), Error> {
    let session = job.ssh_recorded().await?;

    let scripts: Vec<_> = job
        .template
        .as_ref()
        .map(|(_, t)| t.scripts.iter().filter(|s| s.enabled).cloned().collect())
        .unwrap_or_default();
    let steps = scripts.len() as i32 + 1;
    let percent = |done: i32| 100 * done / steps;

    job.progress(percent(0), "Running config-sync.sh (packages)").await?;
    run_script(job, &session, CONFIG_SYNC_NAME, SYNC_COMMAND, CONFIG_SYNC_TIMEOUT).await?;

    for (index, script) in scripts.iter().enumerate() {
        let done = index as i32 + 1;
        job.progress(percent(done), format!("Running script {} ({}/{})", script.name, done, scripts.len())).await?;
        let path = layout::script_path(&script.name)?;
        session.upload(&path, script.content.as_bytes(), SCRIPT_MODE).await?;
        let command = layout::script_command(&script.name)?;
        let timeout = Duration::from_secs(script.timeout_seconds.max(1) as u64);
        run_script(job, &session, &script.name, &command, timeout).await?;
    }
    let _ = session.close().await;
    job.progress(100, format!("{} scripts completed", scripts.len())).await?;
    Ok(())
}

/// Runs one script, publishing each output line, and turns a non-zero exit
/// into a permanent failure that names the script, its exit code and its
/// last lines.
async fn run_script(
    job: &mut Job<'_>,
    session: &SshSession,
    name: &str,
    command: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<(Stream, String)>();
    let exec = session.exec(command, timeout, move |stream, line| {
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
                remember(&line, &mut tail);
                job.log(name, stream, &line).await;
            }
            result = &mut exec => break result,
        }
    };
    // Lines that arrived together with the exit status.
    while let Ok((stream, line)) = lines_rx.try_recv() {
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

fn describe(status: &ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => format!("ended abnormally ({status})"),
    }
}
