//! Files generated from the clap definitions, so they never disagree with the parser: shell
//! completion scripts (`coldvault completions SHELL`) and manual pages (the hidden `coldvault
//! man`, which `scripts/man` and `scripts/package` call).
//!
//! Both are rendered into memory first and written with one `write_all`, so a closed pipe is an
//! error with exit code 2, never a panic inside the generators.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use crate::{Cli, Failure};

/// `coldvault completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> Result<u8, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "coldvault", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(0)
}

/// `coldvault man`: `coldvault.1` on stdout; with `--dir`, `coldvault.1` and one
/// `coldvault-SUBCOMMAND.1` per visible subcommand written there (the main page's SUBCOMMANDS
/// section names those pages).
pub fn man(dir: Option<&Path>) -> Result<u8, Failure> {
    let cmd = command();
    let page = main_page(&cmd)?;
    match dir {
        None => std::io::stdout().lock().write_all(&page)?,
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                Man::new(sub.clone()).generate_to(dir)?;
            }
            std::fs::write(dir.join("coldvault.1"), page)?;
        }
    }
    Ok(0)
}

/// The command as the pages describe it: built (so subcommands are named `coldvault-backup`),
/// without the `help` subcommand, which has no page.
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// clap_mangen's sections, then the ones a user of a backup tool looks for in `man coldvault`.
fn main_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    out.extend_from_slice(DESCRIPTION.as_bytes());
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Hand-written roff: what the command does, in more words than its one-line about.
const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBcoldvault\fR makes cold backups of file trees and of SQLite, PostgreSQL and MySQL/MariaDB
databases. A job, described by a TOML file (\fIJOB.toml\fR), is split into map tasks; the tasks
run in parallel, on this machine or on a Spark cluster, each stores its share as a data file
(tar or CSV, zstd\-compressed, BLAKE3\-checked) on several nodes (directories or S3\-compatible
buckets), and a snapshot is committed when every task has stored its data file. Snapshots are
listed, verified, repaired and restored with the subcommands below, or by hand with \fBtar\fR,
\fBzstd\fR and the database's own tools.
.PP
Each subcommand has its own page: \fBman coldvault\-backup\fR, \fBman coldvault\-restore\fR, ...
With \fB\-\-json\fR, a subcommand prints one JSON document on stdout instead of text.
"#;

/// Hand-written roff: exit status, files, environment, see also.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
0
The command did what it says.
.TP
1
It ran but found damage (verify, repair), some tasks failed (backup, restore: then no snapshot
is committed), some database objects could not be restored, or a restore stopped part way.
.TP
2
It could not run at all: bad arguments, a bad job file, an unreachable source or node.
.TP
3
A backup saved its snapshot but left out entries it could not read (named in its warnings).
.SH FILES
.TP
\fI/etc/coldvault/JOB.toml\fR
The job file read by the \fBcoldvault\-backup@JOB.service\fR unit (its timer,
\fBcoldvault\-backup@JOB.timer\fR, runs it daily). Relative paths in a job file are taken from
its directory; the unit sees \fI/etc\fR read\-only, so give \fBstaging\fR and \fBfile:\fR nodes
as absolute paths.
.TP
\fI/etc/coldvault/JOB.env\fR
Optional environment of that unit (passwords, S3 keys), one \fINAME=value\fR a line.
.TP
\fI/usr/share/doc/coldvault/examples/\fR
An example job file.
.SH ENVIRONMENT
Secrets (database passwords, S3 keys) come from the environment or from files the job file
names, never from the command line, and are never printed.
.B TMPDIR
is where staging goes when the job sets no \fB[run] staging\fR.
.SH "SEE ALSO"
\fBsystemd.timer\fR(5), \fBtar\fR(1), \fBzstd\fR(1), \fBage\fR(1)
"#;
