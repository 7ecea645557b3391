//! A PostgreSQL snapshot's schema: `pg_dump --schema-only` of the same exported snapshot, in its
//! two sections (pre-data: types, tables, sequences, functions; post-data: indexes, constraints,
//! triggers), each stored as a data file like any other, and the sequences' values.
//!
//! Owners and privileges are left out (`--no-owner --no-acl`), so a restore works into a server
//! whose roles differ; grant privileges again after a restore into production.

use std::io::Read;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::postgres::PgTarget;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::repo::Repository;
use crate::stage::Staging;
use crate::store::{data_key, Payload, Receipt};

/// What a snapshot keeps of a PostgreSQL database besides its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresSchema {
    /// `pg_dump --section=pre-data --clean --if-exists` (SQL, zstd).
    pub pre_data: Receipt,
    /// `pg_dump --section=post-data` (SQL, zstd).
    pub post_data: Receipt,
    /// `schema.sequence` and its last value.
    pub sequences: Vec<(String, i64)>,
}

/// Dumps the schema of `snapshot` (both sections at once) and stores it; `sequences` were read
/// in the same snapshot. Runs while the data tasks run: it only needs the snapshot to stay open.
pub(crate) fn capture(
    job: &Job,
    target: &PgTarget<'_>,
    snapshot: &str,
    sequences: Vec<(String, i64)>,
    repo: &Repository,
    staging: &Staging,
) -> Result<PostgresSchema> {
    let store = |section: &str| -> Result<Receipt> {
        let mut stager = staging.stager(
            &format!("schema-{section}"),
            job.run.zstd_level,
            repo.crypt()?.as_ref(),
        )?;
        pg_dump(target, snapshot, section, &mut stager)?;
        let staged = stager.finish()?;
        let key = data_key(staged.checksum(), "sql.zst");
        repo.replicator().put(
            &key,
            Payload::File(staged.path()),
            staged.size(),
            staged.checksum(),
        )
    };
    let (pre, post) = std::thread::scope(|s| {
        let pre = s.spawn(|| store("pre-data"));
        let post = store("post-data");
        (pre.join(), post)
    });
    let pre = pre.map_err(|_| Error::source_err("the pg_dump thread panicked"))?;
    Ok(PostgresSchema {
        pre_data: pre?,
        post_data: post?,
        sequences,
    })
}

fn pg_dump(
    t: &PgTarget<'_>,
    snapshot: &str,
    section: &str,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let mut cmd = Command::new("pg_dump");
    cmd.args(["--schema-only", "--no-owner", "--no-acl", "--no-password"])
        .arg(format!("--section={section}"));
    if section == "pre-data" {
        // `DROP … IF EXISTS` before each `CREATE`: no-ops into a new database, and what lets
        // `restore --force` replace the snapshot's types, sequences and views.
        cmd.args(["--clean", "--if-exists"]);
    }
    cmd.arg(format!("--snapshot={snapshot}"))
        .arg("--dbname")
        .arg(t.url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(pw) = crate::secrets::db_password(t.password, "PGPASSWORD")? {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::source_err("cannot run pg_dump (is the PostgreSQL client installed?)").with_source(e)
    })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::source_err("pg_dump has no output"))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stdout
            .read(&mut buf)
            .map_err(|e| Error::source_err("cannot read pg_dump's output").with_source(e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("cannot write staged data", e))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| Error::source_err("pg_dump failed").with_source(e))?;
    if !output.status.success() {
        return Err(Error::source_err(format!(
            "pg_dump --section={section} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
