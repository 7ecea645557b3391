//! Tests of [`super`]: damaged or hostile tar data never panics or escapes the target; hard
//! links, nodes and sparse entries restore as stored.

use super::*;
use proptest::prelude::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// A small, valid data file's tar: a directory, files, a symlink, long and odd names.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir, "d", std::io::empty()).unwrap();
    for (name, body) in [
        ("d/a", &b"hello"[..]),
        ("d/\u{e9}t\u{e9}", b"x"),
        ("b", b""),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(1_500_000_000);
        b.append_data(&mut h, name, body).unwrap();
    }
    let long = format!("d/{}", "n".repeat(150));
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o600);
    h.set_size(3);
    b.append_data(&mut h, long, &b"abc"[..]).unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    b.append_link(&mut l, "d/link", "a").unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Link);
    l.set_size(0);
    b.append_link(&mut l, "d/hard", "d/a").unwrap();
    let mut f = tar::Header::new_ustar();
    f.set_entry_type(tar::EntryType::Fifo);
    f.set_mode(0o640);
    f.set_size(0);
    b.append_data(&mut f, "d/fifo", std::io::empty()).unwrap();
    append_sparse(&mut b, "d/sp", 1 << 20, &[(4096, b"data"), (1 << 20, b"")]);
    b.into_inner().unwrap()
}

/// Appends a PAX sparse 1.0 entry for `name`: `size` bytes with `regions` of data.
fn append_sparse(b: &mut tar::Builder<Vec<u8>>, name: &str, size: u64, regions: &[(u64, &[u8])]) {
    let rel = RelPath::from_untrusted(name.as_bytes()).unwrap();
    let records = sparse::pax_records(&rel, size);
    b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        .unwrap();
    let map: Vec<sparse::Region> = regions
        .iter()
        .map(|(at, d)| (*at, d.len() as u64))
        .collect();
    let mut data = sparse::map_bytes(&map);
    regions.iter().for_each(|(_, d)| data.extend_from_slice(d));
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    let placeholder = String::from_utf8(sparse::placeholder_name(&rel)).unwrap();
    b.append_data(&mut h, placeholder, &data[..]).unwrap();
}

/// Extracts `tar` into a new target under `dir`, forcing; returns the target and the result.
fn extract_into(dir: &Path, tar: &[u8]) -> (std::path::PathBuf, Result<(ReadStats, Notes)>) {
    let target = dir.join("target");
    let _ = std::fs::create_dir(&target);
    let repo = crate::repo::Repository::with_nodes("t", Vec::new(), 1);
    let staging = crate::stage::Staging::create(&dir.join("st"), "t").unwrap();
    let progress = crate::progress::Progress::default();
    let ctx = Fetcher {
        repo: &repo,
        staging: &staging,
        progress: &progress,
        retrieval: None,
    };
    let include = Include::new(&[]).unwrap();
    let restorer = Restorer::new(&target, &include, true);
    let result = restorer.extract(&|| Ok(Box::new(tar) as Box<dyn Read + Send>), &ctx, None);
    (target, result)
}

#[test]
fn links_nodes_and_sparse_entries_restore_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (target, result) = extract_into(dir.path(), &sample_tar());
    let (stats, notes) = result.unwrap();
    assert!(notes.into_warnings().is_empty());
    assert_eq!(stats.files, 6, "four files, a hard link, a sparse file");
    let a = std::fs::metadata(target.join("d/a")).unwrap();
    let hard = std::fs::metadata(target.join("d/hard")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (hard.ino(), 2));
    let fifo = std::fs::symlink_metadata(target.join("d/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    let sp = std::fs::read(target.join("d/sp")).unwrap();
    assert_eq!((sp.len(), &sp[4096..4100]), (1 << 20, &b"data"[..]));
    assert!(sp[..4096].iter().chain(&sp[4100..]).all(|b| *b == 0));
    let sp = std::fs::metadata(target.join("d/sp")).unwrap();
    assert!(sp.blocks() * 512 < 64 * 1024, "restored with its holes");
    assert!(!target.join("d/GNUSparseFile.0").exists());
}

#[test]
fn a_hard_link_never_names_a_file_the_data_file_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let link = |name: &str, to: &str| {
        let mut b = tar::Builder::new(Vec::new());
        let mut l = tar::Header::new_ustar();
        l.set_entry_type(tar::EntryType::Link);
        l.set_size(0);
        b.append_link(&mut l, name, to).unwrap();
        b.into_inner().unwrap()
    };
    // A file already in the (forced) target, and one outside it.
    std::fs::create_dir(dir.path().join("target")).unwrap();
    std::fs::write(dir.path().join("target/planted"), b"p").unwrap();
    std::fs::write(dir.path().join("outside"), b"o").unwrap();
    let (target, result) = extract_into(dir.path(), &link("l1", "planted"));
    let warnings = result.unwrap().1.into_warnings();
    assert_eq!((warnings.len(), warnings[0].path.as_str()), (1, "l1"));
    assert!(!target.join("l1").exists());
    let (_, result) = extract_into(dir.path(), &link("l2", "../outside"));
    assert!(result.is_err());
    let (_, result) = extract_into(dir.path(), &link("l3", "/etc/passwd"));
    assert!(result.is_err());
    for p in ["outside", "target/planted"] {
        assert_eq!(std::fs::metadata(dir.path().join(p)).unwrap().nlink(), 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A damaged or hostile data file is restored or refused with an error; it never
    /// panics and never writes outside the target.
    #[test]
    fn damaged_tar_data_never_panics_or_escapes(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..12),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = sample_tar();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let dir = tempfile::tempdir().unwrap();
        let _ = extract_into(dir.path(), &bytes);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        prop_assert!(names.iter().all(|n| n == "target" || n == "st"), "{names:?}");
    }
}

#[test]
fn deferred_directory_metadata_never_follows_a_symlink_put_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (target, outside) = (dir.path().join("target"), dir.path().join("outside"));
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("d")).unwrap();
    let mut deferred = Deferred::default();
    let meta = FileMeta {
        mode: 0o777,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        size: 0,
        version: None,
        attrs: Default::default(),
    };
    deferred
        .dirs
        .push((RelPath::from_untrusted(b"d").unwrap(), meta));
    assert!(apply_deferred(&target, deferred).is_err());
    let mode = std::fs::metadata(&outside).unwrap().mode() & 0o777;
    assert_ne!(mode, 0o777, "the directory outside keeps its mode");
}
