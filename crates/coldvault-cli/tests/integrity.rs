//! Every stored document checks itself and a bad copy never wins: manifests and repository
//! markers damaged or edited on one node are outvoted by the other nodes' copies, named by node in
//! `verify`, and written again by `repair`.

mod common;

use coldvault_testing::fixtures;
use common::Env;
use serde_json::Value;

fn manifest_path(env: &Env, node: &str, id: &str) -> std::path::PathBuf {
    env.node_dir(node).join(format!("snapshots/{id}.json"))
}

/// The problems `verify` reports, as (node, file, problem).
fn problems(env: &Env) -> Vec<(String, String, String)> {
    let (_, out, _) = env.run(&["verify", "latest", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap().to_owned(),
                p["file"].as_str().unwrap().to_owned(),
                p["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn restores_exactly(env: &Env, to: &str) {
    let to = env.path(to);
    let (code, out, err) = env.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fixtures::listing(&env.path("src")), fixtures::listing(&to));
}

/// Removes the second part of the first file stored in parts from a manifest body.
fn drop_a_part(m: &mut Value) {
    let tasks = m["tasks"].as_array_mut().unwrap();
    let at = tasks
        .iter()
        .position(|t| t["kind"] == "file_part" && t["part"] == 1)
        .expect("the tree has a file stored in parts");
    tasks.remove(at);
}

#[test]
fn a_manifest_edited_on_one_node_is_damage_there_and_the_other_copies_are_used() {
    let env = Env::odd_tree(2);
    let id = env.json(&["backup"], 0)["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    // Edited in place, its checksum left as it was: one part entry gone on node a.
    let path = manifest_path(&env, "a", &id);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut body = common::read_doc(&path);
    drop_a_part(&mut body);
    let pretty = serde_json::to_string_pretty(&body).unwrap();
    let start = text.find("\"body\": ").unwrap() + 8;
    std::fs::write(&path, format!("{}{pretty}}}\n", &text[..start])).unwrap();

    let (code, out, err) = env.run(&["snapshots"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("node a") && err.contains("damaged"), "{err}");
    assert!(
        problems(&env).contains(&("a".into(), format!("snapshots/{id}.json"), "damaged".into())),
        "{:?}",
        problems(&env)
    );
    restores_exactly(&env, "r1");
    let (code, out, err) = env.run(&["repair", "latest"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("manifest written to every node"), "{out}");
    assert_eq!(problems(&env), []);
}

#[test]
fn a_manifest_that_checks_out_but_differs_on_one_node_is_outvoted_by_the_others() {
    let env = Env::odd_tree(2);
    let id = env.json(&["backup"], 0)["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    // Sealed again after the edit: only the other nodes' agreement tells it is wrong.
    let path = manifest_path(&env, "a", &id);
    let mut body = common::read_doc(&path);
    drop_a_part(&mut body);
    common::write_doc(&path, &body);

    let (code, out, _) = env.run(&["verify", "latest", "--json"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        problems(&env).contains(&(
            "a".into(),
            format!("snapshots/{id}.json"),
            "disagrees".into()
        )),
        "{:?}",
        problems(&env)
    );
    restores_exactly(&env, "r1");
    env.json(&["repair", "latest"], 0);
    assert_eq!(problems(&env), []);
    assert_eq!(
        std::fs::read(manifest_path(&env, "a", &id)).unwrap(),
        std::fs::read(manifest_path(&env, "b", &id)).unwrap()
    );
}

#[test]
fn a_damaged_repository_marker_on_one_node_blocks_nothing_and_repair_rewrites_it() {
    let env = Env::odd_tree(2);
    env.json(&["backup"], 0);
    let marker = env.node_dir("b").join("config.json");
    let mut bytes = std::fs::read(&marker).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x01;
    std::fs::write(&marker, &bytes).unwrap();
    let (code, out, err) = env.run(&["backup"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = env.run(&["init"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        problems(&env).contains(&("b".into(), "config.json".into(), "damaged".into())),
        "{:?}",
        problems(&env)
    );
    let (code, out, err) = env.run(&["repair", "latest"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("wrote the repository marker to node b"),
        "{out}"
    );
    assert_eq!(problems(&env), []);
    restores_exactly(&env, "r");
}
