//! Tests of [`super`]: the map against GNU tar's bytes, holes found and restored, damaged
//! entries refused.

use super::*;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn rel(p: &str) -> RelPath {
    RelPath::from_untrusted(p.as_bytes()).unwrap()
}

#[test]
fn the_map_is_written_byte_for_byte_as_gnu_tar_writes_it() {
    // `tar --sparse --format=pax` on a 10 MiB file with 4 KiB of data at 4 KiB and at 5 MiB.
    let map = [(4096, 4096), (5 * MIB, 4096), (10 * MIB, 0)];
    let bytes = map_bytes(&map);
    assert_eq!(bytes.len(), 512);
    assert!(bytes.starts_with(b"3\n4096\n4096\n5242880\n4096\n10485760\n0\n\0"));
    assert_eq!(stored_size(&map), 512 + 8192);
    assert_eq!(
        placeholder_name(&rel("a/b/c.img")),
        b"a/b/GNUSparseFile.0/c.img"
    );
    assert_eq!(placeholder_name(&rel("c.img")), b"./GNUSparseFile.0/c.img");
    assert_eq!(placeholder_name(&rel(&"d".repeat(300))).len(), 100);
}

/// A file of `size` bytes with `data` written at each offset, holes elsewhere.
fn holey(dir: &std::path::Path, size: u64, data: &[(u64, &[u8])]) -> File {
    let path = dir.join(format!("f{size}-{}", data.len()));
    let f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    for (at, bytes) in data {
        f.write_all_at(bytes, *at).unwrap();
    }
    f
}

#[test]
fn holes_are_found_stored_without_them_and_restored_as_holes() {
    let dir = tempfile::tempdir().unwrap();
    let data = [(MIB + 100, &b"first"[..]), (5 * MIB, &[7u8; 9000][..])];
    let f = holey(dir.path(), 12 * MIB, &data);
    let meta = f.metadata().unwrap();
    let map = data_map(&f, &meta).unwrap().expect("the file has holes");
    assert_eq!(map.last(), Some(&(12 * MIB, 0)), "it ends in a hole");
    for (at, bytes) in data {
        let end = at + bytes.len() as u64;
        assert!(
            map.iter().any(|&(a, l)| a <= at && end <= a + l),
            "{at}: {map:?}"
        );
    }
    let mut stored = Vec::new();
    SparseReader::new(f.try_clone().unwrap(), map.clone())
        .read_to_end(&mut stored)
        .unwrap();
    assert_eq!(stored.len() as u64, stored_size(&map));
    let out = File::create(dir.path().join("out")).unwrap();
    let n = extract(
        &mut &stored[..],
        stored.len() as u64,
        &out,
        12 * MIB,
        &rel("out"),
    )
    .unwrap();
    assert_eq!(n, map.iter().map(|r| r.1).sum::<u64>());
    let back = std::fs::read(dir.path().join("out")).unwrap();
    let mut want = vec![0u8; 12 * MIB as usize];
    for (at, bytes) in data {
        want[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    }
    assert!(back == want, "the bytes differ");
    assert!(
        out.metadata().unwrap().blocks() * 512 <= 64 * 1024,
        "restored with its holes"
    );
}

#[test]
fn a_file_without_holes_or_all_holes_is_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let full = holey(dir.path(), 8192, &[(0, &[1u8; 8192])]);
    assert_eq!(data_map(&full, &full.metadata().unwrap()).unwrap(), None);
    let empty = holey(dir.path(), 3 * MIB, &[]);
    assert_eq!(
        data_map(&empty, &empty.metadata().unwrap()).unwrap(),
        Some(vec![(3 * MIB, 0)])
    );
}

#[test]
fn sparse_records_name_the_real_path_and_refuse_older_formats() {
    let mut info = SparseInfo::default();
    for (k, v) in pax_records(&rel("d/x"), 42) {
        assert!(info.take(k.as_bytes(), &v));
    }
    assert!(!info.take(b"path", b"x"));
    assert_eq!(info.layout().unwrap(), Some((&b"d/x"[..], 42)));
    assert_eq!(SparseInfo::default().layout().unwrap(), None);
    let mut old = SparseInfo::default();
    old.take(b"GNU.sparse.map", b"0,10");
    assert!(old.layout().is_err());
    let mut half = SparseInfo::default();
    half.take(b"GNU.sparse.major", b"1");
    half.take(b"GNU.sparse.minor", b"0");
    assert!(half.layout().is_err());
}

