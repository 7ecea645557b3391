//! The one thing the backup asks of a PostgreSQL server in bulk, `COPY … TO STDOUT`, spoken
//! in its wire protocol on a blocking socket, with no client program or async client between.
//!
//! The server sends one `CopyData` message per row. A general client hands each message on
//! by itself (rust-postgres: one channel send and one buffer per row), and `psql` writes each
//! row through stdio into a pipe that wakes the reader for every 8 KiB. Here the socket is read
//! in 256 KiB gulps while the reader is busy compressing, and rows are gathered into 256 KiB
//! chunks before they reach the sink: no process, no pipe, no per-row call downstream.
//!
//! What it speaks: the startup message (user, database, `options`, `client_encoding = UTF8`,
//! `application_name`), trust, cleartext, MD5 and SCRAM-SHA-256 authentication, and simple
//! queries. Not TLS: like every other connection of this source, it connects without it.
//! Errors are the server's own words (`ERROR: …`, with its detail and hint).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use postgres::config::Host;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;

use super::{where_of, PgServer};
use crate::error::{Error, Result};

/// How much is read from the socket, and handed to the sink, at once.
const CHUNK: usize = 256 << 10;

/// Runs `statements` one after another, then streams the rows of `copy` (a `COPY … TO
/// STDOUT`) into `sink` in chunks of whole rows, then commits what `statements` began.
pub(super) fn copy_out(
    t: &PgServer<'_>,
    statements: &[String],
    copy: &str,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut conn = Conn::open(t)?;
    for s in statements {
        conn.simple(s, &mut |_| Ok(()))?;
    }
    let mut rows = Vec::with_capacity(CHUNK);
    conn.simple(copy, &mut |payload| {
        rows.extend_from_slice(payload);
        if rows.len() >= CHUNK - 4096 {
            sink(&rows)?;
            rows.clear();
        }
        Ok(())
    })?;
    if !rows.is_empty() {
        sink(&rows)?;
    }
    conn.simple("COMMIT", &mut |_| Ok(()))?;
    conn.close();
    Ok(())
}

/// A socket to the server, over TCP or a Unix-domain socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One authenticated session.
struct Conn {
    reader: BufReader<Stream>,
    writer: Stream,
    url: String,
    /// The message being read: its type and body (a `CopyData`'s body is the row).
    body: Vec<u8>,
}

