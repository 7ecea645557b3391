//! The library's one public error type.
//!
//! Every error has a [`ErrorKind`] (what went wrong), a [`Status`] (whether trying again can help),
//! a message, context pairs (task, node, key, path) and an optional cause. Modules build errors with
//! the constructors here; callers decide on retry from `status` alone and on exit codes from `kind`.
//!
//! An error crosses process boundaries (a Spark executor's `coldvault worker` answering the
//! coordinator) as data: it serialises to `{kind, status, message, context, cause}` and comes back
//! with the same kind, status, context and text, so nothing downstream guesses them from a string.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, coarsely: enough for exit codes and for deciding where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The job file or the command's arguments are wrong.
    Config,
    /// The source could not be read (a file tree, a database).
    Source,
    /// A storage node failed.
    Target,
    /// Something that should exist does not (a snapshot, an object).
    NotFound,
    /// Stored data does not match its checksum, or a stored file is malformed or hostile.
    Integrity,
    /// The repository holds something that conflicts with the request.
    Conflict,
    /// A local I/O error (staging, restore target).
    Io,
    /// The source changed while it was read: what was read is no version of it, so the read is
    /// made again.
    Changed,
    /// A command ran and stopped part way: what it had changed is named in the message (a
    /// restore that created a database's schema and some of its rows before a step failed).
    Incomplete,
    /// A bug: an invariant of coldvault's own does not hold (never the user's or the data's fault).
    /// A kind this build does not know (from a newer worker) reads as this one.
    #[serde(other)]
    Internal,
}

/// Whether the same request may succeed when sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Sending it again will not help.
    Permanent,
    /// Sending it again, after a pause, may help.
    Temporary,
    /// It was temporary, but it stayed that way through every retry.
    Persistent,
}

/// The library's error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    status: Status,
    message: String,
    context: Vec<(Cow<'static, str>, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The library's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A permanent error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            status: Status::Permanent,
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    /// A job file or argument error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A source error.
    pub fn source_err(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Source, message)
    }

    /// A storage node error.
    pub fn target(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Target, message)
    }

    /// Stored data that is damaged, malformed or hostile.
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }

    /// A broken invariant of coldvault's own.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Something that should exist does not.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The source changed under a read; reading again may give one version of it.
    pub fn changed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Changed, message).with_status(Status::Temporary)
    }

    /// A command that stopped part way, having changed what `message` names.
    pub fn incomplete(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Incomplete, message)
    }

    /// A local I/O error, with what was being done in `message`.
    pub fn io(message: impl Into<String>, cause: std::io::Error) -> Self {
        let status = io_status(&cause);
        Self::new(ErrorKind::Io, message)
            .with_status(status)
            .with_source(cause)
    }

    /// Sets the status.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// Marks the error as temporary.
    pub fn temporary(self) -> Self {
        self.with_status(Status::Temporary)
    }

    /// Adds a context pair (`task`, `node`, `key`, `path`, ...).
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        if !self.context.iter().any(|(k, _)| k == key) {
            self.context.push((Cow::Borrowed(key), value.to_string()));
        }
        self
    }

    /// Sets the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether sending the request again may help.
    pub fn status(&self) -> Status {
        self.status
    }

    /// True when a retry may help.
    pub fn is_temporary(&self) -> bool {
        self.status == Status::Temporary
    }

    /// The message without context or cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The value of a context pair.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k} {v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// An error as it crosses a process boundary: every part of it as data, the cause as its text.
#[derive(Serialize, Deserialize)]
struct WireError {
    kind: ErrorKind,
    status: Status,
    message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    context: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cause: Option<String>,
}

/// The cause of an error that came from another process, as that process described it.
#[derive(Debug)]
struct RemoteCause(String);

impl fmt::Display for RemoteCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteCause {}

impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireError {
            kind: self.kind,
            status: self.status,
            message: self.message.clone(),
            context: self
                .context
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            cause: self.source.as_ref().map(|c| c.to_string()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireError::deserialize(d)?;
        Ok(Error {
            kind: w.kind,
            status: w.status,
            message: w.message,
            context: w
                .context
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k), v))
                .collect(),
            source: w
                .cause
                .map(|c| Box::new(RemoteCause(c)) as Box<dyn std::error::Error + Send + Sync>),
        })
    }
}

/// Whether an I/O error may go away when the operation is tried again.
pub(crate) fn io_status(e: &std::io::Error) -> Status {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::Interrupted
        | K::TimedOut
        | K::WouldBlock
        | K::ConnectionReset
        | K::ConnectionAborted => Status::Temporary,
        _ => Status::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_context_and_cause() {
        let e = Error::target("could not store data file")
            .with_context("node", "disk2")
            .with_context("task", "ab12")
            .with_source(std::io::Error::other("disk full"));
        assert_eq!(
            e.to_string(),
            "could not store data file (node disk2, task ab12): disk full"
        );
        assert_eq!(e.context("node"), Some("disk2"));
    }

    #[test]
    fn an_error_keeps_kind_status_context_and_text_across_a_process_boundary() {
        let e = Error::target("could not store data file")
            .temporary()
            .with_context("node", "garage")
            .with_source(std::io::Error::other("503 Service Unavailable"));
        let back: Error = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back.kind(), ErrorKind::Target);
        assert_eq!(back.status(), Status::Temporary);
        assert_eq!(back.context("node"), Some("garage"));
        assert_eq!(back.to_string(), e.to_string());
    }

    #[test]
    fn io_errors_classify_for_retry() {
        let t = Error::io("x", std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(t.is_temporary());
        let p = Error::io(
            "x",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(!p.is_temporary());
    }
}
