//! What a file-tree entry carries beyond its mode, owner and times: its extended attributes and
//! POSIX ACLs ([`FileAttrs`]), as a manifest keeps them for a file stored in parts and as restore
//! workers hand them to the coordinator for directories.
//!
//! A stored format: fields have serde defaults and empty values are not written, so manifests
//! without them read as before.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::{hex_decode, hex_encode};

/// Extended attributes and POSIX ACLs of one entry, in the forms GNU tar's `--xattrs --acls`
/// keep them: attributes as raw bytes by name, ACLs as text with numeric ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttrs {
    /// Extended attributes other than the two ACL ones, by name. JSON: `"0x<hex>"` values, the
    /// form `getfattr -e hex` prints and `setfattr -v` takes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, XattrValue>,
    /// The access ACL (`system.posix_acl_access`) as text, one entry a line:
    /// `user::rw-\nuser:1001:r--\ngroup::r--\nmask::r--\nother::r--\n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_access: Option<String>,
    /// A directory's default ACL (`system.posix_acl_default`), in the same form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_default: Option<String>,
}

impl FileAttrs {
    /// True when the entry has neither attributes nor ACLs (most entries).
    pub fn is_empty(&self) -> bool {
        self.xattrs.is_empty() && self.acl_access.is_none() && self.acl_default.is_none()
    }
}

/// The value of an extended attribute: any bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct XattrValue(pub Vec<u8>);

impl fmt::Debug for XattrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex_encode(&self.0))
    }
}

impl Serialize for XattrValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex_encode(&self.0)))
    }
}

impl<'de> Deserialize<'de> for XattrValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let hex = text
            .strip_prefix("0x")
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} does not start with 0x")))?;
        hex_decode(hex)
            .map(XattrValue)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_are_written_as_hex_and_read_back() {
        let mut a = FileAttrs::default();
        a.xattrs
            .insert("user.bin".into(), XattrValue(vec![0, 0xff, b'a']));
        a.acl_access = Some("user::rw-\ngroup::r--\nother::---\n".into());
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""user.bin":"0x00ff61""#), "{json}");
        assert_eq!(serde_json::from_str::<FileAttrs>(&json).unwrap(), a);
        assert_eq!(serde_json::to_string(&FileAttrs::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<FileAttrs>(r#"{"xattrs":{"user.x":"00"}}"#).is_err());
    }
}