impl Conn {
    fn open(t: &PgServer<'_>) -> Result<Conn> {
        let config: postgres::Config = t.url.parse().map_err(|e| {
            Error::config(format!("postgres URL {:?} is malformed", t.url)).with_source(e)
        })?;
        let unreachable = |e: std::io::Error| {
            Error::source_err(format!("cannot connect to {}", where_of(t.url))).with_source(e)
        };
        let stream = connect(&config).map_err(unreachable)?;
        let writer = match &stream {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone().map_err(unreachable)?),
            Stream::Unix(s) => Stream::Unix(s.try_clone().map_err(unreachable)?),
        };
        let mut conn = Conn {
            reader: BufReader::with_capacity(CHUNK, stream),
            writer,
            url: t.url.to_owned(),
            body: Vec::new(),
        };
        let user = config
            .get_user()
            .ok_or_else(|| Error::config(format!("postgres URL {:?} names no user", t.url)))?;
        let password = match crate::secrets::db_password(t.password, "PGPASSWORD")? {
            Some(pw) => Some(pw.into_bytes()),
            None => config.get_password().map(<[u8]>::to_vec),
        };
        let mut params = vec![
            ("user", user),
            ("client_encoding", "UTF8"),
            ("application_name", "coldvault"),
        ];
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        let mut buf = BytesMut::new();
        frontend::startup_message(params, &mut buf).map_err(|e| conn.io(e))?;
        conn.send(&buf)?;
        conn.authenticate(user, password.as_deref())?;
        // Parameter statuses and the key to cancel with, up to ReadyForQuery.
        while conn.next()? != b'Z' {}
        Ok(conn)
    }

    fn authenticate(&mut self, user: &str, password: Option<&[u8]>) -> Result<()> {
        let mut buf = BytesMut::new();
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let kind = self.next()?;
            if kind != b'R' {
                return Err(self.protocol(kind));
            }
            let code = self.int(0);
            let pw = || {
                password.ok_or_else(|| {
                    Error::config(format!(
                        "the server {} asks for a password and none was given",
                        where_of(&self.url)
                    ))
                })
            };
            buf.clear();
            match code {
                0 => return Ok(()),
                3 => frontend::password_message(pw()?, &mut buf).map_err(|e| self.io(e))?,
                5 => {
                    let salt = self.body.get(4..8).and_then(|s| s.try_into().ok());
                    let salt = salt.ok_or_else(|| self.protocol(kind))?;
                    let hash = md5_hash(user.as_bytes(), pw()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut buf).map_err(|e| self.io(e))?
                }
                10 => {
                    let offered = self.body[4..]
                        .split(|&b| b == 0)
                        .any(|m| m == sasl::SCRAM_SHA_256.as_bytes());
                    if !offered {
                        return Err(Error::source_err(format!(
                            "{} offers no authentication this client speaks",
                            where_of(&self.url)
                        )));
                    }
                    let s = sasl::ScramSha256::new(pw()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut buf)
                        .map_err(|e| self.io(e))?;
                    scram = Some(s);
                }
                11 | 12 => {
                    let s = scram.as_mut().ok_or_else(|| self.protocol(kind))?;
                    let data = &self.body[4..];
                    if code == 11 {
                        s.update(data).map_err(|e| self.io(e))?;
                        frontend::sasl_response(s.message(), &mut buf).map_err(|e| self.io(e))?;
                    } else {
                        s.finish(data).map_err(|e| self.io(e))?;
                        continue;
                    }
                }
                _ => return Err(self.protocol(kind)),
            }
            self.send(&buf)?;
        }
    }

    /// Runs one simple query, handing each `CopyData` row to `row`, up to ReadyForQuery. The
    /// first error the server reports is the result, once the server is ready again.
    fn simple(&mut self, sql: &str, row: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| self.io(e))?;
        self.send(&buf)?;
        let mut failed = None;
        loop {
            match self.next()? {
                b'd' if failed.is_none() => row(&self.body)?,
                b'E' => failed = failed.or_else(|| Some(self.server_error())),
                b'Z' => return failed.map_or(Ok(()), Err),
                _ => {}
            }
        }
    }

    /// Reads the next message into `body` and returns its type.
    fn next(&mut self) -> Result<u8> {
        let mut head = [0u8; 5];
        self.reader.read_exact(&mut head).map_err(|e| self.io(e))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=(1 << 30) + 4).contains(&len) {
            return Err(self.protocol(head[0]));
        }
        self.body.clear();
        self.body.resize(len - 4, 0);
        let (reader, body) = (&mut self.reader, &mut self.body);
        reader.read_exact(body).map_err(|e| self.io(e))?;
        Ok(head[0])
    }

    /// The big-endian integer at `at` in the message body (0 when the body is shorter).
    fn int(&self, at: usize) -> i32 {
        self.body
            .get(at..at + 4)
            .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).map_err(|e| self.io(e))
    }

    /// Ends the session politely; the server ends the transaction if one is still open.
    fn close(mut self) {
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        let _ = self.writer.write_all(&buf);
    }

    /// An `ErrorResponse` in the server's words: `ERROR: message`, its detail and hint.
    fn server_error(&self) -> Error {
        let mut fields = std::collections::BTreeMap::new();
        for f in self.body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
            fields.insert(f[0], String::from_utf8_lossy(&f[1..]).into_owned());
        }
        let mut words = format!(
            "{}: {}",
            fields.get(&b'S').map_or("ERROR", String::as_str),
            fields.get(&b'M').map_or("", String::as_str)
        );
        for (key, label) in [(b'D', "DETAIL"), (b'H', "HINT")] {
            if let Some(v) = fields.get(&key) {
                words.push_str(&format!("\n{label}: {v}"));
            }
        }
        Error::source_err(format!("{} answered {words}", where_of(&self.url)))
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::source_err(format!("the connection to {} failed", where_of(&self.url)))
            .with_source(e)
    }

    fn protocol(&self, kind: u8) -> Error {
        Error::source_err(format!(
            "{} sent an unexpected message ({:?}) for a PostgreSQL server",
            where_of(&self.url),
            kind as char
        ))
    }
}

