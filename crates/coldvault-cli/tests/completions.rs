//! Shell completions and manual pages generated from the clap definitions: each names every
//! subcommand `coldvault --help` lists, each passes its own shell's syntax check, and `man`
//! renders the page.

use std::path::Path;
use std::process::Command;

fn coldvault() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("coldvault"))
}

/// Runs the command, asserts it succeeded, returns its stdout.
fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `coldvault --help` lists (not `help`), so a new one is covered without
/// touching this test.
fn subcommands() -> Vec<String> {
    let help = stdout(coldvault().arg("--help"));
    let list: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&name| name != "help")
        .map(String::from)
        .collect();
    for expected in ["backup", "restore", "verify", "completions"] {
        assert!(list.iter().any(|s| s == expected), "{expected} in {list:?}");
    }
    list
}

#[test]
fn every_shell_gets_a_completion_script_naming_every_subcommand() {
    let subcommands = subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(coldvault().args(["completions", shell]));
        assert!(script.len() > 1000, "{shell}: {script}");
        for sub in &subcommands {
            assert!(
                script.contains(sub.as_str()),
                "{shell} completions lack {sub}"
            );
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_with_exit_code_2() {
    let out = coldvault().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn the_completion_scripts_pass_their_shells_syntax_checks() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, check) in [
        ("bash", &["bash", "-n"][..]),
        ("zsh", &["zsh", "-n"][..]),
        ("fish", &["fish", "--no-execute"][..]),
    ] {
        let file = dir.path().join(shell);
        std::fs::write(&file, stdout(coldvault().args(["completions", shell]))).unwrap();
        stdout(Command::new(check[0]).args(&check[1..]).arg(&file));
    }
}

#[test]
fn bash_completes_a_subcommand_from_its_first_letters() {
    let script = stdout(coldvault().args(["completions", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("coldvault.bash");
    std::fs::write(&file, script).unwrap();
    let words = stdout(Command::new("bash").arg("-c").arg(format!(
        "source '{}'; COMP_WORDS=(coldvault re); COMP_CWORD=1; COMP_LINE='coldvault re'; \
         COMP_POINT=12; _coldvault coldvault re coldvault; echo \"${{COMPREPLY[@]}}\"",
        file.display()
    )));
    let mut words: Vec<&str> = words.split_whitespace().collect();
    words.sort();
    assert_eq!(words, ["repair", "restore"]);
}

/// `man -l` in the C locale (plain ASCII hyphens), wide enough that no name is broken.
fn render(page: &Path) -> String {
    stdout(
        Command::new("man")
            .arg("-l")
            .arg(page)
            .env("LC_ALL", "C")
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "120"),
    )
}

#[test]
fn the_manual_page_has_name_synopsis_and_every_subcommand_and_man_renders_it() {
    let roff = stdout(coldvault().arg("man"));
    assert!(roff.contains(".TH coldvault 1"), "{roff}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH SUBCOMMANDS",
        ".SH \"EXIT STATUS\"",
    ] {
        assert!(roff.contains(section), "{section} missing:\n{roff}");
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("coldvault.1");
    std::fs::write(&page, &roff).unwrap();
    let text = render(&page);
    for heading in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "FILES",
    ] {
        assert!(text.lines().any(|l| l == heading), "{heading}:\n{text}");
    }
    for sub in subcommands() {
        assert!(
            text.contains(&format!("coldvault-{sub}(1)")),
            "{sub}:\n{text}"
        );
    }
}

#[test]
fn man_dir_writes_one_page_per_subcommand_that_man_renders() {
    let dir = tempfile::tempdir().unwrap();
    stdout(coldvault().args(["man", "--dir"]).arg(dir.path()));
    assert!(dir.path().join("coldvault.1").is_file());
    for sub in subcommands() {
        let page = dir.path().join(format!("coldvault-{sub}.1"));
        let text = render(&page);
        assert!(text.contains("SYNOPSIS"), "{}:\n{text}", page.display());
        assert!(text.contains(&format!("coldvault-{sub}")), "{text}");
    }
    let backup = render(&dir.path().join("coldvault-backup.1"));
    assert!(backup.contains("--parallel"), "{backup}");
}
