//! Self-checking stored documents. Every manifest, repository marker and run receipt is stored as
//! one JSON object `{"format": F, "blake3": "<hex>", "body": <the document>}`, where `blake3` is
//! the BLAKE3 of the body's bytes exactly as they stand in the file. A reader checks it before it
//! believes a byte of the body: a copy edited, cut or garbled on one node reads as damaged, never
//! as a different truth. `format` sits outside the body too, so a build too old for the envelope
//! says "newer format" instead of "malformed".
//!
//! Documents written before the envelope (format 1) have no checksum: they read as they are,
//! marked unchecked, and copies of them are still compared across nodes.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// A document's body, after its checksum was checked (or found absent, in a format-1 document).
#[derive(Debug)]
pub(crate) struct Opened<'a> {
    /// The body's bytes.
    pub body: &'a [u8],
    /// BLAKE3 (hex) of the body: two copies with the same digest are the same document.
    pub digest: String,
}

/// The envelope's fields, each absent in a format-1 document (which has neither `blake3` nor
/// `body`): one parse tells the two apart and finds the body.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    format: Option<u32>,
    #[serde(default)]
    blake3: Option<String>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

/// Wraps `body` (a JSON document) with its checksum, as stored.
pub(crate) fn wrap(format: u32, body: &[u8]) -> Vec<u8> {
    let digest = blake3::hash(body).to_hex();
    let mut out = Vec::with_capacity(body.len() + 120);
    out.extend_from_slice(
        format!("{{\"format\": {format}, \"blake3\": \"{digest}\", \"body\": ").as_bytes(),
    );
    out.extend_from_slice(body);
    out.extend_from_slice(b"}\n");
    out
}

/// The body of a stored document of kind `what`, its checksum checked; a document without an
/// envelope (format 1) is its own body. Fails with an integrity error naming `what` when the
/// checksum does not match or the document is not JSON, and when its format is newer than
/// `newest`.
pub(crate) fn open<'a>(bytes: &'a [u8], what: &str, newest: u32) -> Result<Opened<'a>> {
    let env: Envelope<'_> = serde_json::from_slice(bytes)
        .map_err(|e| Error::integrity(format!("{what} is not JSON")).with_source(e))?;
    let (format, blake3, body) = match (env.format, env.blake3, env.body) {
        (_, None, None) => {
            return Ok(Opened {
                body: bytes,
                digest: blake3::hash(bytes).to_hex().to_string(),
            })
        }
        (Some(format), Some(blake3), Some(body)) => (format, blake3, body),
        _ => return Err(Error::integrity(format!("malformed {what}"))),
    };
    if format > newest {
        return Err(Error::integrity(format!(
            "{what} format {format} is newer than this coldvault reads ({newest}); upgrade coldvault"
        )));
    }
    let body = body.get().as_bytes();
    let digest = blake3::hash(body).to_hex().to_string();
    if digest != blake3 {
        return Err(Error::integrity(format!(
            "{what} is damaged: its checksum does not match its contents"
        )));
    }
    Ok(Opened { body, digest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_wrapped_document_opens_to_its_body() {
        let body = br#"{"a": [1, 2], "b": "x"}"#;
        let stored = wrap(2, body);
        let o = open(&stored, "a manifest", 2).unwrap();
        assert_eq!(o.body, body);
        assert_eq!(o.digest, blake3::hash(body).to_hex().to_string());
        assert!(serde_json::from_slice::<serde_json::Value>(&stored).is_ok());
    }

    #[test]
    fn an_edited_body_is_damage_naming_the_document() {
        let stored = wrap(2, br#"{"parts": [1, 2, 3]}"#);
        let edited = String::from_utf8(stored).unwrap().replace("2, 3", "3");
        let e = open(edited.as_bytes(), "the manifest", 2).unwrap_err();
        assert!(e.to_string().contains("the manifest is damaged"), "{e}");
    }

    #[test]
    fn a_format_1_document_reads_unchecked_and_a_newer_one_is_refused() {
        let old = br#"{"format": 1, "id": "x"}"#;
        assert_eq!(open(old, "m", 2).unwrap().body, old);
        let e = open(&wrap(3, b"{}"), "the manifest", 2).unwrap_err();
        assert!(e.to_string().contains("upgrade"), "{e}");
    }

    proptest! {
        #[test]
        fn any_single_byte_flip_is_caught_or_unreadable(at in 0usize..200, bit in 0u8..8) {
            let body = br#"{"id": "0123456789abcdef", "tasks": [{"size": 12345, "key": "data/ab/abcdef"}]}"#;
            let mut stored = wrap(2, body);
            let i = at % stored.len();
            stored[i] ^= 1 << bit;
            // Either it fails, or what it opens is the untouched body (a flip in the envelope's
            // own whitespace or format digit that still parses).
            if let Ok(o) = open(&stored, "m", 9) {
                prop_assert_eq!(o.body, &body[..]);
            }
        }
    }
}
