//! The Debian package, end to end on this machine: `scripts/package` builds it (reusing a fresh
//! release build), `dpkg -i` installs it, the installed files are checked where Debian looks for
//! them, the installed unit's `ExecStart` line runs a backup as systemd would run it,
//! `systemd-analyze verify` accepts the units, and `dpkg --purge` removes it all again.
//!
//! It installs into the system, so it needs root, as `scripts/test` runs it, and fails without.
//! It holds a lock file for its whole run, so that test runs of other checkouts on this machine
//! take turns; refuses to replace a coldvault package it did not install; and purges what it
//! installed even when it fails (the leftover of a killed run is known by its marker file).

use std::path::{Path, PathBuf};
use std::process::Command;

const LOCK: &str = "/run/lock/coldvault-package-test.lock";
const MARKER: &str = "/var/lib/coldvault-package-test.installed";
const UNITS: &str = "/usr/lib/systemd/system";
/// The environment systemd gives a system service (no HOME, no TMPDIR).
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every file the package must install, where Debian's tools look for it.
const FILES: &[&str] = &[
    "/usr/bin/coldvault",
    "/usr/share/bash-completion/completions/coldvault",
    "/usr/share/zsh/vendor-completions/_coldvault",
    "/usr/share/fish/vendor_completions.d/coldvault.fish",
    "/usr/share/man/man1/coldvault.1.gz",
    "/usr/share/man/man1/coldvault-backup.1.gz",
    "/usr/share/man/man1/coldvault-restore.1.gz",
    "/usr/share/doc/coldvault/copyright",
    "/usr/share/doc/coldvault/README.md.gz",
    "/usr/share/doc/coldvault/examples/etc.toml",
    "/usr/lib/systemd/system/coldvault-backup@.service",
    "/usr/lib/systemd/system/coldvault-backup@.timer",
];

/// Runs the command, asserts it succeeded, returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether dpkg knows coldvault as anything but purged (half-installed and removed-with-config
/// count).
fn package_present() -> bool {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", "coldvault"])
        .output()
        .unwrap();
    out.status.success() && !matches!(&out.stdout[..], b"not-installed" | b"")
}

/// Runs dpkg, waiting up to two minutes while another dpkg or apt (another test run's installs)
/// holds its lock.
fn dpkg(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let out = Command::new("dpkg").args(args).output().unwrap();
        let locked = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !locked || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn purge() -> std::process::Output {
    dpkg(&["--purge".as_ref(), "coldvault".as_ref()])
}

/// What the test installed: removed when it ends, whether it passed or not.
struct Installed {
    job_file: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.job_file);
        // The marker stays when the purge failed, so the next run purges the leftover.
        if purge().status.success() {
            let _ = std::fs::remove_file(MARKER);
        }
    }
}

#[test]
fn the_debian_package_installs_runs_its_unit_command_and_purges_cleanly() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the package test installs with dpkg: run it as root"
    );
    std::fs::create_dir_all("/run/lock").unwrap();
    let lock = std::fs::File::create(LOCK).unwrap();
    lock.lock().unwrap();

    if package_present() {
        assert!(
            Path::new(MARKER).exists(),
            "a coldvault package is installed that this test did not install; it would replace \
             it: remove it first (dpkg --purge coldvault)"
        );
        let out = purge();
        assert!(out.status.success(), "purging a leftover: {out:?}");
    }
    assert!(
        !Path::new("/usr/bin/coldvault").exists(),
        "/usr/bin/coldvault exists without the package; the test would overwrite it"
    );

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out_dir = tempfile::tempdir().unwrap();
    let built = run(Command::new(repo.join("scripts/package")).arg(out_dir.path()));
    let deb = PathBuf::from(built.lines().last().unwrap());
    assert!(deb.is_file(), "{built}");

    let name = format!("cvpkgtest-{}", std::process::id());
    std::fs::write(MARKER, &name).unwrap();
    let installed = Installed {
        job_file: PathBuf::from(format!("/etc/coldvault/{name}.toml")),
    };
    // --path-include: a dpkg configured to leave out man pages and docs (Docker images) still
    // installs every file of this package.
    let out = dpkg(&["--path-include=/*".as_ref(), "-i".as_ref(), deb.as_os_str()]);
    assert!(out.status.success(), "dpkg -i: {out:?}");

    check_installed_files();
    backup_as_the_unit_runs_it(&name, &installed.job_file);
    verify_units(&name);

    drop(installed);
    assert!(!package_present(), "dpkg --purge left the package known");
    for file in FILES {
        assert!(!Path::new(file).exists(), "{file} left after purge");
    }
    assert!(
        !Path::new("/etc/coldvault").exists(),
        "/etc/coldvault left after purge"
    );
}

