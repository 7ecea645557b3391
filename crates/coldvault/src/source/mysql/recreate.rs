//! Creating a snapshot's views, routines, triggers, events and sequences in the target, each as
//! mysqldump's output would: under the `sql_mode`, `character_set_client`,
//! `collation_connection` (and, for events, `time_zone`) it was created in, set before its
//! `CREATE` and set back after, and with its `DEFINER` unless the restore is asked to skip
//! definers (the object then belongs to the restoring account).
//!
//! The text is UTF-8 in the manifest. An object written in another character set is sent as the
//! server's own conversion of it (`EXECUTE IMMEDIATE CONVERT(_utf8mb4 X'…' USING cs)`, ASCII on
//! the wire) unless its text is ASCII, so it is stored in that character set, as it was.
//!
//! Nothing is dropped silently: an object the server refuses (after other passes, for objects
//! that name one not created yet), one created with a definer the target does not have (the
//! server creates it with a note, and it fails when used), and one the server did not keep
//! (an event whose time has passed) are each named in what the restore could not do.

use std::collections::HashSet;

use mysql::prelude::Queryable;
use mysql::Conn;

use super::{ident, literal, sql_err};
use crate::catalog::{MyObject, MySequence, MySession, MysqlSchema};
use crate::error::{Error, Result};

/// The `sql_mode` a restoring session runs under between objects.
pub(super) const RESTORE_MODE: &str = "NO_AUTO_VALUE_ON_ZERO";

/// The settings of a session that creates tables and objects between objects: `SHOW CREATE
/// TABLE` prints UTF-8, so a latin1 column's default `'é'` stays `'é'`.
pub(super) const DDL_SESSION: &str = "SET SESSION foreign_key_checks = 0, unique_checks = 0, \
    sql_mode = 'NO_AUTO_VALUE_ON_ZERO', character_set_client = utf8mb4, \
    collation_connection = utf8mb4_general_ci, time_zone = '+00:00'";

/// One object to create: the word SQL names its kind by (`VIEW`, `PROCEDURE`, ...) and itself.
pub(super) struct Item<'a> {
    pub kind: &'a str,
    pub object: &'a MyObject,
}

impl Item<'_> {
    /// `trigger `t_bi``, for messages.
    fn label(&self) -> String {
        label(self.kind, &self.object.name)
    }
}

fn label(kind: &str, name: &str) -> String {
    format!("{} {}", kind.to_ascii_lowercase(), ident(name))
}

/// The routines, views, triggers and events of `schema`: the order they are created in.
pub(super) fn items(schema: &MysqlSchema) -> [Vec<Item<'_>>; 4] {
    fn of<'a>(kind: &'a str, objects: &'a [MyObject]) -> Vec<Item<'a>> {
        objects.iter().map(|object| Item { kind, object }).collect()
    }
    let routines = schema.routines.iter().map(|r| Item {
        kind: &r.kind,
        object: &r.object,
    });
    [
        routines.collect(),
        of("VIEW", &schema.views),
        of("TRIGGER", &schema.triggers),
        of("EVENT", &schema.events),
    ]
}

/// Creates objects in one connection, keeping what could not be done.
pub(super) struct Creator<'c> {
    conn: &'c mut Conn,
    skip_definer: bool,
    /// What could not be restored, one line per object.
    pub not_restored: Vec<String>,
    /// The objects named in `not_restored`, and the server's notes on each object created.
    failed: HashSet<String>,
    notes: Vec<(String, String)>,
}

