//! Tests of [`super`]: damaged or hostile tar data never panics or escapes the target.

use super::*;
use proptest::prelude::*;

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
    b.into_inner().unwrap()
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
    };
    let include = Include::new(&[]).unwrap();
    let restorer = Restorer::new(&target, &include, true);
    let result = restorer.extract(&mut &tar[..], &ctx);
    (target, result)
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
