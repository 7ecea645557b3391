use super::*;

fn base() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

const GOOD: &str = r#"
name = "photos"

[source]
type = "fs"
path = "."

[split]
target_bytes = "1MiB"

[repository]
directory = "cold/photos"
replicas = 2
nodes = [
  { name = "disk1", url = "file:n1" },
  { name = "disk2", url = "file:///tmp/n2" },
]

[run]
parallel = 3
retries = 2
"#;

fn parse(text: &str) -> Result<Job> {
    let dir = base();
    Job::parse(text, dir.path())
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn a_good_job_parses() {
    let dir = base();
    let job = Job::parse(GOOD, dir.path()).unwrap();
    assert_eq!(job.name, "photos");
    assert_eq!(job.split.target_bytes, 1 << 20);
    assert_eq!(job.repository.replicas, 2);
    assert_eq!(
        job.repository.nodes[0].url,
        NodeUrl::File {
            path: dir.path().join("n1")
        }
    );
    assert_eq!(job.run.parallel, 3);
    assert_eq!(job.run.retries, 2);
}

#[test]
fn syntax_error_names_the_line() {
    let e = err("name = \"x\"\n[source\ntype = \"fs\"\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn unknown_keys_are_rejected_in_every_section() {
    for (section, line) in [
        ("name = \"photos\"", "colour = 1"),
        ("[split]", "target = 5"),
        ("[repository]", "copies = 2"),
        ("[run]", "paralel = 2"),
    ] {
        let text = GOOD.replace(section, &format!("{section}\n{line}"));
        let e = err(&text);
        let key = line.split(' ').next().unwrap();
        assert!(
            e.contains("unknown field") && e.contains(key),
            "{section}: {e}"
        );
        assert!(e.contains("line"), "{section}: {e}");
    }
}

#[test]
fn unknown_keys_are_rejected_for_every_source_kind() {
    let fs = GOOD.replace("path = \".\"", "path = \".\"\ntables = [\"x\"]");
    assert!(err(&fs).contains("unknown field `tables`"), "{}", err(&fs));
    let sq = GOOD.replace(
        "type = \"fs\"\npath = \".\"",
        "type = \"sqlite\"\npath = \".\"\nwhere = \"x\"",
    );
    assert!(err(&sq).contains("unknown field `where`"), "{}", err(&sq));
    for db in ["postgres://u@h/d", "mysql://u@h/d"] {
        let kind = db.split(':').next().unwrap();
        let bad = GOOD.replace(
            "type = \"fs\"\npath = \".\"",
            &format!("type = \"{kind}\"\nurl = \"{db}\"\npath = \".\""),
        );
        assert!(err(&bad).contains("unknown field `path`"), "{}", err(&bad));
        let table = GOOD.replace(
            "type = \"fs\"\npath = \".\"",
            &format!("type = \"{kind}\"\nurl = \"{db}\"\n[source.table.t]\nsplit = \"x\""),
        );
        assert!(
            err(&table).contains("unknown field `split`"),
            "{}",
            err(&table)
        );
    }
    for url in [
        "file:n1",
        "s3://b?endpoint=http://h:1",
        "azblob://c/p?endpoint=http://h:1/acct",
        "sftp://u@h:22/srv/backups",
    ] {
        let node = GOOD.replace("url = \"file:n1\"", &format!("url = \"{url}\", weight = 2"));
        let e = err(&node);
        assert!(e.contains("unknown field `weight`"), "{url}: {e}");
    }
}

#[test]
fn unknown_source_type_is_named() {
    let e = err(&GOOD.replace("type = \"fs\"", "type = \"ftp\""));
    assert!(e.contains("ftp"), "{e}");
}

#[test]
fn wrong_type_names_the_line() {
    let e = err(&GOOD.replace("replicas = 2", "replicas = \"two\""));
    assert!(e.contains("line 13"), "{e}");
}

#[test]
fn replicas_must_fit_the_nodes() {
    assert!(err(&GOOD.replace("replicas = 2", "replicas = 3")).contains("replicas = 3"));
    assert!(err(&GOOD.replace("replicas = 2", "replicas = 0")).contains("replicas = 0"));
}

#[test]
fn duplicate_node_names_are_rejected() {
    let e = err(&GOOD.replace("\"disk2\"", "\"disk1\""));
    assert!(e.contains("\"disk1\" is used twice"), "{e}");
}

#[test]
fn unknown_url_scheme_is_rejected() {
    let e = err(&GOOD.replace("file:///tmp/n2", "ftp://host/x"));
    assert!(e.contains("unknown scheme \"ftp\""), "{e}");
}

#[test]
fn s3_node_urls_parse() {
    let text = GOOD.replace(
        "file:///tmp/n2",
        "s3://coldvault/backups/x?endpoint=http://127.0.0.1:3900&region=garage",
    );
    let job = parse(&text).unwrap();
    assert_eq!(
        job.repository.nodes[1].url,
        NodeUrl::S3 {
            bucket: "coldvault".into(),
            prefix: "backups/x".into(),
            endpoint: Some("http://127.0.0.1:3900".into()),
            region: "garage".into(),
            virtual_host: false,
        }
    );
    let e = err(&GOOD.replace("file:///tmp/n2", "s3://b?endpoint=ftp://x"));
    assert!(e.contains("http://"), "{e}");
    let e = err(&GOOD.replace("file:///tmp/n2", "s3://b?colour=red"));
    assert!(e.contains("unknown parameter \"colour\""), "{e}");
    let e = err(&GOOD.replace("file:///tmp/n2", "s3:///prefix"));
    assert!(e.contains("no bucket"), "{e}");
}

#[test]
fn azblob_node_urls_parse() {
    let url = |u: &str| {
        parse(&GOOD.replace("file:///tmp/n2", u)).map(|j| j.repository.nodes[1].url.clone())
    };
    assert_eq!(
        url("azblob://coldvault/backups/x/?endpoint=http://127.0.0.1:10000/devstoreaccount1/")
            .unwrap(),
        NodeUrl::Azblob {
            container: "coldvault".into(),
            prefix: "backups/x".into(),
            endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
        }
    );
    assert_eq!(
        url("azblob://c").unwrap(),
        NodeUrl::Azblob {
            container: "c".into(),
            prefix: String::new(),
            endpoint: None,
        }
    );
    let e = url("azblob:///p").unwrap_err().to_string();
    assert!(e.contains("no container"), "{e}");
    let e = url("azblob://c?account_key=SECRET")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown parameter \"account_key\""), "{e}");
    let e = url("azblob://c?endpoint=ftp://x").unwrap_err().to_string();
    assert!(e.contains("http://"), "{e}");
}

