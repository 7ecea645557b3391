//! Azure Blob nodes on the Azurite emulator that `scripts/test` starts: every verb with an Azure
//! node beside a local one, a restore from the container alone, and credentials that are wrong
//! or missing named clearly, never printed.

mod common;

use coldvault_testing::fixtures::unique;
use coldvault_testing::Azurite;
use common::Env;

/// A job with a local disk and the Azure node `azure` (extra fields in `azure_fields`).
fn job(az: &Azurite, prefix: &str, azure_fields: &str) -> Env {
    Env::with_nodes(
        &[
            "name = \"disk\", url = \"file:nodes/a\"".to_owned(),
            format!(
                "name = \"azure\", url = \"{}\"{azure_fields}",
                az.url(prefix)
            ),
        ],
        2,
        3_000_000,
    )
}

#[test]
fn every_verb_works_with_an_azure_node_and_a_local_one() {
    let az = Azurite::from_env();
    let env = job(&az, &unique("mixed"), "");
    let vars = az.credential_vars();
    env.json_envs(&["init"], &vars, 0);
    let r = env.json_envs(&["backup"], &vars, 0);
    assert!(r["snapshot"].is_string(), "{r}");
    let s = env.json_envs(&["snapshots"], &vars, 0);
    assert_eq!(
        s["snapshots"][0]["nodes"],
        serde_json::json!(["disk", "azure"])
    );
    env.json_envs(&["verify", "latest"], &vars, 0);
    let v = env.json_envs(&["verify", "latest", "--read-data"], &vars, 0);
    assert!(v["bytes_read"].as_u64().unwrap() > 3_000_000, "{v}");
    // Restore from the container alone: take the local node's data away.
    std::fs::remove_dir_all(env.node_dir("a").join("data")).unwrap();
    env.assert_restores_src_exactly(&vars, "restored");
    env.json_envs(&["repair", "latest"], &vars, 0);
    env.json_envs(&["verify", "latest", "--read-data"], &vars, 0);
}

#[test]
fn an_object_deleted_from_the_container_is_found_and_put_back() {
    let az = Azurite::from_env();
    let prefix = unique("deleted");
    let env = job(&az, &prefix, "");
    let vars = az.credential_vars();
    env.json_envs(&["backup"], &vars, 0);
    use coldvault::store::Target;
    let t = az.target("az", &format!("{prefix}/cold/e2e"));
    let keys = t.list("data/").unwrap();
    t.delete(&keys[0]).unwrap();
    let v = env.json_envs(&["verify", "latest"], &vars, 1);
    assert_eq!(v["problems"][0]["node"], "azure", "{v}");
    assert_eq!(v["problems"][0]["problem"], "missing", "{v}");
    let r = env.json_envs(&["repair", "latest"], &vars, 0);
    assert_eq!(r["copied"][0]["to"], "azure", "{r}");
    env.json_envs(&["verify", "latest", "--read-data"], &vars, 0);
}

#[test]
fn a_wrong_account_key_is_a_clear_error_naming_the_node_not_the_key() {
    let az = Azurite::from_env();
    let env = job(&az, &unique("wrongkey"), "");
    // Valid base64, the right length, not the account's key.
    let wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk=".to_owned();
    let vars = [
        ("AZURE_STORAGE_ACCOUNT", az.var("AZURITE_ACCOUNT")),
        ("AZURE_STORAGE_KEY", wrong.clone()),
    ];
    let err = env.assert_fails_saying(&["backup"], &vars, &[], &["node azure", "access denied"]);
    assert!(!err.contains(&wrong), "{err}");
}

#[test]
fn a_missing_key_variable_is_named_with_the_node() {
    let az = Azurite::from_env();
    // The variable named in the entry.
    let env = job(
        &az,
        &unique("nokey"),
        ", account_key_env = \"CV_TEST_AZURE_KEY\"",
    );
    let words = ["CV_TEST_AZURE_KEY", "node azure"];
    env.assert_fails_saying(&["backup"], &[], &["CV_TEST_AZURE_KEY"], &words);
    // The standard variable, when the entry names none.
    let env = job(&az, &unique("nokey"), "");
    let words = ["AZURE_STORAGE_KEY", "node azure"];
    env.assert_fails_saying(&["backup"], &[], &["AZURE_STORAGE_KEY"], &words);
}

#[test]
fn the_account_key_never_appears_in_output_or_stored_files() {
    let az = Azurite::from_env();
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), format!("{}\n", az.var("AZURITE_KEY"))).unwrap();
    let fields = format!(", account_key_file = \"{}\"", key_file.path().display());
    let env = job(&az, &unique("secret"), &fields);
    let account = [("AZURE_STORAGE_ACCOUNT", az.var("AZURITE_ACCOUNT"))];
    let mut seen = String::new();
    let to = env.path("restored");
    for args in [
        vec!["init"],
        vec!["plan", "--json"],
        vec!["backup", "--json"],
        vec!["snapshots"],
        vec!["verify", "latest", "--read-data", "--json"],
        vec!["restore", "latest", "--to", to.to_str().unwrap()],
    ] {
        let (c, out, err) = env.run_envs(&args, &account);
        assert_eq!(c, 0, "{args:?}: {out}{err}");
        seen.push_str(&out);
        seen.push_str(&err);
    }
    let key = az.var("AZURITE_KEY");
    assert!(!seen.contains(&key), "the account key was printed");
    let mut files = Vec::new();
    common::walk(env.dir.path(), &mut files);
    for f in files
        .iter()
        .filter(|f| !f.starts_with(&to) && !f.starts_with(env.path("src")))
    {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        assert!(!text.contains(&key), "the key is in {}", f.display());
    }
}
