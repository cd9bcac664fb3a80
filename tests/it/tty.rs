//! The hidden password prompt of `gateway user add` on a real pseudo-terminal: the real binary
//! runs with the pty as its controlling terminal, so a Ctrl-C typed there is the SIGINT a user
//! sends, and whatever way the prompt ends, the terminal has its echo back.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// A pseudo-terminal pair; the test keeps both ends to read the settings afterwards.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

fn open_pty() -> Pty {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds; the name, termios and winsize are optional.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // Reads must not block forever if the binary never prompts.
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Pty {
        master: std::fs::File::from(master),
        slave,
    }
}

impl Pty {
    fn echo(&self) -> bool {
        // SAFETY: termios is plain data, filled by tcgetattr on an fd we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) },
            0
        );
        t.c_lflag & libc::ECHO != 0
    }

    /// Reads what the binary wrote until `text` appears (bounded).
    fn wait_for(&mut self, text: &str, seen: &mut String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 1024];
        while !seen.contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} on the terminal: {seen:?}"
            );
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

/// Starts `gateway user add` with the pty as its controlling terminal and waits for the first
/// hidden prompt.
fn at_the_prompt(dir: &std::path::Path) -> (Pty, std::process::Child, String) {
    std::fs::write(dir.join("gateway.yaml"), "version: 1\n").unwrap();
    let mut pty = open_pty();
    let fd = |p: &Pty| Stdio::from(p.slave.try_clone().unwrap());
    let mut command = Command::new(BIN);
    command
        .args(["user", "add", "tty@example.com", "--config"])
        .arg(dir.join("gateway.yaml"))
        .current_dir(dir)
        .stdin(fd(&pty))
        .stdout(fd(&pty))
        .stderr(fd(&pty));
    // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
    // controlling terminal is the pty (stdin), so ^C there sends SIGINT to the binary.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    assert!(pty.echo(), "a fresh terminal echoes");
    let mut seen = String::new();
    pty.wait_for("New password: ", &mut seen);
    // The prompt turns echo off just after printing itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pty.echo() {
        assert!(
            Instant::now() < deadline,
            "echo never went off at the prompt"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (pty, child, seen)
}

fn wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hang guard: the prompt did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ctrl_c_at_the_hidden_prompt_gives_the_terminal_its_echo_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pty, mut child, _) = at_the_prompt(dir.path());
    pty.master.write_all(b"half a pass\x03").unwrap();
    let status = wait(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert!(pty.echo(), "Ctrl-C left the terminal without echo");
}

#[test]
fn sigterm_at_the_hidden_prompt_gives_the_terminal_its_echo_back() {
    let dir = tempfile::tempdir().unwrap();
    let (pty, mut child, _) = at_the_prompt(dir.path());
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: signals the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert!(pty.echo(), "SIGTERM left the terminal without echo");
}

#[test]
fn a_mismatch_at_the_hidden_prompt_gives_the_terminal_its_echo_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pty, mut child, mut seen) = at_the_prompt(dir.path());
    pty.master.write_all(b"first secret pw\n").unwrap();
    pty.wait_for("Repeat password: ", &mut seen);
    pty.master.write_all(b"other secret pw\n").unwrap();
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(1), "{status:?}");
    pty.wait_for("do not match", &mut seen);
    assert!(pty.echo());
    assert!(
        !seen.contains("secret pw"),
        "the password was echoed: {seen:?}"
    );
}