#[test]
fn an_azure_account_is_read_from_its_endpoint() {
    use crate::store::node::parse::azure_account;
    let cases = [
        ("https://acct.blob.core.windows.net", Some("acct")),
        ("https://acct.blob.core.chinacloudapi.cn/", Some("acct")),
        (
            "http://127.0.0.1:10000/devstoreaccount1",
            Some("devstoreaccount1"),
        ),
        ("https://backups.example.com", None),
    ];
    for (endpoint, account) in cases {
        assert_eq!(azure_account(endpoint).as_deref(), account, "{endpoint}");
    }
}

#[test]
fn sftp_node_urls_parse() {
    let url = |u: &str| {
        parse(&GOOD.replace("file:///tmp/n2", u)).map(|j| j.repository.nodes[1].url.clone())
    };
    assert_eq!(
        url("sftp://backup@nas.local:2222/srv/cold/").unwrap(),
        NodeUrl::Sftp {
            user: Some("backup".into()),
            host: "nas.local".into(),
            port: 2222,
            path: "/srv/cold".into(),
            known_hosts: crate::store::KnownHosts::Strict,
        }
    );
    assert_eq!(
        url("sftp://nas/srv?known_hosts=add").unwrap(),
        NodeUrl::Sftp {
            user: None,
            host: "nas".into(),
            port: 22,
            path: "/srv".into(),
            known_hosts: crate::store::KnownHosts::Add,
        }
    );
    let e = url("sftp://u:hunter2@nas/srv").unwrap_err().to_string();
    assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
    for (bad, says) in [
        ("sftp://nas", "no path"),
        ("sftp://nas/", "no path"),
        ("sftp://:22/srv", "no host"),
        ("sftp://nas:ssh/srv", "not a number"),
        (
            "sftp://nas/srv?known_hosts=yes",
            "strict (the default), add or accept",
        ),
        (
            "sftp://nas/srv?password=x",
            "unknown parameter \"password\"",
        ),
    ] {
        let e = url(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn credential_fields_are_only_for_their_kind_of_node() {
    for (url, field, owner) in [
        ("file:n1", "secret_access_key_env = \"X\"", "s3"),
        ("file:n1", "key_file = \"id\"", "sftp"),
        ("s3://b", "account_key_env = \"X\"", "azblob"),
        ("azblob://c", "access_key_id_file = \"f\"", "s3"),
        ("azblob://c", "key_file = \"id\"", "sftp"),
        ("sftp://h/srv", "account_name_env = \"X\"", "azblob"),
        ("sftp://h/srv", "ambient_credentials = true", "s3"),
    ] {
        let e = err(&GOOD.replace("url = \"file:n1\"", &format!("url = \"{url}\", {field}")));
        let name = field.split(' ').next().unwrap();
        assert!(
            e.contains(&format!("{name} is only for {owner}:// nodes")),
            "{url} {field}: {e}"
        );
    }
    let text = GOOD.replace(
        "{ name = \"disk2\", url = \"file:///tmp/n2\" }",
        "{ name = \"disk2\", url = \"azblob://c\", account_key_env = \"MY_KEY\", account_key_file = \"k\" }",
    );
    let job = parse(&text).unwrap();
    let c = &job.repository.nodes[1].credentials;
    assert_eq!(c.account_key_env.as_deref(), Some("MY_KEY"));
    assert!(
        c.account_key_file.as_ref().unwrap().is_absolute(),
        "from the job's directory"
    );
}

#[test]
fn credentials_are_only_for_s3_nodes_and_never_serialised() {
    let e = err(&GOOD.replace(
        "url = \"file:n1\"",
        "url = \"file:n1\", secret_access_key_env = \"X\"",
    ));
    assert!(e.contains("only for s3:// nodes"), "{e}");
    let text = GOOD.replace(
        "{ name = \"disk2\", url = \"file:///tmp/n2\" }",
        "{ name = \"disk2\", url = \"s3://b?endpoint=http://h:1\", secret_access_key_env = \"MY_SECRET\" }",
    );
    let job = parse(&text).unwrap();
    let json = serde_json::to_string(&job).unwrap();
    assert!(json.contains("MY_SECRET"), "the variable's name is kept");
}

#[test]
fn missing_source_path_is_named() {
    let e = err(&GOOD.replace("path = \".\"", "path = \"does/not/exist\""));
    assert!(
        e.contains("[source] path") && e.contains("does/not/exist"),
        "{e}"
    );
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("256MiB"), Ok(256 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("10MB"), Ok(10_000_000));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("5 parsecs").is_err());
}

#[test]
fn load_names_the_file() {
    let dir = base();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, "name = 1\n").unwrap();
    let e = Job::load(&path).unwrap_err().to_string();
    assert!(e.contains("job.toml") && e.contains("line 1"), "{e}");
}

#[test]
fn mysql_urls_name_a_database_and_hold_no_password() {
    let job = |url: &str| {
        GOOD.replace(
            "type = \"fs\"\npath = \".\"",
            &format!("type = \"mysql\"\nurl = \"{url}\""),
        )
    };
    let ok = parse(&job("mysql://backup@db1:3306/shop")).unwrap();
    assert_eq!(ok.source.type_name(), "mysql");
    assert!(err(&job("mysql://backup@db1:3306")).contains("name the database"));
    assert!(err(&job("mysql://backup:pw@db1/shop")).contains("MYSQL_PWD, not in the URL"));
    assert!(err(&job("postgres://backup@db1/shop")).contains("expected mysql://"));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Any text is a job or a clear error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = parse(&text);
        }

        /// A good job with bytes cut out, repeated or replaced: a job or an error that says
        /// something, never a panic.
        #[test]
        fn mutated_jobs_never_panic(
            cut in 0usize..400, len in 0usize..40, insert in "[\\[\\]{}=\"'.,a-z0-9 \\n-]{0,12}"
        ) {
            let mut text = GOOD.replace("type = \"fs\"\npath = \".\"",
                "type = \"mysql\"\nurl = \"mysql://u@h:1/d\"\n[source.table.t]\nsplit_by = \"k\"");
            let at = cut.min(text.len());
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let end = (at + len).min(text.len());
            let end = (end..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            text.replace_range(at..end, &insert);
            if let Err(e) = parse(&text) {
                prop_assert!(!e.to_string().trim().is_empty());
            }
        }
    }
}

