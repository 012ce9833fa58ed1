//! Shell completions and man pages, generated from the clap definitions of
//! `fulcrumctl` and `fulcrumd` (so they never drift from `--help`). Both work
//! offline: nothing here talks to a daemon.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Arguments of `completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; the script is printed on stdout
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `man`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// Write <name>.1 and one page per subcommand (<name>-<sub>.1) into DIR,
    /// creating it [default: print the top page on stdout]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Writes the completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let name = cmd.get_name().to_owned();
    // clap_complete writes straight through; render into memory so that a
    // closed pipe shows up as an error here rather than a panic there.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    out.write_all(&buf)?;
    out.flush()
}

/// Man page of `cmd` alone (its subcommands are listed, not described).
pub fn man_page(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::new();
    page(cmd).render(&mut buf)?;
    out.write_all(&buf)?;
    out.flush()
}

/// Writes the man page of `cmd` and of every (nested) visible subcommand into
/// `dir` (created if missing); returns the files written, top page first.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn write_all(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
        let subs: Vec<clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
        written.push(page(cmd).generate_to(dir)?);
        for sub in subs {
            write_all(sub, dir, written)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    // Built once from the top, so that subcommands carry their full display
    // names (`fulcrumctl-offers-publish`) and `help` is not a page of its own.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_all(cmd, dir, &mut written)?;
    Ok(written)
}

fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).manual("Fulcrum")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("tool")
            .version("1.0")
            .subcommand(clap::Command::new("alpha").subcommand(clap::Command::new("deep")))
            .subcommand(clap::Command::new("beta"))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn pages_for_every_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(sample(), &dir.path().join("man")).unwrap();
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tool.1", "tool-alpha.1", "tool-alpha-deep.1", "tool-beta.1"]);
        let top = std::fs::read_to_string(&written[0]).unwrap();
        assert!(top.lines().any(|l| l.starts_with(".TH tool 1")), "{top}");
    }

    #[test]
    fn completion_names_subcommands() {
        let mut out = Vec::new();
        completions(sample(), Shell::Bash, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("alpha") && text.contains("beta"), "{text}");
    }
}
