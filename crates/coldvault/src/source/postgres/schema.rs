//! A PostgreSQL snapshot's schema: `pg_dump --schema-only` of the same exported snapshot, in its
//! two sections (pre-data: types, tables, sequences, functions; post-data: indexes, constraints,
//! triggers), each stored as a data file like any other, and the sequences' values.
//!
//! Owners and privileges are left out (`--no-owner --no-acl`), so a restore works into a server
//! whose roles differ; grant privileges again after a restore into production.

use super::{client, PgServer};
use crate::catalog::PostgresSchema;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::repo::Repository;
use crate::stage::Staging;
use crate::store::{data_key, Payload, Receipt};

/// Dumps the schema of `snapshot` (both sections at once) and stores it; `sequences` were read
/// in the same snapshot. Runs while the data tasks run: it only needs the snapshot to stay open.
pub(crate) fn capture(
    job: &Job,
    target: &PgServer<'_>,
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
    t: &PgServer<'_>,
    snapshot: &str,
    section: &str,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let mut dump = client::PgTool::pg_dump(t);
    dump.args(["--schema-only", "--no-owner", "--no-acl"])
        .args([format!("--section={section}")]);
    if section == "pre-data" {
        // `DROP … IF EXISTS` before each `CREATE`: no-ops into a new database, and what lets
        // `restore --force` replace the snapshot's types, sequences and views.
        dump.args(["--clean", "--if-exists"]);
    }
    dump.args([format!("--snapshot={snapshot}")]);
    dump.run(
        None,
        Some(&mut |chunk: &[u8]| {
            out.write_all(chunk)
                .map_err(|e| Error::io("cannot write staged data", e))
        }),
        &format!("pg_dump --section={section} failed"),
    )?;
    Ok(())
}
