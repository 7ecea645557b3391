//! What a MySQL / MariaDB backup keeps besides its tables: views, stored routines (procedures,
//! functions, MariaDB packages), triggers, events and MariaDB sequences, read as `mysqldump
//! --routines --triggers --events` reads them, on the snapshot's schema connection.
//!
//! Each is kept as `SHOW CREATE` prints it, with its `DEFINER` and the session it was created in
//! (`sql_mode`, `character_set_client`, `collation_connection`; `time_zone` for events), so a
//! restore creates it as it was. Its text is read with `character_set_results = utf8mb4`: the
//! server converts it from the character set it was written in, and the manifest holds UTF-8.
//!
//! What a selection keeps: a backup of the whole database keeps every object; one limited by
//! `tables` keeps the views and sequences whose names match its patterns, the triggers of the
//! tables it keeps, and no routines or events, which belong to the database rather than to any
//! table (a routine a kept trigger calls must then exist in the target already).
//!
//! The server hides from a user the triggers of tables it lacks the TRIGGER privilege on (as
//! mysqldump, coldvault cannot tell them from none); a user without EVENT is an error here.
//!
//! Definitions are not versioned by the snapshot (the server's data dictionary is not), and a
//! sequence's value is not either: it is read after the snapshot was taken, so it is never lower
//! than it was then and a restored sequence never hands out a number a restored row holds. An
//! object the server shows with no definition (the backup user may not see it) is an error
//! naming it and the privilege, never left out.

use mysql::prelude::Queryable;
use mysql::{Conn, Row, Value};

use super::{ident, sql_err};
use crate::catalog::{MyObject, MyRoutine, MySequence, MySession, MysqlSchema};
use crate::error::{Error, Result};

/// Reads into `schema` the objects a backup of `tables` keeps; `patterns` are the job's `tables`
/// (`None`: the whole database). The connection's results are UTF-8 afterwards.
pub(super) fn read_objects(
    conn: &mut Conn,
    schema: &mut MysqlSchema,
    tables: &[String],
    patterns: Option<&[String]>,
) -> Result<()> {
    conn.query_drop("SET SESSION character_set_results = utf8mb4")
        .map_err(sql_err("cannot set up the schema session".into()))?;
    let named = |name: &str| {
        patterns.is_none_or(|pats| {
            pats.iter()
                .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(name)))
        })
    };
    let list = |conn: &mut Conn, what: &str, q: &str| -> Result<Vec<(String, String)>> {
        conn.query(q)
            .map_err(sql_err(format!("cannot list the {what}")))
    };
    for (_, v) in list(conn, "views", VIEWS)? {
        if named(&v) {
            schema.views.push(object(conn, "VIEW", v)?);
        }
    }
    for (seq, _) in list(conn, "sequences", SEQUENCES)? {
        if named(&seq) {
            schema.sequences.push(sequence(conn, seq)?);
        }
    }
    for (trigger, table) in list(conn, "triggers", TRIGGERS)? {
        if tables.contains(&table) {
            schema.triggers.push(object(conn, "TRIGGER", trigger)?);
        }
    }
    if patterns.is_some() {
        return Ok(());
    }
    for (kind, name) in list(conn, "stored routines", ROUTINES)? {
        let object = object(conn, &kind, name)?;
        schema.routines.push(MyRoutine { kind, object });
    }
    for e in events(conn)? {
        schema.events.push(object(conn, "EVENT", e)?);
    }
    Ok(())
}

