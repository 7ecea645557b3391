//! What a restored PostgreSQL database must give back, read from two databases on the same server
//! and compared: the check of issue #13 (PostgreSQL's regression database through coldvault and
//! through `pg_dump` + `pg_restore`).
//!
//! [`Contents::read`] takes, from one database:
//! - per table (`relkind 'r'`: plain tables, inheritance parents read with `ONLY`, partitions) and
//!   per materialized view: the row count and an order-independent content hash — the sum of a
//!   64-bit MD5 prefix of each row as `to_jsonb`, whose keys are sorted, so the column order does
//!   not matter, only the columns' names and values. When `to_jsonb` fails on a row, each column
//!   is turned into text by name instead (`jsonb_object(names, values::text)`);
//! - each sequence's `last_value` and `is_called`;
//! - each large object's oid, size and MD5;
//! - `pg_dump --schema-only --no-owner --no-acl`, split object by object at its
//!   `-- Name: …; Type: …; Schema: …` headers.
//!
//! Values are read under fixed output settings (UTC, ISO dates, `C` money and numbers), so the
//! database-level settings of either side (`ALTER DATABASE … SET`) do not change a hash.
//!
//! [`differences`] lists what the restore has otherwise than the source, one line each. A line
//! names the object and what the restore holds, with the source's value in brackets, so that two
//! restores that differ from the source in the same way give the same line.

use std::collections::{BTreeMap, BTreeSet};

use crate::Postgres;

/// What one database holds, as far as a restore must give it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    /// `schema.table` -> `N rows, content HASH` (`… (by column text)` when `to_jsonb` failed),
    /// or `unreadable: ERROR`.
    pub tables: BTreeMap<String, String>,
    /// `schema.matview` -> `N rows, content HASH` or `not populated`.
    pub matviews: BTreeMap<String, String>,
    /// `schema.sequence` -> `last_value N, is_called B`.
    pub sequences: BTreeMap<String, String>,
    /// oid -> `size N, md5 M`.
    pub large_objects: BTreeMap<i64, String>,
    /// `Name: …; Type: …; Schema: …` -> the bodies of the objects under that header.
    pub schema: BTreeMap<String, Vec<String>>,
}

/// Fixed output settings, so that both sides print values alike.
const SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
    SET IntervalStyle = 'postgres'; SET lc_monetary = 'C'; SET lc_numeric = 'C'; \
    SET bytea_output = 'hex'; SET extra_float_digits = 1; SET timezone_abbreviations = 'Default'; \
    SET search_path = pg_catalog; SET statement_timeout = 0";

const RELATIONS: &str = "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text, \
    c.relispopulated FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname <> 'information_schema' \
      AND n.nspname !~ '^pg_(catalog$|toast|temp_)' ORDER BY 1";

impl Contents {
    /// Reads database `db` of `pg`.
    pub fn read(pg: &Postgres, db: &str) -> Contents {
        let mut c = pg.client(db);
        c.batch_execute(SETTINGS).unwrap();
        let mut out = Contents {
            tables: BTreeMap::new(),
            matviews: BTreeMap::new(),
            sequences: BTreeMap::new(),
            large_objects: large_objects(&mut c),
            schema: schema_objects(&pg.schema_dump(db)),
        };
        for row in c.query(RELATIONS, &[]).unwrap() {
            let (name, kind, populated): (String, String, bool) =
                (row.get(0), row.get(1), row.get(2));
            match kind.as_str() {
                "r" => {
                    out.tables.insert(name.clone(), content(&mut c, &name));
                }
                "m" if !populated => {
                    out.matviews.insert(name, "not populated".into());
                }
                "m" => {
                    out.matviews.insert(name.clone(), content(&mut c, &name));
                }
                _ => {
                    out.sequences.insert(name.clone(), sequence(&mut c, &name));
                }
            }
        }
        out
    }

