//! What `check` looks at for a PostgreSQL source besides planning: the client programs a backup
//! runs (`pg_dump` for the schema, `psql` for ranges), and that the role may read every selected
//! table whole (`SELECT`, and no row-level security policy hiding rows from it).

use std::process::Command;

use super::{connect, plan, PgServer};
use crate::catalog::TaskKind;
use crate::check::CheckLine;
use crate::job::Job;

pub(super) fn preflight(job: &Job) -> Vec<CheckLine> {
    let mut out = Vec::new();
    for program in ["psql", "pg_dump"] {
        let path = super::client::resolved(program);
        let line = match Command::new(&path).arg("--version").output() {
            Ok(o) if o.status.success() => CheckLine::new(
                format!("program {program}"),
                true,
                format!(
                    "{} ({})",
                    path.display(),
                    String::from_utf8_lossy(&o.stdout).trim()
                ),
            ),
            Ok(o) => CheckLine::new(
                format!("program {program}"),
                false,
                format!(
                    "{} --version failed: {}",
                    path.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            ),
            Err(e) => CheckLine::new(
                format!("program {program}"),
                false,
                format!(
                    "cannot run {}: {e} (a PostgreSQL backup runs it: install PostgreSQL's \
                     client programs, Debian's postgresql-client)",
                    path.display()
                ),
            ),
        };
        out.push(line);
    }
    // A server that cannot be reached is the planning line's to name.
    let Ok(db) = crate::source::database(job) else {
        return out;
    };
    let Ok(kinds) = plan(db, job.split.max_rows) else {
        return out;
    };
    let mut tables: Vec<String> = kinds
        .iter()
        .filter_map(|(k, _, _)| match k {
            TaskKind::PgRange(r) => Some(r.table.clone()),
            _ => None,
        })
        .collect();
    tables.sort();
    tables.dedup();
    let Ok(mut client) = connect(&PgServer::of(db)) else {
        return out;
    };
    let refused = client.query(
        "SELECT t FROM unnest($1::text[]) AS t \
         WHERE NOT has_table_privilege(t, 'SELECT') \
            OR (SELECT c.relrowsecurity \
                       AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) \
                FROM pg_class c WHERE c.oid = t::regclass) \
               AND NOT (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r \
                        WHERE r.rolname = current_user) \
         ORDER BY 1",
        &[&tables],
    );
    out.push(match refused {
        Ok(rows) if rows.is_empty() => CheckLine::new(
            "privileges",
            true,
            format!("may read all {} selected tables whole", tables.len()),
        ),
        Ok(rows) => CheckLine::new(
            "privileges",
            false,
            format!(
                "the role may not read these tables whole (no SELECT, or row-level security): {}",
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(e) => CheckLine::new("privileges", false, format!("cannot check: {e}")),
    });
    out
}
