//! `completions` and `man` of both binaries, run for real: generated from the
//! clap definitions, offline (no daemon, no data dir).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

const CTL: &str = env!("CARGO_BIN_EXE_fulcrumctl");
const DAEMON: &str = env!("CARGO_BIN_EXE_fulcrumd");

const CTL_COMMANDS: [&str; 10] =
    ["status", "peers", "offers", "place", "contracts", "placements", "audit", "federation", "completions", "man"];
const DAEMON_COMMANDS: [&str; 4] = ["init", "run", "completions", "man"];

fn run(bin: &str, args: &[&str]) -> Output {
    // No socket anywhere: these must not need the daemon.
    let out = Command::new(bin)
        .args(args)
        .env("FULCRUM_SOCKET", "/nonexistent/admin.sock")
        .env("FULCRUM_DATA_DIR", "/nonexistent")
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "{bin} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// roff: only requests and text, the title macro before the first section.
fn assert_man_page(page: &str, name: &str) {
    assert!(page.starts_with('.'), "not roff: {page}");
    let th = page.lines().position(|l| l.starts_with(".TH ")).expect(".TH line");
    let sh = page.lines().position(|l| l.starts_with(".SH ")).expect(".SH line");
    assert!(th < sh, ".TH comes after .SH in:\n{page}");
    assert!(page.lines().nth(th).unwrap().starts_with(&format!(".TH {name} 1")), "{page}");
}

#[test]
fn bash_completions_know_the_subcommands() {
    let text = stdout(&run(CTL, &["completions", "bash"]));
    assert!(text.contains("complete") && text.contains("fulcrumctl"), "{text}");
    for command in CTL_COMMANDS {
        assert!(text.contains(command), "no {command} in:\n{text}");
    }
    assert!(text.contains("withdraw") && text.contains("--max-unit-price"), "nested commands and flags");
    let text = stdout(&run(DAEMON, &["completions", "bash"]));
    for command in DAEMON_COMMANDS {
        assert!(text.contains(command), "no {command} in:\n{text}");
    }
    assert!(text.contains("--offers-dir"));
}

#[test]
fn every_shell_is_supported() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        for bin in [CTL, DAEMON] {
            assert!(!stdout(&run(bin, &["completions", shell])).is_empty(), "{bin} {shell}");
        }
    }
    let out = Command::new(CTL).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_prints_the_top_page_naming_every_command() {
    let page = stdout(&run(CTL, &["man"]));
    assert_man_page(&page, "fulcrumctl");
    for command in CTL_COMMANDS {
        assert!(page.contains(&format!("fulcrumctl\\-{command}(1)")), "no {command} in:\n{page}");
    }
    let page = stdout(&run(DAEMON, &["man"]));
    assert_man_page(&page, "fulcrumd");
    for command in DAEMON_COMMANDS {
        assert!(page.contains(&format!("fulcrumd\\-{command}(1)")), "no {command} in:\n{page}");
    }
}

#[test]
fn man_out_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let listed = stdout(&run(CTL, &["man", "--out", out.to_str().unwrap()]));
    let mut expected = vec!["fulcrumctl.1".to_owned()];
    expected.extend(CTL_COMMANDS.iter().map(|c| format!("fulcrumctl-{c}.1")));
    expected.extend(["fulcrumctl-offers-publish.1".to_owned(), "fulcrumctl-audit-verify.1".to_owned()]);
    for name in &expected {
        let page = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_man_page(&page, &name[..name.len() - 2]);
        assert!(listed.contains(name.as_str()), "{name} not listed in:\n{listed}");
    }
    assert!(!out.join("fulcrumctl-help.1").exists(), "help is not a command of its own");
    let offers = std::fs::read_to_string(out.join("fulcrumctl-offers.1")).unwrap();
    assert!(offers.contains("publish") && offers.contains("withdraw"), "{offers}");

    run(DAEMON, &["man", "--out", out.to_str().unwrap()]);
    for name in ["fulcrumd.1", "fulcrumd-init.1", "fulcrumd-run.1", "fulcrumd-completions.1", "fulcrumd-man.1"] {
        assert_man_page(&std::fs::read_to_string(out.join(name)).unwrap(), &name[..name.len() - 2]);
    }
    let run_page = std::fs::read_to_string(out.join("fulcrumd-run.1")).unwrap();
    assert!(run_page.contains("FULCRUM_OFFERS_DIR"), "environment variables are documented");
}
