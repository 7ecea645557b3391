//! The `coldvault` command: a thin shell over the coldvault library.
//!
//! Exit codes: 0 when the command did what it says; 1 when it ran but found damage (verify,
//! repair), some tasks failed (backup, restore: then no snapshot is committed), some database
//! objects could not be restored (restore, naming each), or a restore stopped part way; 2 when it
//! could not run at all (bad arguments, a bad job file, an unreachable source or node); 3 when a
//! backup saved its snapshot but left out entries it could not read (named in its warnings). With
//! `--json`, a command that fails prints one document `{"error": …, "exit_code": …}` on stdout too.

#![warn(clippy::unwrap_used)]

mod backup_cmd;
mod generate;
mod logs;
mod output;
mod retrieval;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coldvault::job::EngineKind;
use coldvault::{repair, restore, stage::Staging, verify, ErrorKind, Job, Plan, Progress};
use coldvault::{Repository, RestoreOptions, RestoreTarget};

use output::{bytes, print_json, with_progress};

#[derive(Parser)]
#[command(
    name = "coldvault",
    version,
    about = "Cold backups, split into map tasks, stored on several nodes"
)]
struct Cli {
    /// How messages and events go to standard error: human lines (and a progress bar on a
    /// terminal), or one JSON object per event for a log shipper
    #[arg(long, global = true, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the repository on every node (idempotent)
    Init {
        /// The job file
        job: PathBuf,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Check everything a backup needs (source, nodes, staging, Spark), without backing up
    Check {
        /// The job file
        job: PathBuf,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Show the tasks the job splits into, without running it
    Plan {
        /// The job file
        job: PathBuf,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Run the job: read, stage and store every task, then commit a snapshot
    Backup {
        /// The job file
        job: PathBuf,
        /// Tasks at once (default: the job's [run] parallel, else the number of cores)
        #[arg(long)]
        parallel: Option<usize>,
        #[command(flatten)]
        engine: EngineArgs,
        /// Wait this long (e.g. 10m) for another backup of the job to finish, instead of refusing
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        wait: Option<std::time::Duration>,
        /// Write the run's figures here in Prometheus's text format (default: [run] metrics_file)
        #[arg(long, value_name = "PATH")]
        metrics_file: Option<PathBuf>,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// List the job's snapshots
    Snapshots {
        /// The job file
        job: PathBuf,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Check every replica of a snapshot's data files
    Verify {
        /// The job file
        job: PathBuf,
        /// A snapshot id (or a unique prefix), or `latest`
        #[arg(default_value = "latest")]
        snapshot: String,
        /// Read every replica and check its BLAKE3 checksum
        #[arg(long)]
        read_data: bool,
        /// Read only a subset: N/M (the N-th of M fixed groups of data files) or P% (that share
        /// of the bytes, the replicas read longest ago first)
        #[arg(long, value_name = "SUBSET", value_parser = clap::value_parser!(verify::Subset))]
        read_data_subset: Option<verify::Subset>,
        /// Start no read after this long (e.g. 2h); the next run goes on where this one stopped
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        max_duration: Option<std::time::Duration>,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Copy from healthy replicas until every data file has its copies again
    Repair {
        /// The job file
        job: PathBuf,
        /// A snapshot id (or a unique prefix), or `latest`
        #[arg(default_value = "latest")]
        snapshot: String,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot into a directory, a new SQLite file, or a PostgreSQL or MySQL database
    Restore {
        /// The job file
        job: PathBuf,
        /// A snapshot id (or a unique prefix), or `latest`
        snapshot: String,
        /// Where to restore: a directory, a SQLite file, or postgres://… / mysql://… (no password)
        #[arg(long)]
        to: std::ffi::OsString,
        /// Only paths matching this glob, or inside a matching directory (repeatable)
        #[arg(long)]
        include: Vec<String>,
        /// Data files restored at once (default: the job's [run] parallel)
        #[arg(long)]
        parallel: Option<usize>,
        /// Restore into a non-empty directory, or replace an existing database file
        #[arg(long)]
        force: bool,
        /// MySQL / MariaDB: create views, routines, triggers and events without their DEFINER,
        /// so they belong to the restoring account
        #[arg(long)]
        skip_definer: bool,
        #[command(flatten)]
        retrieval: retrieval::RetrievalArgs,
        #[command(flatten)]
        engine: EngineArgs,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots by a retention policy; with --prune, delete the data files no snapshot needs
    Forget {
        /// The job file
        job: PathBuf,
        /// Keep the newest N snapshots
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Keep the newest snapshot of each of the last N days
        #[arg(long, value_name = "N")]
        keep_daily: Option<usize>,
        /// Keep the newest snapshot of each of the last N weeks
        #[arg(long, value_name = "N")]
        keep_weekly: Option<usize>,
        /// Keep the newest snapshot of each of the last N months
        #[arg(long, value_name = "N")]
        keep_monthly: Option<usize>,
        /// Say what would be removed, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Then delete, on every node, the data files no remaining snapshot needs
        #[arg(long)]
        prune: bool,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Run work requests read as JSON lines on stdin, one JSON reply per line (engines use it)
    Worker,
    /// Print the shell completion script for SHELL on stdout
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout; scripts/man writes it
    #[command(hide = true)]
    Man {
        /// Write coldvault.1 and one coldvault-SUBCOMMAND.1 per subcommand into DIR instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct EngineArgs {
    /// Where the tasks run (default: the job's [run] engine, else local)
    #[arg(long, value_parser = ["local", "spark"])]
    engine: Option<String>,
    /// The Spark master: spark://host:port, yarn, k8s://..., local-cluster[N,C,M]
    #[arg(long)]
    spark_master: Option<String>,
}

impl EngineArgs {
    /// Applies the flags to the job's run settings.
    fn apply(&self, job: &mut Job) -> Result<(), Failure> {
        if let Some(m) = &self.spark_master {
            job.run.spark.master = Some(m.clone());
        }
        match self.engine.as_deref() {
            Some("spark") => job.run.engine = EngineKind::Spark,
            Some(_) => job.run.engine = EngineKind::Local,
            None => {}
        }
        if job.run.engine == EngineKind::Spark {
            job.run.spark.master()?;
        }
        Ok(())
    }
}

/// An error with the exit code it ends the command with.
pub(crate) struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 2,
            error: e.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.log_format == "json" {
        logs::install_json();
    }
    let json = cli.command.json();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            let message = describe(&f.error);
            logs::error(&message);
            if json {
                // A script reading stdout gets one document whatever happened.
                print_json(&serde_json::json!({ "error": message, "exit_code": f.code }));
            }
            ExitCode::from(f.code)
        }
    }
}

impl Command {
    /// Whether the command was asked for one JSON document on stdout.
    fn json(&self) -> bool {
        match self {
            Command::Worker | Command::Completions { .. } | Command::Man { .. } => false,
            Command::Init { json, .. }
            | Command::Plan { json, .. }
            | Command::Check { json, .. }
            | Command::Backup { json, .. }
            | Command::Snapshots { json, .. }
            | Command::Verify { json, .. }
            | Command::Repair { json, .. }
            | Command::Restore { json, .. }
            | Command::Forget { json, .. } => *json,
        }
    }
}

/// An error and its causes on one line, each cause once: the library's errors already end with
/// their cause, which the chain then names again.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn load(path: &std::path::Path) -> Result<Job, Failure> {
    Ok(Job::load(path)?)
}

fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Worker => worker(),
        Command::Check { job, json } => {
            let job = load(&job)?;
            let report = coldvault::check::check(&job);
            if json {
                print_json(&report);
            } else {
                for c in &report.checks {
                    let mark = if c.ok { "ok  " } else { "FAIL" };
                    println!("{mark}  {:<16} {}", c.check, c.detail);
                }
            }
            Ok(if report.ok { 0 } else { 2 })
        }
        Command::Completions { shell } => generate::completions(shell),
        Command::Man { dir } => generate::man(dir.as_deref()),
        Command::Init { job, json } => {
            let job = load(&job)?;
            let report = Repository::open(&job)?.init(&job)?;
            if json {
                print_json(&report);
            } else {
                println!(
                    "repository {} of job {}: created on {}; already on {}",
                    &report.repository_id[..8],
                    job.name,
                    list_or_none(&report.created),
                    list_or_none(&report.existing)
                );
            }
            Ok(0)
        }
        Command::Plan { job, json } => {
            let job = load(&job)?;
            let plan = Plan::new(&job)?;
            if json {
                print_json(&plan);
            } else {
                output::print_plan(&job, &plan);
            }
            Ok(0)
        }
        Command::Backup {
            job,
            parallel,
            engine,
            wait,
            metrics_file,
            json,
        } => {
            let mut job = load(&job)?;
            engine.apply(&mut job)?;
            job.run.lock_wait = wait;
            let parallel = parallel.unwrap_or(job.run.parallel).max(1);
            backup_cmd::run(&job, parallel, json, metrics_file.as_deref())
        }
        Command::Snapshots { job, json } => {
            let job = load(&job)?;
            let listing = Repository::open(&job)?.list();
            for w in &listing.warnings {
                logs::warn(w);
            }
            if listing.nodes_listed == 0 && !job.repository.nodes.is_empty() {
                return Err(anyhow::anyhow!(
                    "no node of job {} could be listed (see the warnings above)",
                    job.name
                )
                .into());
            }
            if json {
                output::print_snapshots_json(&listing);
            } else {
                output::print_snapshots(&listing);
            }
            if !listing.unreadable.is_empty() {
                logs::error(&format!(
                    "{} snapshot manifest(s) could not be read on any node: {}",
                    listing.unreadable.len(),
                    listing.unreadable.join(", ")
                ));
                return Ok(1);
            }
            Ok(0)
        }
        Command::Verify {
            job,
            snapshot,
            read_data,
            read_data_subset,
            max_duration,
            json,
        } => {
            let job = load(&job)?;
            let repo = Repository::open(&job)?;
            let (manifest, nodes) = repo.find(&snapshot)?;
            let reads =
                (read_data || read_data_subset.is_some() || max_duration.is_some()).then(|| {
                    verify::DataReads {
                        subset: read_data_subset.unwrap_or(verify::Subset::All),
                        max_duration,
                    }
                });
            let report = verify::verify(&repo, &manifest, &nodes, reads.as_ref(), job.run.parallel);
            if json {
                print_json(&report);
            } else {
                output::print_verify(&report);
            }
            Ok(if report.ok { 0 } else { 1 })
        }
        Command::Forget {
            job,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            dry_run,
            prune,
            json,
        } => {
            let job = load(&job)?;
            let repo = Repository::open(&job)?;
            let policy = coldvault::forget::Policy {
                keep_last,
                keep_daily,
                keep_weekly,
                keep_monthly,
            };
            let report = coldvault::forget::forget(&repo, &policy, dry_run, prune)?;
            if json {
                print_json(&report);
            } else {
                output::print_forget(&report);
            }
            Ok(0)
        }
        Command::Repair {
            job,
            snapshot,
            json,
        } => {
            let job = load(&job)?;
            let repo = Repository::open(&job)?;
            let (manifest, nodes) = repo.find(&snapshot)?;
            let staging = Staging::create(&job.run.staging, &format!("{}-repair", job.name))?;
            let report = repair::repair(&repo, manifest, &nodes, &staging, job.run.parallel)?;
            if json {
                print_json(&report);
            } else {
                for c in &report.copied {
                    println!("copied {} from {} to {}", c.file, c.from, c.to);
                }
                for n in &report.markers_rewritten {
                    println!("wrote the repository marker to node {n}");
                }
                for n in &report.key_copies_rewritten {
                    println!("wrote the repository key to node {n}");
                }
                for u in &report.unrepairable {
                    logs::warn(format!("cannot repair {u}"));
                }
                for w in &report.warnings {
                    logs::warn(w);
                }
                println!(
                    "snapshot {}: {} copies made{}{}",
                    &report.snapshot[..8],
                    report.copied.len(),
                    if report.manifest_rewritten {
                        ", manifest written to every node"
                    } else {
                        ""
                    },
                    if report.unrepairable.is_empty() {
                        ""
                    } else {
                        "; some data files could not be repaired"
                    }
                );
            }
            Ok(if report.unrepairable.is_empty() { 0 } else { 1 })
        }
        Command::Restore {
            job,
            snapshot,
            to,
            include,
            parallel,
            force,
            skip_definer,
            retrieval,
            engine,
            json,
        } => {
            let mut job = load(&job)?;
            engine.apply(&mut job)?;
            let opts = RestoreOptions {
                include,
                parallel: parallel.unwrap_or(job.run.parallel).max(1),
                force,
                skip_definer,
                retrieval: Some(retrieval.settings()),
            };
            let started = std::time::Instant::now();
            let repo = Repository::open(&job)?;
            let (manifest, _) = repo.find(&snapshot)?;
            let retrieved = retrieval.run(&repo, &manifest, &opts.include, opts.parallel)?;
            if retrieval.only() {
                if json {
                    print_json(&retrieved);
                } else {
                    println!(
                        "snapshot {}: {} of {} data files only on archive nodes; {} readable \
                         now, {} retrievals requested now, {} already requested",
                        &manifest.id.as_str()[..8],
                        retrieved.archived,
                        retrieved.data_files,
                        retrieved.ready,
                        retrieved.requested,
                        retrieved.already_requested
                    );
                }
                // Data files no node can give: the restore would fail on them (named above).
                return Ok(if retrieved.unavailable == 0 { 0 } else { 1 });
            }
            let show = !json && !logs::json() && std::io::stdout().is_terminal();
            let mut report = with_progress(show, "restore", |p: &Progress| {
                restore::restore_from(
                    &job,
                    &repo,
                    manifest.id.as_str(),
                    &RestoreTarget::parse(&to),
                    &opts,
                    p,
                )
            })
            .map_err(|e| Failure {
                // 1: it ran and found damage, or stopped part way; 2: it could not run.
                code: match e.kind() {
                    ErrorKind::Integrity | ErrorKind::Incomplete => 1,
                    _ => 2,
                },
                error: e.into(),
            })?;
            report.retrieval = (retrieved.archived > 0).then_some(retrieved);
            for p in &report.replica_problems {
                logs::warn(format!("skipped a replica: {p}"));
            }
            for w in &report.warnings {
                logs::warn(w);
            }
            for n in &report.not_restored {
                logs::event("not_restored", serde_json::json!({ "what": n }));
                logs::human(format!("coldvault: error: not restored: {n}"));
            }
            if json {
                print_json(&report);
            } else {
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "restored snapshot {} into {}: {} files, {} dirs, {} symlinks, {} rows, {} in {secs:.1}s",
                    &report.snapshot[..8],
                    report.target,
                    report.stats.files,
                    report.stats.dirs,
                    report.stats.symlinks,
                    report.stats.rows,
                    bytes(report.stats.bytes_read)
                );
                if !report.not_restored.is_empty() {
                    println!(
                        "{} object(s) could not be restored (named above)",
                        report.not_restored.len()
                    );
                }
            }
            Ok(if report.not_restored.is_empty() { 0 } else { 1 })
        }
    }
}

/// `coldvault worker`: one reply line per request line; exit 2 on a malformed request.
fn worker() -> Result<u8, Failure> {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let request = coldvault::worker::parse_request(&line)?;
        let reply = coldvault::worker::handle(request);
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(0)
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
