//! `[run] before`, `after` and `on_failure`: shell commands (`sh -c`) run around a backup.
//!
//! A hook gets the run's outcome in `COLDVAULT_*` variables and nothing else of coldvault's
//! environment: it starts from an empty environment with only `PATH`, `HOME`, `USER`,
//! `LOGNAME`, `LANG`, `LC_ALL`, `TZ` and `TMPDIR` kept, so no password or key in the
//! environment (`AWS_SECRET_ACCESS_KEY`, `PGPASSWORD`, a passphrase) reaches it. Its output goes
//! to coldvault's standard error.

use std::process::{Command, Stdio};

use super::RunOutcome;
use crate::error::{Error, Result};

/// Variables a hook keeps from coldvault's environment.
const KEPT: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// The variables a hook gets: the job, and once the run ended its outcome.
pub fn variables(job: &str, outcome: Option<&RunOutcome<'_>>) -> Vec<(String, String)> {
    let mut v = vec![("COLDVAULT_JOB".to_owned(), job.to_owned())];
    let Some(o) = outcome else {
        return v;
    };
    let mut set = |k: &str, val: String| v.push((format!("COLDVAULT_{k}"), val));
    set("EXIT_CODE", o.exit_code.to_string());
    set(
        "DURATION_SECONDS",
        format!("{:.3}", o.duration.as_secs_f64()),
    );
    if let Some(e) = &o.error {
        set("ERROR", e.clone());
    }
    if let Some(r) = o.report {
        if let Some(id) = &r.snapshot {
            set("SNAPSHOT", id.to_string());
        }
        set("TASKS", r.tasks.to_string());
        set("TASKS_FAILED", r.failed_tasks.len().to_string());
        set("FILES", r.files.to_string());
        set("ROWS", r.rows.to_string());
        set("BYTES_READ", r.bytes_read.to_string());
        set("BYTES_STORED", r.bytes_stored.to_string());
        set("WARNINGS", r.warnings.len().to_string());
        set("LEFT_OUT", r.left_out.to_string());
    }
    v
}

/// Runs the `which` hook `command` with `vars`; an error names the hook and how it ended.
pub fn run(which: &str, command: &str, vars: &[(String, String)]) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).env_clear();
    for k in KEPT {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    // The hook's output is for people: it goes where coldvault's messages go, never on the
    // standard output that `--json` keeps for its one document.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| Error::io(format!("cannot run the {which} hook"), e))?;
    if status.success() {
        return Ok(());
    }
    Err(Error::config(format!(
        "the {which} hook failed ({}): {command}",
        match status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_owned(),
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_sees_its_variables_and_none_of_the_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        std::env::set_var("COLDVAULT_HOOK_TEST_SECRET", "s3cr3t-for-the-hook-test");
        let vars = variables("photos", None);
        run("after", &format!("env > '{}'", out.display()), &vars).unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("COLDVAULT_JOB=photos"), "{env}");
        assert!(!env.contains("s3cr3t-for-the-hook-test"), "{env}");
        assert!(env.contains("PATH="), "{env}");
    }

    #[test]
    fn a_failing_hook_is_an_error_naming_it_and_its_exit_code() {
        let e = run("before", "exit 7", &[]).unwrap_err().to_string();
        assert!(e.contains("before hook failed (exit code 7)"), "{e}");
    }
}
