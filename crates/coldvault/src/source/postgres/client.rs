//! PostgreSQL's own client programs (`psql`, `pg_dump`), run one way: the password in their
//! environment (never on a command line), never prompting, their output streamed in chunks, and a
//! failure reported with what they printed on standard error.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::PgServer;
use crate::error::{Error, Result};

/// Where each chunk of a program's standard output goes.
pub(super) type Chunks<'f> = &'f mut dyn FnMut(&[u8]) -> Result<()>;

/// One run of `program` against `server` with `args`.
pub(super) struct PgTool<'a> {
    program: &'static str,
    server: &'a PgServer<'a>,
    cmd: Command,
}

impl<'a> PgTool<'a> {
    /// `psql` without reading `~/.psqlrc`, quiet, never prompting, stopping at the first error.
    pub(super) fn psql(server: &'a PgServer<'a>) -> Self {
        let mut t = Self::new("psql", server);
        t.cmd
            .args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", server.url]);
        t
    }

    /// `pg_dump` never prompting; the database is given last by [`PgTool::run`].
    pub(super) fn pg_dump(server: &'a PgServer<'a>) -> Self {
        let mut t = Self::new("pg_dump", server);
        t.cmd.arg("--no-password");
        t
    }

    /// `pg_restore` rendering an archive as SQL: it reads a file, never the server, which is
    /// named only in its errors.
    pub(super) fn pg_restore(server: &'a PgServer<'a>) -> Self {
        Self::new("pg_restore", server)
    }

    /// Adds one argument.
    pub(super) fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    fn new(program: &'static str, server: &'a PgServer<'a>) -> Self {
        PgTool {
            program,
            server,
            cmd: Command::new(resolved(program)),
        }
    }

    /// Adds arguments.
    pub(super) fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Runs it: `input` streamed to its standard input, each chunk of its standard output to
    /// `output` (discarded when `None`). A non-zero exit is an error saying `failed` and what the
    /// program printed on standard error, which is drained beside, so a chatty program never
    /// blocks on a full pipe.
    pub(super) fn run(
        mut self,
        input: Option<&mut dyn Read>,
        output: Option<Chunks<'_>>,
        failed: &str,
    ) -> Result<()> {
        if self.program == "pg_dump" {
            self.cmd.arg("--dbname").arg(self.server.url);
        }
        let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
        self.cmd
            .stdin(piped(input.is_some()))
            .stdout(piped(output.is_some()))
            .stderr(Stdio::piped());
        // pg_restore renders a file and never connects: it gets no password.
        if self.program != "pg_restore" {
            if let Some(pw) = crate::secrets::db_password(self.server.password, "PGPASSWORD")? {
                self.cmd.env("PGPASSWORD", pw);
            }
        }
        let program = self.program;
        let mut child = self.cmd.spawn().map_err(|e| {
            Error::source_err(format!(
                "cannot run {program} (is the PostgreSQL client installed?)"
            ))
            .with_source(e)
        })?;
        let mut stderr = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_end(&mut text);
            }
            text
        });
        let fed = match (input, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => std::io::copy(bytes, &mut stdin).map(drop),
            _ => Ok(()),
        };
        let read = match (output, child.stdout.take()) {
            (Some(each), Some(stdout)) => pass_chunks(program, stdout, each),
            _ => Ok(()),
        };
        let status = child
            .wait()
            .map_err(|e| Error::source_err(format!("{program} failed")).with_source(e))?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            return Err(Error::source_err(format!(
                "{failed} on {}: {}",
                super::where_of(self.server.url),
                String::from_utf8_lossy(&errors).trim()
            )));
        }
        fed.map_err(|e| Error::source_err(format!("cannot feed {program}")).with_source(e))?;
        read
    }
}

/// Where `program` is: the one on `PATH`, except when that is Debian's `pg_wrapper` (a Perl
/// script that picks a version, costing tens of milliseconds per start, once per task): then the
/// newest version's own binary under `/usr/lib/postgresql/*/bin`, which is what the wrapper
/// would pick for a remote server. Resolved once per process.
pub(super) fn resolved(program: &'static str) -> PathBuf {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    static PG_DUMP: OnceLock<PathBuf> = OnceLock::new();
    static PG_RESTORE: OnceLock<PathBuf> = OnceLock::new();
    let cell = match program {
        "psql" => &PSQL,
        "pg_dump" => &PG_DUMP,
        _ => &PG_RESTORE,
    };
    cell.get_or_init(|| {
        // The archive pg_dump writes is read by its own version's pg_restore.
        if program == "pg_restore" {
            let beside = resolved("pg_dump").with_file_name(program);
            if beside.is_file() {
                return beside;
            }
        }
        let on_path = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(program))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file());
        let wrapped = on_path
            .as_ref()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| p.ends_with("pg_wrapper"));
        if !wrapped {
            return on_path.unwrap_or_else(|| PathBuf::from(program));
        }
        newest_installed(program).unwrap_or_else(|| PathBuf::from(program))
    })
    .clone()
}

/// `/usr/lib/postgresql/<newest major>/bin/<program>`, if there is one.
fn newest_installed(program: &str) -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin").join(program);
            bin.is_file().then_some((major, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// Hands each chunk the program writes on `stdout` to `each`.
fn pass_chunks(program: &str, mut stdout: impl Read, each: Chunks<'_>) -> Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(
                    Error::source_err(format!("cannot read the output of {program}"))
                        .with_source(e),
                )
            }
        };
        each(&buf[..n])?;
    }
}
