//! Tests of [`super`]: what the `tar` crate's builder writes reads back; pax values with
//! newlines and binary bytes are read whole and forge nothing; damage is an error.

use super::*;

/// An archive built by the `tar` crate: a file with a pax record holding newlines, a long
/// name (pax `path`), a GNU long name, a symlink.
fn archive(acl: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.acl.access", acl),
        ("SCHILY.xattr.user.b", &b"\n\x0a\0"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o640);
    h.set_size(5);
    h.set_mtime(7);
    b.append_data(&mut h, "a.txt", &b"hello"[..]).unwrap();
    let long = format!("d/{}", "n".repeat(150));
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    b.append_data(&mut h, format!("g/{}", "m".repeat(120)), &b"xy"[..])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "l", "a.txt").unwrap();
    b.into_inner().unwrap()
}

/// Every entry: its header and its data.
fn entries(bytes: &[u8]) -> Result<Vec<(Head, Vec<u8>)>> {
    let mut tar = Untar::new(bytes);
    let mut out = Vec::new();
    while let Some(head) = tar.next()? {
        let mut data = Vec::new();
        if head.path.starts_with(b"d/") {
            // Leave the data unread: the next header is still found.
        } else {
            tar.read_to_end(&mut data).unwrap();
        }
        out.push((head, data));
    }
    Ok(out)
}

#[test]
fn pax_values_with_newlines_and_binary_bytes_are_read_whole() {
    let acl = b"user::rw-\nuser:1001:r--\ngroup::r--\nmask::r--\nother::---\n";
    let all = entries(&archive(acl)).unwrap();
    assert_eq!(all.len(), 4);
    let (a, data) = &all[0];
    assert_eq!(
        (a.path.as_slice(), a.mode, a.mtime),
        (&b"a.txt"[..], 0o640, 7)
    );
    assert_eq!(tar::EntryType::new(a.kind), tar::EntryType::Regular);
    assert_eq!(data, b"hello");
    assert_eq!(a.pax[0], (b"SCHILY.acl.access".to_vec(), acl.to_vec()));
    assert_eq!(
        a.pax[1],
        (b"SCHILY.xattr.user.b".to_vec(), b"\n\n\0".to_vec())
    );
    assert_eq!(all[1].0.path, format!("d/{}", "n".repeat(150)).into_bytes());
    assert_eq!(all[2].0.path, format!("g/{}", "m".repeat(120)).into_bytes());
    assert_eq!(all[2].1, b"xy");
    assert_eq!(
        (all[3].0.kind, all[3].0.link.as_slice()),
        (b'2', &b"a.txt"[..])
    );
}

#[test]
fn a_record_hidden_in_a_value_forges_nothing() {
    let all = entries(&archive(b"x\n22 linkpath=/etc/evil\n")).unwrap();
    assert!(all[0].0.link.is_empty());
    assert_eq!(all[0].0.pax.len(), 2);
}

#[test]
fn pax_size_and_base_256_numbers_win_over_octal_fields() {
    let mut h = [0u8; 512];
    h[..1].copy_from_slice(b"f");
    h[124] = 0x80;
    h[135] = 3;
    h[156] = b'0';
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut bytes = h.to_vec();
    bytes.extend_from_slice(b"abc");
    bytes.resize(1024, 0);
    let all = entries(&bytes).unwrap();
    assert_eq!((all[0].0.size, all[0].1.as_slice()), (3, &b"abc"[..]));
    assert_eq!(
        parse_pax(b"9 size=7\n").unwrap(),
        vec![(b"size".to_vec(), b"7".to_vec())]
    );
}

#[test]
fn damage_is_an_error_never_a_guess() {
    let good = archive(b"user::rw-\n");
    let mut flipped = good.clone();
    flipped[513] ^= 1; // the length of the first pax record: it no longer ends where it says
    let mut bad_sum = good.clone();
    bad_sum[1] ^= 1; // the first header: its checksum no longer matches
    for bytes in [&flipped[..], &bad_sum[..], &good[..700], &good[..1030]] {
        assert!(entries(bytes).is_err());
    }
    for pax in [
        &b"5 a=b\n"[..],
        b"7 a=b\n",
        b"6 ab\n",
        b"x a=b\n",
        b"99999999999999999999999 a",
    ] {
        assert!(parse_pax(pax).is_err(), "{pax:?}");
    }
}

#[test]
fn base_256_numbers_in_fields_of_any_width_are_read_or_refused_without_a_panic() {
    // An 8-byte field (uid, gid) holds 7 value bytes after the marker; damage used to panic here.
    assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 1, 2]).unwrap(), 0x102);
    assert_eq!(number(&[0x81, 0, 0, 0, 0, 0, 0, 0]).unwrap(), 1 << 56);
    assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]).unwrap(), 9);
    assert_eq!(number(&[0x80]).unwrap(), 0);
    for bad in [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe][..], // negative
        &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],              // more than 64 bits
    ] {
        assert!(number(bad).is_err(), "{bad:?}");
    }
}
