//! Events of a run, for a log shipper following a long backup or restore: one JSON object each
//! (`{"time", "event", …}`), handed to the `log` facade under the target [`TARGET`] at level
//! info. The library prints nothing itself: the command line's `--log-format json` installs a
//! logger that writes them one per line on standard error; without a logger they cost a check.
//!
//! Events: `task_started`, `task_finished` (task, kind, outcome, bytes), `request_retried`
//! (node, what, attempt, error), `node_left_out` (node, why).

use serde_json::{Map, Value};

/// The `log` target of events.
pub const TARGET: &str = "coldvault::event";

/// Emits `event` with `fields` (a JSON object), stamped with the time.
pub(crate) fn emit(event: &str, fields: Value) {
    if !log::log_enabled!(target: TARGET, log::Level::Info) {
        return;
    }
    let mut line = Map::new();
    line.insert("time".into(), crate::util::now_rfc3339().into());
    line.insert("event".into(), event.into());
    if let Value::Object(f) = fields {
        line.extend(f);
    }
    log::info!(target: TARGET, "{}", Value::Object(line));
}