fn check_installed_files() {
    let version = run(Command::new("/usr/bin/coldvault").arg("--version"));
    assert_eq!(
        version,
        format!("coldvault {}\n", env!("CARGO_PKG_VERSION"))
    );
    let listed = run(Command::new("dpkg").args(["-L", "coldvault"]));
    for file in FILES {
        assert!(Path::new(file).is_file(), "{file} not installed");
        assert!(listed.lines().any(|l| l == *file), "{file} not in dpkg -L");
    }
    run(Command::new("bash").arg("-n").arg(FILES[1]));
    run(Command::new("zsh").arg("-n").arg(FILES[2]));
    run(Command::new("fish").arg("--no-execute").arg(FILES[3]));
    // man finds the pages by name, as a user types it.
    for page in ["coldvault", "coldvault-backup"] {
        let path = run(Command::new("man").args(["-w", page]));
        assert_eq!(path.trim(), format!("/usr/share/man/man1/{page}.1.gz"));
    }
    let text = run(Command::new("man")
        .args(["-l", FILES[4]])
        .env("LC_ALL", "C")
        .env("MANPAGER", "cat"));
    assert!(
        text.contains("SYNOPSIS") && text.contains("coldvault-restore(1)"),
        "{text}"
    );
    // The example job is usable where it is installed.
    run(Command::new("/usr/bin/coldvault").args(["plan", FILES[9]]));
    let mode = std::fs::metadata("/etc/coldvault").unwrap();
    assert!(mode.is_dir());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o750
    );
}

/// The installed service's `ExecStart`, with `%i` the job name, run with the environment,
/// working directory and umask systemd gives it, on a job at /etc/coldvault/NAME.toml that backs
/// up a small tree to a temporary node.
fn backup_as_the_unit_runs_it(name: &str, job_file: &Path) {
    let unit = std::fs::read_to_string(format!("{UNITS}/coldvault-backup@.service")).unwrap();
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit:\n{unit}"))
            .replace("%i", name)
    };
    let exec_start = setting("ExecStart");
    assert_eq!(
        exec_start,
        format!("/usr/bin/coldvault backup /etc/coldvault/{name}.toml")
    );
    let umask = setting("UMask");

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(
        job_file,
        format!(
            "name = \"{name}\"\n\n[source]\ntype = \"fs\"\npath = \"{src}\"\n\n\
             [repository]\ndirectory = \"cold/{name}\"\nnodes = [{{ name = \"n1\", url = \
             \"file://{node}\" }}]\n\n[run]\nstaging = \"{staging}\"\n",
            src = src.display(),
            node = tmp.path().join("node").display(),
            staging = tmp.path().join("staging").display(),
        ),
    )
    .unwrap();

    // systemd splits ExecStart at spaces (ours has no quotes) and runs it from / with its own
    // environment and the unit's umask.
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec {exec_start}"))
        .current_dir("/")
        .env_clear()
        .env("PATH", SYSTEMD_PATH)
        .env("LANG", "C.UTF-8"));

    let listing = run(Command::new("/usr/bin/coldvault")
        .args(["snapshots", "--json"])
        .arg(job_file));
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let snapshots = listing["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 1, "{listing}");
    assert_eq!(snapshots[0]["job"], name);
    assert_eq!(snapshots[0]["files"], 2, "{listing}");
    run(Command::new("/usr/bin/coldvault")
        .args(["verify", "--read-data"])
        .arg(job_file));
}

/// `systemd-analyze verify` on an instance of each template, as systemd would load it; any line
/// it prints about our units fails the test.
fn verify_units(name: &str) {
    for kind in ["service", "timer"] {
        let instance = format!("{UNITS}/coldvault-backup@{name}.{kind}");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&instance)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{instance}: {stderr}");
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("coldvault")).collect();
        assert!(
            ours.is_empty(),
            "systemd-analyze verify {instance}:\n{stderr}"
        );
    }
}
