//! Where messages for people go: `coldvault: warning: …` lines on standard error by default, or
//! with `--log-format json` one JSON object per event (`{"time", "event", …}`), the library's
//! events ([`coldvault::event`]) included, so that a log shipper can follow a long run.

use std::io::Write;
use std::sync::OnceLock;

static JSON: OnceLock<bool> = OnceLock::new();

/// True when events are written as JSON lines.
pub fn json() -> bool {
    JSON.get().copied().unwrap_or(false)
}

/// Writes events as JSON lines from now on: the library's, through the `log` facade, and this
/// module's warnings and errors. Other crates' warnings become `log` events.
pub fn install_json() {
    if JSON.set(true).is_ok() && log::set_logger(&JsonLogger).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// A warning: `coldvault: warning: …`, or a `warning` event.
pub fn warn(message: impl std::fmt::Display) {
    event_or_line("warning", &message.to_string(), "coldvault: warning: ");
}

/// An error that ends the command.
pub fn error(message: &str) {
    event_or_line("error", message, "coldvault: error: ");
}

/// A line for people only (a summary's detail); events carry the same in JSON mode.
pub fn human(line: impl std::fmt::Display) {
    if !json() {
        eprintln!("{line}");
    }
}

/// Emits `event` with `fields` in JSON mode.
pub fn event(event: &str, fields: serde_json::Value) {
    if json() {
        let mut line = serde_json::Map::new();
        line.insert("time".into(), coldvault::util::now_rfc3339().into());
        line.insert("event".into(), event.into());
        if let serde_json::Value::Object(f) = fields {
            line.extend(f);
        }
        write_line(&serde_json::Value::Object(line).to_string());
    }
}

fn event_or_line(name: &str, message: &str, prefix: &str) {
    if json() {
        event(name, serde_json::json!({ "message": message }));
    } else {
        eprintln!("{prefix}{message}");
    }
}

fn write_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

struct JsonLogger;

impl log::Log for JsonLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == coldvault::event::TARGET || m.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.target() == coldvault::event::TARGET {
            write_line(&record.args().to_string());
        } else {
            event(
                "log",
                serde_json::json!({
                    "level": record.level().as_str(),
                    "target": record.target(),
                    "message": record.args().to_string(),
                }),
            );
        }
    }

    fn flush(&self) {}
}
