//! Shared set-up for the end-to-end tests: a temporary directory with a job file, its nodes and
//! its staging, and a way to run the real `coldvault` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub job: PathBuf,
}

impl Env {
    /// A job over `fixtures::odd_tree` (300 kB files, empty ones, odd names, symlinks) in `src`,
    /// split at 64 KiB so that it has ranges and a file in parts.
    pub fn odd_tree(replicas: usize) -> Env {
        let env = Env::new(
            "type = \"fs\"\npath = \"src\"",
            "target_bytes = \"64KiB\"",
            replicas,
        );
        coldvault_testing::fixtures::odd_tree(&env.path("src"), 300_000);
        env
    }

    /// A job over an odd tree (plus `tree_bytes` of bulk files) whose nodes are `entries`, each
    /// the inside of one node's `{ ... }` in the job file (`name = "n", url = "..."`).
    pub fn with_nodes(entries: &[String], replicas: usize, tree_bytes: usize) -> Env {
        let env = Env::new(
            "type = \"fs\"\npath = \"src\"",
            "target_bytes = \"256KiB\"",
            replicas,
        );
        coldvault_testing::fixtures::odd_tree(&env.path("src"), 600_000);
        for i in 0..(tree_bytes / 100_000) {
            std::fs::write(
                env.path(&format!("src/dir/bulk{i:04}.bin")),
                coldvault_testing::fixtures::bytes(i as u64, 100_000),
            )
            .unwrap();
        }
        let lines: Vec<String> = entries.iter().map(|e| format!("  {{ {e} }},")).collect();
        let text = std::fs::read_to_string(&env.job).unwrap();
        let start = text.find("nodes = [").unwrap();
        let end = text[start..].find(']').unwrap() + start + 1;
        let text = format!(
            "{}nodes = [\n{}\n]{}",
            &text[..start],
            lines.join("\n"),
            &text[end..]
        );
        std::fs::write(&env.job, text).unwrap();
        env
    }

    /// Runs with `vars` set (a node's credentials) and returns (exit code, stdout, stderr).
    pub fn run_envs(&self, args: &[&str], vars: &[(&str, String)]) -> (i32, String, String) {
        let mut cmd = self.cmd(args);
        cmd.envs(vars.iter().map(|(k, v)| (k, v)));
        outcome(cmd.output().unwrap())
    }

    /// Runs `args --json` with `vars` set, checks the exit code and returns the report.
    pub fn json_envs(&self, args: &[&str], vars: &[(&str, String)], code: i32) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let (c, out, err) = self.run_envs(&a, vars);
        assert_eq!(c, code, "{args:?}: exit {c}\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Runs `args` with `set` set and `unset` removed from the environment, checks that it could
    /// not run (exit 2) and that its error says each of `words`; returns the error.
    pub fn assert_fails_saying(
        &self,
        args: &[&str],
        set: &[(&str, String)],
        unset: &[&str],
        words: &[&str],
    ) -> String {
        let mut cmd = self.cmd(args);
        cmd.envs(set.iter().map(|(k, v)| (k, v)));
        for var in unset {
            cmd.env_remove(var);
        }
        let (c, out, err) = outcome(cmd.output().unwrap());
        assert_eq!(c, 2, "{args:?}: {out}{err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: no {w:?} in {err}");
        }
        err
    }

    /// Restores the latest snapshot into `to`, with `vars` set (a node's credentials), and checks
    /// it against `src`, byte for byte.
    pub fn assert_restores_src_exactly(&self, vars: &[(&str, String)], to: &str) {
        let to = self.path(to);
        let (c, out, err) =
            self.run_envs(&["restore", "latest", "--to", to.to_str().unwrap()], vars);
        assert_eq!(c, 0, "{out}{err}");
        assert_same_lines(
            &coldvault_testing::fixtures::listing(&self.path("src")),
            &coldvault_testing::fixtures::listing(&to),
        );
    }

