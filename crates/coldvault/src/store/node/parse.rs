//! Node URLs read into [`NodeUrl`]s, one function per scheme with a query (`s3://`, `azblob://`,
//! `sftp://`). A URL never holds a secret: a password in an `sftp://` URL is refused, and an
//! unknown parameter (an attempt at `?account_key=`) is an error naming the parameter, not its
//! value.

use super::NodeUrl;
use crate::error::{Error, Result};
use crate::store::KnownHosts;

/// `key=value` pairs of a URL's query, in order.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// An `http://` or `https://` endpoint.
fn endpoint(v: &str, bad: impl Fn(&str) -> Error) -> Result<String> {
    if !(v.starts_with("http://") || v.starts_with("https://")) {
        return Err(bad("endpoint must start with http:// or https://"));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

fn unknown(bad: impl Fn(&str) -> Error, name: &str, known: &str) -> Error {
    bad(&format!("unknown parameter {name:?} ({known})"))
}

/// The bucket (or container), prefix and query of `scheme://bucket/prefix?query`.
fn bucket_url<'a>(url: &str, rest: &'a str, bucket: &str) -> Result<(&'a str, String, &'a str)> {
    let bad = |why: &str| Error::config(format!("node URL {url:?}: {why}"));
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| bad(&format!("expected //{bucket}/prefix?endpoint=…")))?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (name, prefix) = location.split_once('/').unwrap_or((location, ""));
    if name.is_empty() {
        return Err(bad(&format!("no {bucket}")));
    }
    Ok((name, prefix.trim_matches('/').to_owned(), query))
}

/// `s3://bucket/prefix?endpoint=…&region=…&virtual_host=true`.
pub(super) fn s3(url: &str, rest: &str) -> Result<NodeUrl> {
    let bad = |why: &str| Error::config(format!("node URL {url:?}: {why}"));
    let (bucket, prefix, query) = bucket_url(url, rest, "bucket")?;
    let mut ep = None;
    let mut region = None;
    let mut virtual_host = false;
    for (k, v) in query_pairs(query) {
        match k {
            "endpoint" => ep = Some(endpoint(v, bad)?),
            "region" => region = Some(v.to_owned()),
            "virtual_host" => virtual_host = v == "true",
            other => return Err(unknown(bad, other, "endpoint, region, virtual_host")),
        }
    }
    Ok(NodeUrl::S3 {
        bucket: bucket.to_owned(),
        prefix,
        endpoint: ep,
        region: region.unwrap_or_else(|| "us-east-1".to_owned()),
        virtual_host,
    })
}

/// `azblob://container/prefix?endpoint=…`.
pub(super) fn azblob(url: &str, rest: &str) -> Result<NodeUrl> {
    let bad = |why: &str| Error::config(format!("node URL {url:?}: {why}"));
    let (container, prefix, query) = bucket_url(url, rest, "container")?;
    let mut ep = None;
    for (k, v) in query_pairs(query) {
        match k {
            "endpoint" => ep = Some(endpoint(v, bad)?),
            other => return Err(unknown(bad, other, "endpoint")),
        }
    }
    Ok(NodeUrl::Azblob {
        container: container.to_owned(),
        prefix,
        endpoint: ep,
    })
}

/// `sftp://[user@]host[:port]/absolute/path?known_hosts=strict|add|accept`.
pub(super) fn sftp(url: &str, rest: &str) -> Result<NodeUrl> {
    let bad = |why: &str| Error::config(format!("node URL {url:?}: {why}"));
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| bad("expected sftp://user@host:port/path"))?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match location.find('/') {
        Some(i) => location.split_at(i),
        None => (location, ""),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, _)) if u.contains(':') => {
            // Not quoted back: the text after the colon is a password.
            return Err(Error::config(
                "an sftp:// node URL holds a password; SFTP nodes log in with a key (key_file)",
            ));
        }
        Some((u, h)) => (Some(u.to_owned()).filter(|u| !u.is_empty()), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad(&format!("port {p:?} is not a number")))?,
        ),
        None => (hostport, 22),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Err(bad("no path: give the absolute directory on the server"));
    }
    let mut known_hosts = KnownHosts::Strict;
    for (k, v) in query_pairs(query) {
        match k {
            "known_hosts" => {
                known_hosts = KnownHosts::parse(v)
                    .ok_or_else(|| bad("known_hosts is strict (the default), add or accept"))?
            }
            other => return Err(unknown(bad, other, "known_hosts")),
        }
    }
    Ok(NodeUrl::Sftp {
        user,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
        known_hosts,
    })
}

/// The storage account an Azure endpoint names: `https://ACCOUNT.blob.core.windows.net` (and the
/// other clouds' `ACCOUNT.blob.…`), or the first path segment of a path-style endpoint such as
/// Azurite's `http://127.0.0.1:10000/ACCOUNT`.
pub(crate) fn azure_account(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let account = match path.split('/').next().filter(|s| !s.is_empty()) {
        Some(segment) => segment,
        None => host.split_once(".blob.")?.0,
    };
    Some(account.to_owned())
}