/// The first host of `config` that answers, as libpq tries them.
fn connect(config: &postgres::Config) -> std::io::Result<Stream> {
    let ports = config.get_ports();
    let mut last = None;
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let tried = match host {
            Host::Tcp(name) => tcp(name, port).map(Stream::Tcp),
            Host::Unix(dir) => {
                UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).map(Stream::Unix)
            }
        };
        match tried {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the URL names no host")))
}

fn tcp(name: &str, port: u16) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in (name, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{name} has no address"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers from a script: what a client sends is read and dropped.
    fn conn_reading(messages: &[(u8, Vec<u8>)]) -> Conn {
        let (a, b) = UnixStream::pair().unwrap();
        let mut bytes = Vec::new();
        for (kind, body) in messages {
            bytes.push(*kind);
            bytes.extend(((body.len() + 4) as u32).to_be_bytes());
            bytes.extend(body);
        }
        let mut server = b.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = server.write_all(&bytes);
            // Then the server hangs up its side: a client reading on finds the end.
            let _ = server.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = (&b).read_to_end(&mut sink);
        });
        Conn {
            reader: BufReader::with_capacity(CHUNK, Stream::Unix(a.try_clone().unwrap())),
            writer: Stream::Unix(a),
            url: "postgres://u@db.example:5432/d".into(),
            body: Vec::new(),
        }
    }

    #[test]
    fn rows_stream_through_and_the_servers_error_is_the_result_once_it_is_ready() {
        let rows = vec![
            (b'H', vec![0, 0, 0]),
            (b'd', b"1\ta\n".to_vec()),
            (b'd', b"2\tb\n".to_vec()),
            (b'c', Vec::new()),
            (b'C', b"COPY 2\0".to_vec()),
            (b'Z', b"T".to_vec()),
            (
                b'E',
                b"SERROR\0C42501\0Mpermission denied for table t\0HGrant it.\0\0".to_vec(),
            ),
            (b'Z', b"E".to_vec()),
        ];
        let mut conn = conn_reading(&rows);
        let mut got = Vec::new();
        conn.simple("COPY t TO STDOUT", &mut |r| {
            got.extend_from_slice(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b"1\ta\n2\tb\n");
        let err = conn
            .simple("COPY t TO STDOUT", &mut |_| Ok(()))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("db.example:5432")
                && text.contains("ERROR: permission denied for table t")
                && text.contains("HINT: Grant it."),
            "{text}"
        );
    }

    #[test]
    fn a_connection_cut_mid_copy_or_a_message_of_absurd_length_is_an_error() {
        let mut cut = conn_reading(&[(b'd', b"1\ta\n".to_vec())]);
        let err = cut.simple("COPY t TO STDOUT", &mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("connection to"), "{err}");
        let (a, b) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = (&b).write_all(&[b'd', 0xff, 0xff, 0xff, 0xff]);
            std::thread::sleep(Duration::from_millis(200));
        });
        let mut absurd = Conn {
            reader: BufReader::new(Stream::Unix(a.try_clone().unwrap())),
            writer: Stream::Unix(a),
            url: "postgres://u@h/d".into(),
            body: Vec::new(),
        };
        let err = absurd.next().unwrap_err();
        assert!(err.to_string().contains("unexpected message"), "{err}");
    }
}
