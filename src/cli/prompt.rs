//! Reading what the operator types: new passwords and yes/no confirmations.
//!
//! A password never comes from the command line (it would show in `ps` and the shell history).
//! On a terminal it is prompted for twice with echo turned off (termios); otherwise, or with
//! `--password-stdin`, it is the first line of stdin with its line ending removed.
//!
//! The terminal's settings are put back on every way out of the prompt: a drop guard when
//! reading ends (also with an error), and, while echo is off, handlers for SIGINT (Ctrl-C),
//! SIGQUIT, SIGTERM and SIGHUP that restore them before the signal ends the process as it
//! would have anyway. Without them a Ctrl-C left the shell without echo.

use std::io::{self, BufRead, IsTerminal, Read, Write};

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
struct EchoOff {
    #[cfg(unix)]
    saved: libc::termios,
    #[cfg(unix)]
    handlers: Vec<(libc::c_int, libc::sigaction)>,
}

/// The terminal settings before echo was turned off, for the signal handlers.
#[cfg(unix)]
static SAVED: std::sync::OnceLock<libc::termios> = std::sync::OnceLock::new();

/// The signals that end the process by default and that a user sends from the terminal (or a
/// closing terminal, or `kill`, sends).
#[cfg(unix)]
const FATAL: [libc::c_int; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP];

/// Restores the terminal, then lets the signal do what it would have done (end the process).
/// Only async-signal-safe calls: tcsetattr, write, signal, raise.
#[cfg(unix)]
extern "C" fn restore_terminal_and_die(signal: libc::c_int) {
    // SAFETY: async-signal-safe libc calls on our own stdin/stderr; SAVED is only read.
    unsafe {
        if let Some(saved) = SAVED.get() {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
        }
        // The Enter that was never typed: the shell's prompt starts on a line of its own.
        libc::write(libc::STDERR_FILENO, b"\n".as_ptr().cast(), 1);
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

impl EchoOff {
    #[cfg(unix)]
    fn new() -> anyhow::Result<EchoOff> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a termios for our stdin.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error()).context(
                "cannot read the terminal settings; pipe the password in with --password-stdin",
            );
        }
        // Both prompts start from the same settings; the first read is the one to restore.
        let saved = *SAVED.get_or_init(|| saved);
        let mut handlers = Vec::with_capacity(FATAL.len());
        for signal in FATAL {
            // SAFETY: sigaction structs are plain data; the handler only makes
            // async-signal-safe calls.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = restore_terminal_and_die as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) == 0 {
                    handlers.push((signal, old));
                }
            }
        }
        let guard = EchoOff { saved, handlers };
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a valid termios for our stdin.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
            return Err(io::Error::last_os_error()).context(
                "cannot turn off terminal echo; pipe the password in with --password-stdin",
            );
        }
        Ok(guard)
    }

    #[cfg(not(unix))]
    fn new() -> anyhow::Result<EchoOff> {
        bail!("cannot turn off terminal echo here; pipe the password in with --password-stdin")
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the settings read in `new` and the signal actions replaced there.
        unsafe {
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) != 0 {
                eprintln!("warning: could not turn terminal echo back on; run `stty echo`");
            }
            for (signal, old) in &self.handlers {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
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
