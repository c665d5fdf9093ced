//! `masv completions SHELL` and `masv man`: shell completions and man pages generated from the
//! clap command tree, so they never drift from the commands. `docs/man/` holds the generated
//! pages; a test checks they are what `masv man --out` writes today.

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write masv.1 and one page per command (masv-download-start.1, …) into this folder
    /// instead of printing masv.1.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    // Into a buffer first: clap_complete panics when its writer fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "masv", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script)
        .context("cannot write the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    match args.out {
        Some(dir) => {
            for (name, page) in man_pages()? {
                let path = dir.join(&name);
                std::fs::write(&path, page)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        None => {
            let (_, page) = man_pages()?.swap_remove(0);
            std::io::Write::write_all(&mut std::io::stdout(), &page)
                .context("cannot write the man page to stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `(file name, roff)` for masv and every command under it, masv.1 first.
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    // `-V`'s version, not `--version`'s commit and date: the pages change with the CLI only.
    let mut command = super::Cli::command().long_version(None::<&'static str>);
    command.build();
    let mut pages = Vec::new();
    add_pages(&command, "masv", &mut pages)?;
    Ok(pages)
}

fn add_pages(
    command: &clap::Command,
    name: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    let roff = render(command.clone().name(name.to_owned()), name == "masv")
        .with_context(|| format!("cannot render the man page of {name}"))?;
    pages.push((format!("{name}.1"), roff.into_bytes()));
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        add_pages(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

/// clap_mangen's sections in its order, with EXIT STATUS (every page) and ENVIRONMENT and FILES
/// (masv.1) before the examples; clap_mangen titles the after-help "EXTRA", here it always
/// holds the examples.
fn render(page: clap::Command, top: bool) -> anyhow::Result<String> {
    let subcommands = page.get_subcommands().any(|s| !s.is_hide_set());
    let examples = page.get_after_long_help().is_some() || page.get_after_help().is_some();
    let man = clap_mangen::Man::new(page);
    let mut roff = Vec::new();
    man.render_title(&mut roff)?;
    man.render_name_section(&mut roff)?;
    man.render_synopsis_section(&mut roff)?;
    man.render_description_section(&mut roff)?;
    man.render_options_section(&mut roff)?;
    if subcommands {
        man.render_subcommands_section(&mut roff)?;
    }
    roff.extend_from_slice(super::exit::man_sections(top).as_bytes());
    if examples {
        man.render_extra_section(&mut roff)?;
    }
    if top {
        man.render_version_section(&mut roff)?;
    }
    let roff = String::from_utf8(roff).context("the man page is not UTF-8")?;
    Ok(roff.replace("\n.SH EXTRA\n", "\n.SH EXAMPLES\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the generated pages are kept in the repository.
    fn man_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man"))
    }

    /// Every command, groups included, from `masv` down.
    fn all_commands() -> Vec<(String, clap::Command)> {
        fn walk(c: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
            out.push((path.clone(), c.clone()));
            for sub in c.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut command = crate::cli::Cli::command();
        command.build();
        let mut out = Vec::new();
        walk(&command, "masv".into(), &mut out);
        out
    }

    #[test]
    fn every_command_shows_an_example_of_itself_in_its_help() {
        let commands = all_commands();
        assert!(
            commands.len() > 30,
            "the tree was walked: {}",
            commands.len()
        );
        let mut missing = Vec::new();
        for (path, mut command) in commands {
            let help = command.render_long_help().to_string();
            let example = help
                .split_once("Example")
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            if !example.lines().any(|l| l.trim_start().starts_with(&path)) {
                missing.push(path);
            }
        }
        assert!(
            missing.is_empty(),
            "these commands' --help shows no example running them: {missing:?}"
        );
    }

    #[test]
    fn the_man_pages_in_docs_are_what_the_cli_generates() {
        let pages = man_pages().unwrap();
        let start = pages
            .iter()
            .find(|(n, _)| n == "masv-server-start.1")
            .expect("a page per command");
        let start = String::from_utf8_lossy(&start.1);
        assert!(
            start.contains("\n.SH EXAMPLES\nExample:\n  masv server start \\-\\-config"),
            "{start}"
        );
        let mut stale = Vec::new();
        for (name, page) in &pages {
            if std::fs::read(man_dir().join(name)).ok().as_ref() != Some(page) {
                stale.push(name.clone());
            }
        }
        let mut kept: Vec<String> = std::fs::read_dir(man_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        kept.retain(|k| !pages.iter().any(|(n, _)| n == k));
        assert!(
            stale.is_empty() && kept.is_empty(),
            "docs/man is out of date (stale: {stale:?}, no longer generated: {kept:?}); run `cargo run -- man --out docs/man` after removing docs/man/*.1"
        );
    }

    #[test]
    fn completions_name_the_commands_for_every_shell() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::Elvish,
            clap_complete::Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut crate::cli::Cli::command(), "masv", &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["download", "automation", "completions", "log-format"] {
                assert!(text.contains(word), "{shell:?} completions lack {word}");
            }
        }
    }
}