    /// The tables and materialized views that could not be read, with the error.
    pub fn unreadable(&self) -> Vec<String> {
        self.tables
            .iter()
            .chain(&self.matviews)
            .filter(|(_, v)| v.starts_with("unreadable"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect()
    }

    /// The number of rows in every table (not counting materialized views).
    pub fn rows(&self) -> u64 {
        self.tables
            .values()
            .filter_map(|v| v.split(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The number of schema objects (headers of the schema-only dump, counted with repeats).
    pub fn schema_objects(&self) -> usize {
        self.schema.values().map(Vec::len).sum()
    }
}

/// Compares database `restored` with database `source` on the same server.
pub fn compare(pg: &Postgres, source: &str, restored: &str) -> Vec<String> {
    differences(&Contents::read(pg, source), &Contents::read(pg, restored))
}

/// What `restored` has otherwise than `source`, one line each, sorted by kind then name.
pub fn differences(source: &Contents, restored: &Contents) -> Vec<String> {
    let mut out = Vec::new();
    diff_map("table", &source.tables, &restored.tables, &mut out);
    diff_map("matview", &source.matviews, &restored.matviews, &mut out);
    diff_map("sequence", &source.sequences, &restored.sequences, &mut out);
    diff_map(
        "large object",
        &source.large_objects,
        &restored.large_objects,
        &mut out,
    );
    diff_schema(&source.schema, &restored.schema, &mut out);
    out
}

fn diff_map<K: Ord + std::fmt::Display>(
    kind: &str,
    source: &BTreeMap<K, String>,
    restored: &BTreeMap<K, String>,
    out: &mut Vec<String>,
) {
    for (k, want) in source {
        match restored.get(k) {
            None => out.push(format!("{kind} {k}: missing")),
            Some(got) if got != want => out.push(format!("{kind} {k}: {got} (source: {want})")),
            Some(_) => {}
        }
    }
    for k in restored.keys().filter(|k| !source.contains_key(k)) {
        out.push(format!("{kind} {k}: extra"));
    }
}

fn diff_schema(
    source: &BTreeMap<String, Vec<String>>,
    restored: &BTreeMap<String, Vec<String>>,
    out: &mut Vec<String>,
) {
    for (header, want) in source {
        match restored.get(header) {
            None => out.push(format!("schema object missing: {header}")),
            Some(got) if got != want => out.push(format!(
                "schema object different: {header}: {}",
                first_difference(want, got)
            )),
            Some(_) => {}
        }
    }
    for header in restored.keys().filter(|h| !source.contains_key(*h)) {
        out.push(format!("schema object extra: {header}"));
    }
}

/// The first line of the source's bodies that the restore lacks and the first line of the
/// restore's that the source lacks (or, when they have the same lines, that their order differs).
fn first_difference(want: &[String], got: &[String]) -> String {
    let lines = |bodies: &[String]| -> Vec<String> {
        bodies
            .iter()
            .flat_map(|b| b.lines().map(str::to_owned))
            .collect()
    };
    let (w, g) = (lines(want), lines(got));
    let (ws, gs): (BTreeSet<&String>, BTreeSet<&String>) = (w.iter().collect(), g.iter().collect());
    let only = |a: &[String], other: &BTreeSet<&String>| {
        a.iter()
            .find(|l| !other.contains(l))
            .map(|l| format!("{:?}", shorten(l)))
            .unwrap_or_else(|| "-".into())
    };
    let (ow, og) = (only(&w, &gs), only(&g, &ws));
    if ow == "-" && og == "-" {
        format!(
            "the same lines in another order ({} objects vs {})",
            want.len(),
            got.len()
        )
    } else {
        format!("restored has {og}, source has {ow}")
    }
}

fn shorten(line: &str) -> String {
    let mut s: String = line.chars().take(120).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// `N rows, content HASH` of a table or materialized view, read by column name.
fn content(c: &mut postgres::Client, name: &str) -> String {
    let hash = |row: &str| {
        format!(
            "SELECT count(*), coalesce(sum(('x' || left(md5(({row})::text), 16))::bit(64)::int8::numeric), 0)::text \
             FROM ONLY {name} cv_row_"
        )
    };
    let (row, how) = match c.query_one(&hash("to_jsonb(cv_row_)"), &[]) {
        Ok(row) => (row, ""),
        Err(_) => {
            let by_text = hash(&by_column_text(c, name));
            match c.query_one(&by_text, &[]) {
                Ok(row) => (row, " (by column text)"),
                Err(e) => return format!("unreadable: {}", db_message(&e)),
            }
        }
    };
    let (n, sum): (i64, String) = (row.get(0), row.get(1));
    format!("{n} rows, content {sum}{how}")
}

/// `jsonb_object(ARRAY[names], ARRAY[(col)::text, …])` of a relation's live columns.
fn by_column_text(c: &mut postgres::Client, name: &str) -> String {
    let cols: Vec<String> = c
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass \
             AND attnum > 0 AND NOT attisdropped ORDER BY attname",
            &[&name],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let names: Vec<String> = cols
        .iter()
        .map(|n| format!("'{}'", n.replace('\'', "''")))
        .collect();
    let values: Vec<String> = cols
        .iter()
        .map(|n| format!("(cv_row_.{})::text", quote(n)))
        .collect();
    format!(
        "jsonb_object(ARRAY[{}]::text[], ARRAY[{}]::text[])",
        names.join(", "),
        values.join(", ")
    )
}

fn sequence(c: &mut postgres::Client, name: &str) -> String {
    match c.query_one(
        &format!("SELECT last_value::text, is_called FROM {name}"),
        &[],
    ) {
        Ok(r) => format!(
            "last_value {}, is_called {}",
            r.get::<_, String>(0),
            r.get::<_, bool>(1)
        ),
        Err(e) => format!("unreadable: {}", db_message(&e)),
    }
}

fn large_objects(c: &mut postgres::Client) -> BTreeMap<i64, String> {
    c.query(
        "SELECT oid::int8, length(b)::int8, md5(b) \
         FROM (SELECT oid, lo_get(oid) AS b FROM pg_largeobject_metadata) lo",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let (oid, size, md5): (i64, i64, String) = (r.get(0), r.get(1), r.get(2));
        (oid, format!("size {size}, md5 {md5}"))
    })
    .collect()
}

fn db_message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// Splits a plain-text `pg_dump` at its `-- Name: …` headers: header (without `-- ` and the
/// owner) -> the bodies under it, each trimmed, sorted. What comes before the first header (the
/// `SET`s, `\restrict KEY`) and the trailer are left out.
pub fn schema_objects(dump: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    let mut finish = |cur: Option<(String, Vec<&str>)>| {
        if let Some((h, body)) = cur {
            out.entry(h)
                .or_default()
                .push(body.join("\n").trim().to_owned());
        }
    };
    let lines: Vec<&str> = dump.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(h) = line.strip_prefix("-- Name: ") {
            finish(current.take());
            let header = match h.rfind("; Owner: ") {
                Some(at) => &h[..at],
                None => h,
            };
            current = Some((format!("Name: {header}"), Vec::new()));
            // The header's closing `--` line.
            if lines.get(i + 1) == Some(&"--") {
                i += 1;
            }
        } else if line == "--" && lines.get(i + 1) == Some(&"-- PostgreSQL database dump complete")
        {
            // The trailer (and `\unrestrict KEY`, a new key each dump) belongs to no object.
            break;
        } else if let Some((_, body)) = current.as_mut() {
            // The opening `--` of the next header belongs to no body.
            let next_is_header = lines.get(i + 1).is_some_and(|l| l.starts_with("-- Name: "));
            if !(line == "--" && next_is_header) {
                body.push(line);
            }
        }
        i += 1;
    }
    finish(current);
    for bodies in out.values_mut() {
        bodies.sort();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_dump_splits_at_its_name_headers() {
        let dump = "SET x = 1;\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\n\
            CREATE TABLE public.t (\n    a integer\n);\n\n\n\
            --\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\n\
            ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a);\n\n\
            --\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n\n";
        let o = schema_objects(dump);
        assert_eq!(
            o.keys().collect::<Vec<_>>(),
            [
                "Name: t t_pkey; Type: CONSTRAINT; Schema: public",
                "Name: t; Type: TABLE; Schema: public"
            ]
        );
        assert_eq!(
            o["Name: t; Type: TABLE; Schema: public"],
            ["CREATE TABLE public.t (\n    a integer\n);"]
        );
        assert_eq!(
            o["Name: t t_pkey; Type: CONSTRAINT; Schema: public"],
            ["ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (a);"]
        );
    }

    #[test]
    fn a_difference_names_the_restore_then_the_source() {
        let mut a = Contents {
            tables: BTreeMap::from([("public.t".into(), "2 rows, content 5".into())]),
            matviews: BTreeMap::new(),
            sequences: BTreeMap::new(),
            large_objects: BTreeMap::from([(7, "size 1, md5 x".into())]),
            schema: BTreeMap::from([("Name: i".into(), vec!["CREATE INDEX i".into()])]),
        };
        let b = a.clone();
        assert!(differences(&a, &b).is_empty());
        a.tables
            .insert("public.t".into(), "3 rows, content 6".into());
        a.schema
            .insert("Name: j".into(), vec!["CREATE INDEX j".into()]);
        assert_eq!(
            differences(&a, &b),
            [
                "table public.t: 2 rows, content 5 (source: 3 rows, content 6)",
                "schema object missing: Name: j"
            ]
        );
        assert_eq!(
            differences(&b, &a),
            [
                "table public.t: 3 rows, content 6 (source: 2 rows, content 5)",
                "schema object extra: Name: j"
            ]
        );
    }
}
