//! POSIX ACLs between the kernel's binary form (the value of the `system.posix_acl_access` and
//! `system.posix_acl_default` extended attributes) and the text GNU tar keeps in its
//! `SCHILY.acl.access` and `SCHILY.acl.default` pax records.
//!
//! Binary: a little-endian u32 version (2), then one 8-byte entry per ACL entry: u16 tag, u16
//! permissions (r=4, w=2, x=1), u32 id (unused, -1, for the owner, owning group, mask and other
//! entries). The kernel wants entries sorted by tag, then by id.
//!
//! Text, as written here: `acl_to_text`'s long form with numeric ids (`tar --numeric-owner`'s
//! form; coldvault keeps owners by number too), one entry a line, each line ending in `\n`:
//! `user::rw-\nuser:1001:r--\ngroup::r--\nmask::r--\nother::r--\n`. Text read may also use
//! names (GNU tar writes names when it can resolve them; looked up in /etc/passwd and
//! /etc/group), `,` between entries, the short tags `u`, `g`, `m`, `o`, `#` comments, tabs and
//! extra fields after the permissions (star writes one), as GNU tar accepts them.
//!
//! Invariant: `from_text(to_text(b)) == b` for every binary ACL `b` in the kernel's order.

use std::fmt::Write as _;

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;

/// Users or groups, for looking a name up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Names {
    /// /etc/passwd.
    Users,
    /// /etc/group.
    Groups,
}

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct AclEntry {
    tag: u16,
    id: u32,
    perm: u16,
}

/// The text of the binary ACL `bin`.
pub(super) fn to_text(bin: &[u8]) -> Result<String, String> {
    let body = bin
        .strip_prefix(&VERSION.to_le_bytes())
        .ok_or("not a version 2 POSIX ACL")?;
    if body.len() % 8 != 0 {
        return Err(format!("{} bytes are not whole entries", body.len()));
    }
    let mut text = String::new();
    for e in body.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let (name, qualified) = match tag {
            USER_OBJ => ("user", false),
            USER => ("user", true),
            GROUP_OBJ => ("group", false),
            GROUP => ("group", true),
            MASK => ("mask", false),
            OTHER => ("other", false),
            _ => return Err(format!("unknown ACL tag {tag:#x}")),
        };
        if perm > 7 {
            return Err(format!("unknown ACL permissions {perm:#o}"));
        }
        let id = if qualified {
            id.to_string()
        } else {
            String::new()
        };
        let _ = writeln!(text, "{name}:{id}:{}", perm_text(perm));
    }
    Ok(text)
}

fn perm_text(perm: u16) -> String {
    [(4, 'r'), (2, 'w'), (1, 'x')]
        .iter()
        .map(|&(bit, c)| if perm & bit != 0 { c } else { '-' })
        .collect()
}

/// The binary form of the ACL `text`; `lookup` turns a user or group name into its id.
pub(super) fn from_text(
    text: &str,
    lookup: &dyn Fn(Names, &str) -> Option<u32>,
) -> Result<Vec<u8>, String> {
    let mut entries = Vec::new();
    for item in text.split(['\n', ',']) {
        let item = item.split('#').next().unwrap_or("").replace('\t', "");
        let item = item.trim();
        if !item.is_empty() {
            entries.push(parse_entry(item, lookup)?);
        }
    }
    entries.sort_unstable();
    for pair in entries.windows(2) {
        if (pair[0].tag, pair[0].id) == (pair[1].tag, pair[1].id) {
            return Err(format!("two entries for the same {}", describe(pair[0])));
        }
    }
    for tag in [USER_OBJ, GROUP_OBJ, OTHER] {
        if !entries.iter().any(|e| e.tag == tag) {
            return Err(format!(
                "no {} entry",
                describe(AclEntry {
                    tag,
                    id: 0,
                    perm: 0
                })
            ));
        }
    }
    let mut bin = VERSION.to_le_bytes().to_vec();
    for e in entries {
        bin.extend_from_slice(&e.tag.to_le_bytes());
        bin.extend_from_slice(&e.perm.to_le_bytes());
        bin.extend_from_slice(&e.id.to_le_bytes());
    }
    Ok(bin)
}

fn describe(e: AclEntry) -> &'static str {
    match e.tag {
        USER_OBJ => "owner",
        USER => "named user",
        GROUP_OBJ => "owning group",
        GROUP => "named group",
        MASK => "mask",
        _ => "other",
    }
}

/// One `tag:qualifier:perms[:extra…]` entry, without `default:`.
fn parse_entry(
    item: &str,
    lookup: &dyn Fn(Names, &str) -> Option<u32>,
) -> Result<AclEntry, String> {
    let item = item
        .strip_prefix("default:")
        .or_else(|| item.strip_prefix("d:"))
        .unwrap_or(item);
    let mut fields = item.split(':');
    let (Some(tag), Some(qualifier), Some(perms)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(format!(
            "ACL entry {item:?} is not tag:qualifier:permissions"
        ));
    };
    let id_of = |names: Names| -> Result<u32, String> {
        qualifier
            .parse::<u32>()
            .ok()
            .filter(|id| *id != NO_ID)
            .or_else(|| lookup(names, qualifier))
            .ok_or_else(|| format!("unknown name {qualifier:?} in ACL entry {item:?}"))
    };
    let (tag, id) = match (tag, qualifier.is_empty()) {
        ("user" | "u", true) => (USER_OBJ, NO_ID),
        ("user" | "u", false) => (USER, id_of(Names::Users)?),
        ("group" | "g", true) => (GROUP_OBJ, NO_ID),
        ("group" | "g", false) => (GROUP, id_of(Names::Groups)?),
        ("mask" | "m", true) => (MASK, NO_ID),
        ("other" | "o", true) => (OTHER, NO_ID),
        _ => return Err(format!("unknown ACL entry {item:?}")),
    };
    Ok(AclEntry {
        tag,
        id,
        perm: parse_perms(perms).ok_or_else(|| format!("bad permissions in ACL entry {item:?}"))?,
    })
}