    /// Runs `setup` (shell: mounting a tmpfs), then `coldvault backup --json` into `out.json` and
    /// its exit code into `rc`, then `after`, in a private mount namespace (`unshare -rm`, which
    /// needs no privileges); returns the exit code and the report's text.
    pub fn backup_in_mount_namespace(&self, setup: &str, after: &str) -> (String, String) {
        let script = format!(
            "{setup} || exit 90; '{bin}' backup '{job}' --json > '{out}'; echo $? > '{rc}'; {after}",
            bin = assert_cmd::cargo::cargo_bin("coldvault").display(),
            job = self.job.display(),
            out = self.path("out.json").display(),
            rc = self.path("rc").display(),
        );
        let status = std::process::Command::new("unshare")
            .args(["-rm", "sh", "-c", &script])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "unshare -rm (a private mount namespace) must work here"
        );
        (
            std::fs::read_to_string(self.path("rc")).unwrap(),
            std::fs::read_to_string(self.path("out.json")).unwrap(),
        )
    }

    /// A job over `source` (type and path lines) with three file nodes a, b, c.
    pub fn new(source: &str, split: &str, replicas: usize) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        let text = format!(
            r#"name = "e2e"

[source]
{source}

[split]
{split}

[repository]
directory = "cold/e2e"
replicas = {replicas}
nodes = [
  {{ name = "a", url = "file:nodes/a" }},
  {{ name = "b", url = "file:nodes/b" }},
  {{ name = "c", url = "file:nodes/c" }},
]

[run]
parallel = 2
staging = "staging"
retries = 2
retry_delay = "1ms"
"#
        );
        std::fs::write(&job, text).unwrap();
        Env { dir, job }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The job directory on node `n`.
    pub fn node_dir(&self, n: &str) -> PathBuf {
        self.path(&format!("nodes/{n}/cold/e2e"))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("coldvault").unwrap();
        c.arg(args[0]).arg(&self.job).args(&args[1..]);
        c
    }

    /// The same command as a std `Command`, to spawn it and act while it runs.
    pub fn spawnable(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("coldvault"));
        c.arg(args[0]).arg(&self.job).args(&args[1..]);
        c
    }

    /// Runs and returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        outcome(self.cmd(args).output().unwrap())
    }

    /// Starts `args` with `var=value` (a database's password) and returns once the command has
    /// paused at failpoint `at` (`COLDVAULT_PAUSE`), so the test can act at that moment.
    pub fn paused_at(&self, args: &[&str], at: &str, var: &str, value: &str) -> Paused {
        let flag = self.path("paused");
        let child = self
            .spawnable(args)
            .env(var, value)
            .env("COLDVAULT_PAUSE", at)
            .env("COLDVAULT_PAUSE_FILE", &flag)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !flag.exists() {
            assert!(std::time::Instant::now() < until, "never paused at {at}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Paused { child, flag }
    }

    /// Runs with one more environment variable (a database's password) and returns (exit
    /// code, stdout, stderr).
    pub fn run_with(&self, args: &[&str], var: &str, value: &str) -> (i32, String, String) {
        outcome(self.cmd(args).env(var, value).output().unwrap())
    }

    /// Runs with `--json`, expecting `code`, and parses stdout.
    pub fn json(&self, args: &[&str], code: i32) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let (c, out, err) = self.run(&a);
        assert_eq!(c, code, "{args:?}: exit {c}\nstdout: {out}\nstderr: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Every data file of node `n`.
    pub fn data_files(&self, n: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.node_dir(n).join("data"), &mut out);
        out.sort();
        out
    }

    /// `verify latest --read-data` is clean and `restore latest` into `restored` gives back the
    /// tree under `src` exactly.
    pub fn assert_latest_restores_exactly(&self) {
        let v = self.json(&["verify", "latest", "--read-data"], 0);
        assert_eq!(v["ok"], true, "{v}");
        let to = self.path("restored");
        let _ = std::fs::remove_dir_all(&to);
        self.json(&["restore", "latest", "--to", to.to_str().unwrap()], 0);
        assert_eq!(
            coldvault_testing::fixtures::listing(&self.path("src")),
            coldvault_testing::fixtures::listing(&to)
        );
    }

    /// The latest manifest as JSON, read from a node's directory.
    pub fn manifest(&self, node: &str) -> Value {
        let mut files = Vec::new();
        walk(&self.node_dir(node).join("snapshots"), &mut files);
        let newest = files
            .iter()
            .map(|f| read_doc(f))
            .max_by_key(|m| m["time"].as_str().unwrap().to_owned())
            .unwrap();
        newest
    }
}

/// A command paused at a failpoint.
pub struct Paused {
    child: std::process::Child,
    flag: PathBuf,
}

impl Paused {
    /// Lets it go on; returns (exit code, stdout, stderr) once it ends.
    pub fn resume(self) -> (i32, String, String) {
        std::fs::remove_file(&self.flag).unwrap();
        outcome(self.child.wait_with_output().unwrap())
    }
}

/// (exit code, stdout, stderr) of a finished command.
fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stored document (manifest, marker, receipt) as JSON: the body of its self-checking envelope
/// (`{"format", "blake3", "body"}`), or the whole file for a format-1 document.
pub fn read_doc(path: &Path) -> Value {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match v.get("body") {
        Some(body) => body.clone(),
        None => v,
    }
}

/// Writes `body` as a stored document whose checksum checks out: an edit a reader cannot tell
/// from the real thing (as a bug that wrote it would leave).
pub fn write_doc(path: &Path, body: &Value) {
    let bytes = serde_json::to_vec_pretty(body).unwrap();
    let mut out = format!(
        "{{\"format\": 2, \"blake3\": \"{}\", \"body\": ",
        blake3::hash(&bytes).to_hex()
    )
    .into_bytes();
    out.extend_from_slice(&bytes);
    out.extend_from_slice(b"}\n");
    std::fs::write(path, out).unwrap();
}

/// A fresh age key pair in `dir/name`: (identity file, public key).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = std::process::Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen: {out:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned();
    (key, public)
}

pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.push(p);
        }
    }
}

/// Asserts two listings are equal, printing only the lines that differ.
pub fn assert_same_lines(want: &[String], got: &[String]) {
    let only_want: Vec<_> = want.iter().filter(|l| !got.contains(l)).take(10).collect();
    let only_got: Vec<_> = got.iter().filter(|l| !want.contains(l)).take(10).collect();
    assert!(
        only_want.is_empty() && only_got.is_empty() && want.len() == got.len(),
        "only in the original: {only_want:#?}\nonly in the restore: {only_got:#?}\n({} vs {} lines)",
        want.len(),
        got.len()
    );
}