impl<'c> Creator<'c> {
    pub(super) fn new(conn: &'c mut Conn, skip_definer: bool) -> Creator<'c> {
        Creator {
            conn,
            skip_definer,
            not_restored: Vec::new(),
            failed: HashSet::new(),
            notes: Vec::new(),
        }
    }

    /// The connection, in its DDL session.
    pub(super) fn conn(&mut self) -> &mut Conn {
        self.conn
    }

    fn fail(&mut self, label: String, why: String) {
        self.not_restored.push(format!("{label}: {why}"));
        self.failed.insert(label);
    }

    /// Creates `items`, again while a pass creates some: a view on a view, a package body before
    /// its package, a trigger that `FOLLOWS` one not created yet.
    pub(super) fn create_all(&mut self, items: &[Item<'_>]) {
        let mut pending: Vec<&Item<'_>> = items.iter().collect();
        loop {
            let before = pending.len();
            let mut refused = Vec::new();
            for item in pending {
                match self.create(item) {
                    Ok(()) => {}
                    Err(e) => refused.push((item, e)),
                }
            }
            if refused.is_empty() || refused.len() == before {
                for (item, e) in refused {
                    self.fail(item.label(), format!("not created: {e}"));
                }
                return;
            }
            pending = refused.into_iter().map(|(item, _)| item).collect();
        }
    }

    /// Creates one object in its own session; `Err` is the server's refusal.
    fn create(&mut self, item: &Item<'_>) -> Result<(), String> {
        let o = item.object;
        let create = if self.skip_definer {
            super::definer::without_definer(&o.create)
        } else {
            o.create.clone()
        };
        let statement = statement(&create, o.session.as_ref())?;
        self.conn
            .query_drop(enter(o.session.as_ref()))
            .map_err(|e| format!("cannot set its session: {e}"))?;
        let created = self.conn.query_drop(&statement);
        let warnings: Vec<(Vec<u8>, u32, Vec<u8>)> = match created {
            Ok(()) => self.conn.query("SHOW WARNINGS").unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let back = self.conn.query_drop(DDL_SESSION);
        if let Err(e) = created {
            return Err(refusal(&e, &create));
        }
        back.map_err(|e| format!("cannot set the session back: {e}"))?;
        let text = |m: &[u8]| String::from_utf8_lossy(m).into_owned();
        if let Some((_, _, m)) = warnings.iter().find(|w| w.1 == ER_NO_SUCH_USER) {
            self.fail(
                item.label(),
                format!(
                    "created, but {}: it fails when used until that account exists on the \
                     target (create it), or restore with --skip-definer to make the restoring \
                     account its definer",
                    text(m)
                ),
            );
        }
        let notes: Vec<String> = warnings.iter().map(|w| text(&w.2)).collect();
        self.notes.push((item.label(), notes.join("; ")));
        Ok(())
    }

    /// Creates the sequences (before the tables: a column's default may draw from one).
    pub(super) fn create_sequences(&mut self, sequences: &[MySequence]) {
        for s in sequences {
            if let Err(e) = self.conn.query_drop(&s.create) {
                self.fail(label("SEQUENCE", &s.name), format!("not created: {e}"));
            }
        }
    }

    /// Sets each sequence to hand out the value it would have handed out next, as mysqldump
    /// does (`SETVAL(s, next, 0)`, with its cycle count).
    pub(super) fn set_sequence_values(&mut self, sequences: &[MySequence]) {
        for s in sequences {
            let l = label("SEQUENCE", &s.name);
            if self.failed.contains(&l) {
                continue;
            }
            let q = format!(
                "SELECT SETVAL({}, {}, 0, {})",
                ident(&s.name),
                s.next,
                s.round
            );
            match self.conn.query_first::<Option<String>, _>(&q) {
                Ok(Some(Some(_))) => {}
                Ok(_) => self.fail(l, format!("the server would not set it to {}", s.next)),
                Err(e) => self.fail(l, format!("cannot set its value to {}: {e}", s.next)),
            }
        }
    }

    /// Checks that every object of `schema` is in the target: the server may not keep what it
    /// created (an event whose time has passed). What is missing is named, with the server's
    /// notes on it.
    pub(super) fn check_all_there(&mut self, schema: &MysqlSchema) -> Result<()> {
        let present: HashSet<String> = present(self.conn, schema)?
            .iter()
            .map(|(k, n)| label(k, n))
            .collect();
        let wanted = items(schema).into_iter().flatten().map(|i| i.label());
        let sequences = schema.sequences.iter().map(|s| label("SEQUENCE", &s.name));
        for l in wanted.chain(sequences).collect::<Vec<_>>() {
            if present.contains(&l) || self.failed.contains(&l) {
                continue;
            }
            let notes = self.notes.iter().find(|(n, _)| *n == l);
            let why = match notes {
                Some((_, n)) if !n.is_empty() => format!("the server did not keep it: {n}"),
                _ => "the server did not keep it".to_owned(),
            };
            self.fail(l, why);
        }
        Ok(())
    }
}

/// MariaDB's note on a `DEFINER` that names no account.
const ER_NO_SUCH_USER: u32 = 1449;
/// Creating an object for another definer needs SUPER (or SET USER).
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;

/// The server's refusal, with the way out when it is about the definer.
fn refusal(e: &mysql::Error, create: &str) -> String {
    match e {
        mysql::Error::MySqlError(m) if m.code == ER_SPECIFIC_ACCESS_DENIED => {
            let who = super::definer::definer(create).unwrap_or("its definer");
            format!(
                "{m} (creating it for {who} needs that privilege; or restore with \
                 --skip-definer to make the restoring account its definer)"
            )
        }
        other => other.to_string(),
    }
}

/// `SET SESSION` of the settings `session` names (the restore's own where it names none).
fn enter(session: Option<&MySession>) -> String {
    let (mode, cs, coll, tz) = match session {
        Some(s) => (
            s.sql_mode.as_deref().unwrap_or(RESTORE_MODE),
            s.character_set_client.as_str(),
            s.collation_connection.as_str(),
            s.time_zone.as_deref().unwrap_or("+00:00"),
        ),
        None => (RESTORE_MODE, "utf8mb4", "utf8mb4_general_ci", "+00:00"),
    };
    format!(
        "SET SESSION sql_mode = {}, character_set_client = {}, collation_connection = {}, \
         time_zone = {}",
        literal(mode),
        literal(cs),
        literal(coll),
        literal(tz)
    )
}

/// The statement that creates `create` read as `session`'s character set: itself when that is
/// UTF-8 or the text ASCII, else the server's conversion of it, run as it comes.
fn statement(create: &str, session: Option<&MySession>) -> Result<String, String> {
    let cs = session.map_or("utf8mb4", |s| s.character_set_client.as_str());
    if create.is_ascii() || cs.starts_with("utf8") {
        return Ok(create.to_owned());
    }
    if cs.is_empty() || !cs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("{cs:?} is not a character set"));
    }
    let hex: String = create.bytes().map(|b| format!("{b:02X}")).collect();
    Ok(format!(
        "EXECUTE IMMEDIATE CONVERT(_utf8mb4 X'{hex}' USING {cs})"
    ))
}

/// The snapshot's objects already in the target: (`TABLE`, `VIEW`, `SEQUENCE`, `PROCEDURE`, ...,
/// name).
fn present(conn: &mut Conn, schema: &MysqlSchema) -> Result<Vec<(String, String)>> {
    fn names<'a>(objects: impl Iterator<Item = &'a str>) -> String {
        let list: Vec<String> = objects.map(literal).collect();
        if list.is_empty() {
            "NULL".to_owned()
        } else {
            list.join(", ")
        }
    }
    let views = schema.tables.iter().chain(&schema.views);
    let tables = names(
        (views.map(|o| o.name.as_str())).chain(schema.sequences.iter().map(|s| s.name.as_str())),
    );
    let routines = names(schema.routines.iter().map(|r| r.object.name.as_str()));
    let triggers = names(schema.triggers.iter().map(|o| o.name.as_str()));
    let events = names(schema.events.iter().map(|o| o.name.as_str()));
    let q = format!(
        "SELECT IF(TABLE_TYPE IN ('VIEW', 'SEQUENCE'), TABLE_TYPE, 'TABLE'), TABLE_NAME \
           FROM information_schema.TABLES \
           WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({tables}) \
         UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
           WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_NAME IN ({routines}) \
         UNION ALL SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS \
           WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME IN ({triggers}) \
         UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS \
           WHERE EVENT_SCHEMA = DATABASE() AND EVENT_NAME IN ({events})"
    );
    conn.query(q)
        .map_err(sql_err("cannot inspect the target".into()))
}

