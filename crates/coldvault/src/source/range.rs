//! The SQL of one range of a table, shared by the database sources: `SELECT cols FROM table WHERE
//! lo <= key AND key < hi AND (filter)`. Ranges are half-open, and an unbounded end adds no
//! condition, so neighbouring ranges meet without gap or overlap. Each dialect quotes its own
//! identifiers and writes its own column list and bounds (PostgreSQL's blocks are `ctid` values).

use std::fmt::Display;

/// `key >= start` and `key < end`, for the ends that are bounded.
pub(crate) fn bounds(
    key: &str,
    start: Option<impl Display>,
    end: Option<impl Display>,
) -> Vec<String> {
    let mut cond = Vec::new();
    if let Some(s) = start {
        cond.push(format!("{key} >= {s}"));
    }
    if let Some(e) = end {
        cond.push(format!("{key} < {e}"));
    }
    cond
}

/// `SELECT columns FROM table`, with `cond` and the user's `filter` (in parentheses) joined by AND.
pub(crate) fn select(
    columns: &str,
    table: &str,
    mut cond: Vec<String>,
    filter: Option<&str>,
) -> String {
    if let Some(f) = filter {
        cond.push(format!("({f})"));
    }
    let mut q = format!("SELECT {columns} FROM {table}");
    if !cond.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&cond.join(" AND "));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_ranges_meet_without_gap_or_overlap() {
        let a = bounds("k", None::<i64>, Some(10));
        let b = bounds("k", Some(10), None::<i64>);
        assert_eq!(a, ["k < 10"]);
        assert_eq!(b, ["k >= 10"]);
        assert_eq!(
            select("*", "t", b, Some("x = 1")),
            "SELECT * FROM t WHERE k >= 10 AND (x = 1)"
        );
        assert_eq!(select("a", "t", Vec::new(), None), "SELECT a FROM t");
    }
}