#[test]
fn maps_that_do_not_add_up_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = File::create(dir.path().join("o")).unwrap();
    let entry = |map: &[u8], data: &[u8]| {
        let mut e = map.to_vec();
        e.resize(512, 0);
        e.extend_from_slice(data);
        e
    };
    for (e, realsize) in [
        (entry(b"2\n0\n4\n2\n4\n", b"abcdefgh"), 10), // overlapping regions
        (entry(b"1\n0\n4\n", b"abcdefgh"), 10),       // more data than the map says
        (entry(b"1\n0\n8\n", b"abcd"), 10),           // less
        (entry(b"1\n8\n4\n", b"abcd"), 10),           // past the end of the file
        (entry(b"1\nx\n4\n", b"abcd"), 10),           // not a number
        (entry(b"99999999\n", b""), 10),              // more regions than bytes
    ] {
        let size = e.len() as u64;
        assert!(extract(&mut &e[..], size, &out, realsize, &rel("o")).is_err());
    }
}

#[test]
fn zero_blocks_become_holes_and_hide_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part");
    std::fs::write(&path, vec![0xffu8; 3 * MIB as usize]).unwrap();
    let f = File::options().write(true).open(&path).unwrap();
    let mut data = vec![0u8; 3 * MIB as usize - 100];
    data[5000..5010].copy_from_slice(b"0123456789");
    let mut w = HoleWriter::new(&f, 100);
    for chunk in data.chunks(70_000) {
        w.write(chunk).unwrap();
    }
    assert_eq!(w.finish().unwrap(), 3 * MIB);
    let back = std::fs::read(&path).unwrap();
    assert_eq!(&back[..100], &[0xff; 100]);
    assert!(back[100..] == data[..], "the bytes differ");
    assert!(
        f.metadata().unwrap().blocks() * 512 <= 16 * 1024,
        "zeros punched, not written"
    );
}

fn any_map() -> impl Strategy<Value = Vec<Region>> {
    prop::collection::vec((0u64..1 << 40, 0u64..1 << 30), 1..200).prop_map(|steps| {
        let mut at = 0;
        steps
            .into_iter()
            .map(|(gap, len)| {
                at += gap;
                let r = (at, len);
                at += len;
                r
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn every_map_reads_back_as_written(map in any_map()) {
        let bytes = map_bytes(&map);
        prop_assert_eq!(bytes.len() % 512, 0);
        let (back, took) = read_map(&mut &bytes[..], u64::MAX).unwrap();
        prop_assert_eq!(back, map);
        prop_assert_eq!(took, bytes.len() as u64);
    }

    #[test]
    fn a_hole_writer_gives_back_any_bytes_in_any_chunks_over_old_bytes(
        start in 0u64..10_000,
        runs in prop::collection::vec((any::<bool>(), 1usize..12_000), 0..12),
        chunk in 1usize..20_000,
    ) {
        let mut data = Vec::new();
        for (zeros, len) in runs {
            let byte = if zeros { 0 } else { 7 };
            data.extend(std::iter::repeat_n(byte, len));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let old = start as usize + data.len() + 5000;
        std::fs::write(&path, vec![0xffu8; old]).unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        let mut w = HoleWriter::new(&f, start);
        for c in data.chunks(chunk) {
            w.write(c).unwrap();
        }
        prop_assert_eq!(w.finish().unwrap(), start + data.len() as u64);
        let back = std::fs::read(&path).unwrap();
        let end = start as usize + data.len();
        prop_assert!(back[..start as usize].iter().all(|b| *b == 0xff));
        prop_assert!(back[start as usize..end] == data[..], "the bytes differ");
        prop_assert!(back[end..].iter().all(|b| *b == 0xff));
    }

    #[test]
    fn any_entry_is_restored_or_refused_without_a_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..1600),
        text in "[0-9\n]{0,40}",
        realsize in 0u64..4096,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = File::create(dir.path().join("o")).unwrap();
        let mut e = text.into_bytes();
        e.extend_from_slice(&bytes);
        let _ = extract(&mut &e[..], e.len() as u64, &out, realsize, &rel("o"));
    }
}
