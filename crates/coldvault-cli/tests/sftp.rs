//! SFTP nodes on the OpenSSH server that `scripts/test` starts: every verb with an SFTP node
//! beside a local one, a restore from the server alone, and keys and host keys that are wrong
//! or missing named clearly.

mod common;

use coldvault_testing::fixtures::unique;
use coldvault_testing::Sftp;
use common::Env;

/// A job with a local disk and the SFTP node `sftp` at `url`, logging in with `key`.
fn job(url: &str, key: &std::path::Path) -> Env {
    Env::with_nodes(
        &[
            "name = \"disk\", url = \"file:nodes/a\"".to_owned(),
            format!(
                "name = \"sftp\", url = \"{url}\", key_file = \"{}\"",
                key.display()
            ),
        ],
        2,
        3_000_000,
    )
}

#[test]
fn every_verb_works_with_an_sftp_node_and_a_local_one() {
    let s = Sftp::from_env();
    let prefix = unique("mixed");
    let env = job(&s.url(&prefix), &s.key_file());
    env.json(&["init"], 0);
    let r = env.json(&["backup"], 0);
    assert!(r["snapshot"].is_string(), "{r}");
    let snaps = env.json(&["snapshots"], 0);
    assert_eq!(
        snaps["snapshots"][0]["nodes"],
        serde_json::json!(["disk", "sftp"])
    );
    env.json(&["verify", "latest"], 0);
    let v = env.json(&["verify", "latest", "--read-data"], 0);
    assert!(v["bytes_read"].as_u64().unwrap() > 3_000_000, "{v}");
    // The server's copy is the same as the local one, file for file, and no temporary is left.
    let mut on_server = Vec::new();
    common::walk(&s.path(&prefix).join("cold/e2e/data"), &mut on_server);
    assert_eq!(on_server.len(), env.data_files("a").len());
    assert!(on_server
        .iter()
        .all(|p| !p.to_string_lossy().contains(".tmp.")));
    // Restore from the server alone: take the local node's data away.
    std::fs::remove_dir_all(env.node_dir("a").join("data")).unwrap();
    env.assert_restores_src_exactly(&[], "restored");
    env.json(&["repair", "latest"], 0);
    env.json(&["verify", "latest", "--read-data"], 0);
}

#[test]
fn a_key_the_server_does_not_know_is_a_clear_error_naming_the_node() {
    let s = Sftp::from_env();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("stranger");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let env = job(&s.url(&unique("stranger")), &key);
    let words = ["node sftp", "refused the SSH key"];
    env.assert_fails_saying(&["backup"], &[], &[], &words);
}

#[test]
fn a_missing_key_file_is_named_with_the_node() {
    let s = Sftp::from_env();
    let missing = std::path::Path::new("/nonexistent/coldvault/id_ed25519");
    let env = job(&s.url(&unique("nokey")), missing);
    let words = ["node sftp", "/nonexistent/coldvault/id_ed25519"];
    env.assert_fails_saying(&["backup"], &[], &[], &words);
}

#[test]
fn a_host_key_not_in_known_hosts_is_refused_by_default() {
    let s = Sftp::from_env();
    // `localhost`: a name under which no test ever accepted this server's throwaway key.
    let url = s.url_via("localhost", &unique("strict"), "strict");
    let env = job(url.trim_end_matches("?known_hosts=strict"), &s.key_file());
    env.assert_fails_saying(&["backup"], &[], &[], &["node sftp", "known_hosts"]);
}