#[test]
fn encryption_settings_are_checked() {
    let with = |enc: &str| {
        GOOD.replace(
            "\n[run]",
            &format!("\n[repository.encryption]\n{enc}\n\n[run]"),
        )
    };
    let ok = parse(&with("recipients = [\"age1abc\"]\nidentity_env = \"K\"")).unwrap();
    let enc = ok.repository.encryption.unwrap();
    assert_eq!(enc.identity_env.as_deref(), Some("K"));
    assert!(err(&with("recipients = [\"age1abc\"]\npassphrase_env = \"P\"")).contains("not both"));
    assert!(err(&with("identity_file = \"k\"")).contains("name recipients"));
    assert!(err(&with("recipients = [\"ssh-ed25519 AAA\"]")).contains("not an age public key"));
    assert!(err(&with("passphrase = \"inline\"")).contains("unknown field `passphrase`"));
}

#[test]
fn a_tree_selection_parses_and_its_mistakes_are_named() {
    let with = |lines: &str| GOOD.replace("path = \".\"", &format!("path = \".\"\n{lines}"));
    let job = parse(&with(
        "exclude = [\"*.tmp\", \"/cache/\"]\nexclude_if_present = [\".nobackup\"]\none_file_system = true\non_unreadable = \"fail\"",
    ))
    .unwrap();
    let Source::Fs { select, .. } = &job.source else {
        panic!("not a tree")
    };
    assert_eq!(select.exclude, ["*.tmp", "/cache/"]);
    assert_eq!(select.exclude_if_present, [".nobackup"]);
    assert!(select.one_file_system);
    assert_eq!(select.on_unreadable, OnUnreadable::Fail);
    let e = err(&with("on_unreadable = \"skip\""));
    assert!(e.contains("on_unreadable = \"skip\""), "{e}");
    let e = err(&with("exclude_if_present = [\"a/b\"]"));
    assert!(e.contains("\"a/b\" is not a file name"), "{e}");
    let e = err(&with("exclude = [\"a[z-a]\"]"));
    assert!(e.contains("\"a[z-a]\" is not a valid pattern"), "{e}");
}