fn parse_perms(text: &str) -> Option<u16> {
    if text.is_empty() {
        return None;
    }
    text.chars().try_fold(0, |perm, c| match c {
        'r' => Some(perm | 4),
        'w' => Some(perm | 2),
        'x' => Some(perm | 1),
        '-' => Some(perm),
        _ => None,
    })
}

/// The id of user or group `name` in /etc/passwd or /etc/group (names served by other sources,
/// such as LDAP, are not found: such an ACL entry is a warning on restore).
pub(super) fn system_id(names: Names, name: &str) -> Option<u32> {
    let file = match names {
        Names::Users => "/etc/passwd",
        Names::Groups => "/etc/group",
    };
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_names(_: Names, _: &str) -> Option<u32> {
        None
    }

    /// The ACL `setfacl -m u:1001:rw-,g:2002:r--` gives a 0644 file, as getfattr prints it.
    const BIN_HEX: &str =
        "0200000001000600ffffffff02000600e903000004000400ffffffff08000400d2070000\
                           10000600ffffffff20000400ffffffff";
    const TEXT: &str =
        "user::rw-\nuser:1001:rw-\ngroup::r--\ngroup:2002:r--\nmask::rw-\nother::r--\n";

    fn bin() -> Vec<u8> {
        crate::path::hex_decode(BIN_HEX).unwrap()
    }

    #[test]
    fn the_kernel_form_becomes_gnu_tars_text_with_numeric_ids_and_back() {
        assert_eq!(to_text(&bin()).unwrap(), TEXT);
        assert_eq!(from_text(TEXT, &no_names).unwrap(), bin());
    }

    #[test]
    fn text_with_names_commas_comments_short_tags_and_extra_fields_reads_too() {
        let lookup = |n: Names, name: &str| match (n, name) {
            (Names::Users, "alice") => Some(1001),
            (Names::Groups, "staff") => Some(2002),
            _ => None,
        };
        let text =
            "u::rw-,user:alice:rw-\t#effective:rw-\ng::r--,group:staff:r--:2002\nm::rw\no::r";
        assert_eq!(from_text(text, &lookup).unwrap(), bin());
    }

    #[test]
    fn text_out_of_order_is_sorted_as_the_kernel_wants() {
        let text = "other::r--\nmask::rw-\ngroup:2002:r--\ngroup::r--\nuser:1001:rw-\nuser::rw-\n";
        assert_eq!(from_text(text, &no_names).unwrap(), bin());
    }

    #[test]
    fn bad_acls_are_errors_naming_what_is_wrong() {
        for (text, want) in [
            ("user::rw-\ngroup::r--\n", "no other entry"),
            (
                "user::rw-\nuser::r--\ngroup::r--\nother::---",
                "two entries",
            ),
            (
                "user:nobody-here:rw-\nuser::rw-\ngroup::r--\nother::---",
                "unknown name",
            ),
            ("user::rwz\ngroup::r--\nother::---", "bad permissions"),
            ("weird::rw-\n", "unknown ACL entry"),
            ("user", "not tag:qualifier:permissions"),
        ] {
            let err = from_text(text, &no_names).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert!(to_text(&[1, 0, 0, 0]).is_err());
        assert!(to_text(&[2, 0, 0, 0, 1]).is_err());
        assert!(to_text(&[2, 0, 0, 0, 0x40, 0, 4, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn names_are_found_in_the_system_databases() {
        assert_eq!(system_id(Names::Users, "root"), Some(0));
        assert_eq!(system_id(Names::Groups, "root"), Some(0));
        assert_eq!(system_id(Names::Users, "no-such-user-here"), None);
    }

    /// A well-formed ACL in the kernel's order: owner, named users, owning group, named groups,
    /// a mask when there are named entries (or by chance), other.
    fn kernel_acl() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::btree_map(0u32..70_000, 0u16..8, 0..5),
            prop::collection::btree_map(0u32..70_000, 0u16..8, 0..5),
            prop::array::uniform4(0u16..8),
            any::<bool>(),
        )
            .prop_map(|(users, groups, [owner, group, mask, other], masked)| {
                let mut e = vec![(USER_OBJ, owner, NO_ID)];
                e.extend(users.into_iter().map(|(id, p)| (USER, p, id)));
                e.push((GROUP_OBJ, group, NO_ID));
                let named = e.len() > 2 || !groups.is_empty();
                e.extend(groups.into_iter().map(|(id, p)| (GROUP, p, id)));
                if named || masked {
                    e.push((MASK, mask, NO_ID));
                }
                e.push((OTHER, other, NO_ID));
                let mut bin = VERSION.to_le_bytes().to_vec();
                for (tag, perm, id) in e {
                    bin.extend_from_slice(&tag.to_le_bytes());
                    bin.extend_from_slice(&perm.to_le_bytes());
                    bin.extend_from_slice(&id.to_le_bytes());
                }
                bin
            })
    }

    proptest! {
        #[test]
        fn every_kernel_acl_survives_text_and_back(bin in kernel_acl()) {
            let text = to_text(&bin).unwrap();
            prop_assert!(text.ends_with('\n'));
            prop_assert_eq!(from_text(&text, &no_names).unwrap(), bin);
        }

        #[test]
        fn any_text_is_read_or_refused_without_a_panic(text in "[ugmo:,#\\n\\trwx0-9a-z-]{0,60}") {
            let _ = from_text(&text, &no_names);
        }
    }
}