/// Refuses (or, with `force`, drops) the snapshot's objects already in the target.
pub(super) fn clear_target(
    conn: &mut Conn,
    schema: &MysqlSchema,
    url: &str,
    force: bool,
) -> Result<()> {
    let mut present = present(conn, schema)?;
    if present.is_empty() {
        return Ok(());
    }
    if !force {
        let mut list: Vec<String> = present.iter().map(|(k, n)| label(k, n)).collect();
        list.sort();
        return Err(Error::config(format!(
            "the target database {} already has {}; restore into a new database, or pass \
             --force to replace them",
            super::where_of(url),
            list.join(", ")
        )));
    }
    // Dependents first; a table's triggers go with it.
    const ORDER: [&str; 9] = [
        "TRIGGER",
        "EVENT",
        "PACKAGE BODY",
        "PACKAGE",
        "PROCEDURE",
        "FUNCTION",
        "VIEW",
        "TABLE",
        "SEQUENCE",
    ];
    present.sort_by_key(|(k, _)| ORDER.iter().position(|o| *o == k.as_str()));
    for (kind, name) in &present {
        conn.query_drop(format!("DROP {kind} IF EXISTS {}", ident(name)))
            .map_err(sql_err(format!("cannot drop {}", label(kind, name))))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(cs: &str) -> MySession {
        MySession {
            sql_mode: Some("ANSI_QUOTES".into()),
            character_set_client: cs.into(),
            collation_connection: format!("{cs}_bin"),
            time_zone: None,
        }
    }

    #[test]
    fn text_in_another_character_set_travels_as_the_servers_conversion() {
        let create = "CREATE FUNCTION f() RETURNS text RETURN 'é'";
        assert_eq!(
            statement(create, Some(&session("utf8mb4"))).unwrap(),
            create
        );
        assert_eq!(
            statement("CREATE VIEW v AS select 1", Some(&session("latin1"))).unwrap(),
            "CREATE VIEW v AS select 1"
        );
        let s = statement(create, Some(&session("latin1"))).unwrap();
        assert!(
            s.starts_with("EXECUTE IMMEDIATE CONVERT(_utf8mb4 X'435245415445"),
            "{s}"
        );
        assert!(s.ends_with("27C3A927' USING latin1)"), "{s}");
        assert!(statement(create, Some(&session("latin1) x"))).is_err());
    }

    #[test]
    fn the_session_of_an_object_is_set_with_quoted_values() {
        assert_eq!(
            enter(Some(&session("latin1"))),
            "SET SESSION sql_mode = 'ANSI_QUOTES', character_set_client = 'latin1', \
             collation_connection = 'latin1_bin', time_zone = '+00:00'"
        );
        assert!(enter(None).contains("character_set_client = 'utf8mb4'"));
    }
}