#[test]
fn storage_class_and_max_rate_are_read_and_checked() {
    let s3 = r#"{ name = "deep", url = "s3://b/p?endpoint=http://127.0.0.1:9", storage_class = "DEEP_ARCHIVE", max_rate = "50MiB/s" }"#;
    let job = parse(&GOOD.replace(r#"{ name = "disk2", url = "file:///tmp/n2" }"#, s3)).unwrap();
    let deep = &job.repository.nodes[1];
    assert_eq!(deep.storage_class.as_deref(), Some("DEEP_ARCHIVE"));
    assert_eq!(deep.max_rate, Some(50 << 20));
    assert_eq!(job.repository.nodes[0].max_rate, None);
    let e = err(&GOOD.replace(
        r#"url = "file:n1" }"#,
        r#"url = "file:n1", max_rate = "fast" }"#,
    ));
    assert!(e.contains("node \"disk1\": max_rate: \"fast\""), "{e}");
    let e = err(&GOOD.replace(
        r#"url = "file:n1" }"#,
        r#"url = "file:n1", storage_class = "GLACIER" }"#,
    ));
    assert!(e.contains("storage_class is only for s3:// nodes"), "{e}");
    assert_eq!(parse_rate("2MiB"), Ok(2 << 20));
    assert!(parse_rate("100/s").is_err());
}
