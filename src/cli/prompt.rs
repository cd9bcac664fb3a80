//! Reading what the operator types: new passwords and yes/no confirmations.
//!
//! A password never comes from the command line (it would show in `ps` and the shell history).
//! On a terminal it is prompted for twice with echo turned off (`stty -echo`, no extra
//! dependency; echo is turned back on by a drop guard, so also when reading fails); otherwise,
//! or with `--password-stdin`, it is the first line of stdin with its line ending removed.
//!
//! Known gap: a Ctrl-C at the hidden prompt kills the process before the guard runs, leaving
//! echo off; `stty echo` (or `reset`) restores it.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::secret::SecretString;

/// Longest line read from stdin. Far above any sensible `auth.password.max_bytes`; it only keeps
/// a runaway pipe from filling memory. Longer input is cut here and then refused by the policy.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// Reads a new password: from a no-echo prompt (asked twice) when stdin is a terminal and
/// `from_stdin` is not set, else from the first line of stdin.
pub(super) fn new_password(from_stdin: bool) -> anyhow::Result<SecretString> {
    let stdin = io::stdin();
    if !from_stdin && stdin.is_terminal() {
        let first = hidden("New password: ")?;
        let second = hidden("Repeat password: ")?;
        if first.expose() != second.expose() {
            bail!("the two passwords do not match");
        }
        return Ok(first);
    }
    match first_line(&mut stdin.lock()).context("read the password from stdin")? {
        Some(password) => Ok(password),
        None => bail!("no password on stdin (give it as the first line)"),
    }
}

/// Asks a yes/no question on stderr and reads the answer from stdin; only `y` or `yes` (any
/// case) is yes, and end of input is no.
pub(super) fn confirm(question: &str) -> anyhow::Result<bool> {
    let mut err = io::stderr();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let answer = first_line(&mut io::stdin().lock()).context("read the answer from stdin")?;
    Ok(answer.is_some_and(|a| is_yes(a.expose())))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The first line of `input` without its `\n` or `\r\n`; `None` at end of input.
fn first_line(input: &mut impl BufRead) -> io::Result<Option<SecretString>> {
    let mut line = String::new();
    if input.take(MAX_LINE_BYTES).read_line(&mut line)? == 0 {
        return Ok(None);
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(Some(SecretString::new(line)))
}

/// Prompts on stderr and reads one line from the terminal with echo off.
fn hidden(prompt: &str) -> anyhow::Result<SecretString> {
    let mut err = io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    let read = {
        let _echo_off = EchoOff::new()?;
        first_line(&mut io::stdin().lock())
    };
    // The operator's Enter was not echoed either.
    writeln!(err)?;
    match read.context("read the password from the terminal")? {
        Some(password) => Ok(password),
        None => bail!("no password entered"),
    }
}

/// Terminal echo is off while this lives.
struct EchoOff;

impl EchoOff {
    fn new() -> anyhow::Result<EchoOff> {
        stty("-echo").context(
            "cannot turn off terminal echo with `stty -echo`; pipe the password in with --password-stdin",
        )?;
        Ok(EchoOff)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Err(e) = stty("echo") {
            eprintln!("warning: could not turn terminal echo back on ({e}); run `stty echo`");
        }
    }
}

/// Runs `stty ARG` on our terminal (stty acts on its stdin, which it inherits).
fn stty(arg: &str) -> io::Result<()> {
    let status = Command::new("stty")
        .arg(arg)
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("stty {arg}: {status}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(input: &str) -> Option<String> {
        first_line(&mut io::Cursor::new(input.as_bytes()))
            .unwrap()
            .map(|s| s.expose().clone())
    }

    #[test]
    fn first_line_strips_only_the_line_ending() {
        assert_eq!(
            line("s3cret pw\nsecond line\n").as_deref(),
            Some("s3cret pw")
        );
        assert_eq!(line("s3cret pw\r\n").as_deref(), Some("s3cret pw"));
        assert_eq!(line("no newline").as_deref(), Some("no newline"));
        // Spaces are part of the password.
        assert_eq!(line("  padded  \n").as_deref(), Some("  padded  "));
        assert_eq!(line("\n").as_deref(), Some(""));
        assert_eq!(line(""), None);
    }

    #[test]
    fn first_line_is_bounded() {
        let long = "x".repeat(100_000);
        let got = line(&long).unwrap();
        assert_eq!(got.len() as u64, MAX_LINE_BYTES);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut input = io::Cursor::new(&b"\xff\xfe\n"[..]);
        assert!(first_line(&mut input).is_err());
    }

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y", "Y", "yes", " YES "] {
            assert!(is_yes(yes), "{yes}");
        }
        for no in ["", "n", "no", "yess", "ja"] {
            assert!(!is_yes(no), "{no}");
        }
    }
}