/// The names of the events, sorted. `SHOW EVENTS`, unlike `information_schema.EVENTS`, fails
/// for a user without the EVENT privilege instead of showing none.
fn events(conn: &mut Conn) -> Result<Vec<String>> {
    let rows: Vec<Row> = conn.query("SHOW EVENTS").map_err(sql_err(
        "cannot list the events (grant the backup user EVENT)".into(),
    ))?;
    let mut names: Vec<String> = rows
        .iter()
        .filter_map(|r| match r.as_ref(1) {
            Some(Value::Bytes(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        })
        .collect();
    if names.len() != rows.len() {
        return Err(Error::source_err(
            "SHOW EVENTS gave a name that is not UTF-8",
        ));
    }
    names.sort();
    Ok(names)
}

const VIEWS: &str = "SELECT '', TABLE_NAME FROM information_schema.VIEWS \
    WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME";
const SEQUENCES: &str = "SELECT TABLE_NAME, '' FROM information_schema.TABLES \
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'SEQUENCE' ORDER BY TABLE_NAME";
/// In the order they fire: per table, timing and event, by `ACTION_ORDER`.
const TRIGGERS: &str = "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
    WHERE TRIGGER_SCHEMA = DATABASE() \
    ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER";
/// A package before its body.
const ROUTINES: &str = "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
    WHERE ROUTINE_SCHEMA = DATABASE() \
    ORDER BY FIELD(ROUTINE_TYPE, 'FUNCTION', 'PROCEDURE', 'PACKAGE', 'PACKAGE BODY'), ROUTINE_NAME";

/// `SHOW CREATE kind name`: the statement, and the session when the server keeps one.
fn object(conn: &mut Conn, kind: &str, name: String) -> Result<MyObject> {
    let what = format!("{} {name}", kind.to_ascii_lowercase());
    let row: Option<Row> = conn
        .query_first(format!("SHOW CREATE {kind} {}", ident(&name)))
        .map_err(sql_err(format!("cannot read the definition of {what}")))?;
    let row = row.ok_or_else(|| Error::source_err(format!("{what} vanished during the backup")))?;
    let text = |column: &dyn Fn(&str) -> bool| -> Result<Option<String>> {
        let Some(i) = row.columns_ref().iter().position(|c| column(&c.name_str())) else {
            return Ok(None);
        };
        match row.as_ref(i) {
            Some(Value::Bytes(b)) => String::from_utf8(b.clone()).map(Some).map_err(|_| {
                Error::source_err(format!("the definition of {what} is not valid UTF-8"))
            }),
            _ => Ok(None),
        }
    };
    let create = text(&|c| c.starts_with("Create ") || c == "SQL Original Statement")?
        .ok_or_else(|| hidden(kind, &what))?;
    let session = match (
        text(&|c| c == "character_set_client")?,
        text(&|c| c == "collation_connection")?,
    ) {
        (Some(character_set_client), Some(collation_connection)) => Some(MySession {
            sql_mode: text(&|c| c == "sql_mode")?,
            character_set_client,
            collation_connection,
            time_zone: text(&|c| c == "time_zone")?,
        }),
        _ => None,
    };
    Ok(MyObject {
        name,
        create,
        session,
    })
}

/// The error for an object the server lists but shows no definition of.
fn hidden(kind: &str, what: &str) -> Error {
    let privilege = match kind {
        "VIEW" => "SHOW VIEW",
        "TRIGGER" => "TRIGGER",
        "EVENT" => "EVENT",
        _ => "SELECT on mysql.proc (from MariaDB 11.3: SHOW CREATE ROUTINE)",
    };
    Error::source_err(format!(
        "the server shows no definition of {what} to the backup user: grant it {privilege}"
    ))
}

/// A sequence's definition and where it stands, read without advancing it.
fn sequence(conn: &mut Conn, name: String) -> Result<MySequence> {
    let object = object(conn, "SEQUENCE", name)?;
    let what = format!("sequence {}", object.name);
    let row: Option<(String, String)> = conn
        .query_first(format!(
            "SELECT next_not_cached_value, cycle_count FROM {}",
            ident(&object.name)
        ))
        .map_err(sql_err(format!("cannot read the value of {what}")))?;
    let (next, round) = row.ok_or_else(|| Error::source_err(format!("{what} has no value")))?;
    let bad = |v: &str| Error::source_err(format!("{what}: {v:?} is not a value coldvault keeps"));
    Ok(MySequence {
        next: next.parse().map_err(|_| bad(&next))?,
        round: round.parse().map_err(|_| bad(&round))?,
        name: object.name,
        create: object.create,
    })
}

#[cfg(test)]
mod tests {
    use crate::catalog::MysqlSchema;

    #[test]
    fn a_schema_of_an_older_snapshot_still_reads() {
        let old = r#"{"tables": [{"name": "t", "create": "CREATE TABLE `t` (\n  `id` int\n)"}],
            "views": [{"name": "v", "create": "CREATE VIEW `v` AS select 1"}], "lock_ms": 3}"#;
        let s: MysqlSchema = serde_json::from_str(old).unwrap();
        assert_eq!(s.views[0].session, None);
        assert!(s.routines.is_empty() && s.triggers.is_empty() && s.sequences.is_empty());
        let again = serde_json::to_string(&s).unwrap();
        assert!(
            !again.contains("routines") && !again.contains("session"),
            "{again}"
        );
    }
}
