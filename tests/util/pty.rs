//! A real pseudo-terminal: a child runs with stdin, stdout and stderr on its slave
//! side, as its controlling terminal in a session of its own, so line editing, `^D`
//! and `^C` (a real SIGINT from the terminal driver) behave as for a person typing.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child on a pseudo-terminal, and everything it wrote there.
pub struct Pty {
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    /// Set once the terminal hung up (every holder of the slave is gone) and all the
    /// output was read.
    drained: Arc<AtomicBool>,
    pub child: Child,
}

impl Pty {
    /// Starts `cmd` on a new pseudo-terminal (80×24), its stdin, stdout and stderr
    /// all on it. Stdio the command set before is replaced.
    pub fn spawn(cmd: Command) -> Pty {
        Self::spawn_with_stdin(cmd, None)
    }

    /// [`Pty::spawn`], with stdin from `stdin` instead of the terminal when given
    /// (stdout and stderr stay on it).
    pub fn spawn_with_stdin(mut cmd: Command, stdin: Option<Stdio>) -> Pty {
        let (mut m, mut s) = (0, 0);
        let mut size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out-pointers to two ints; no name buffer, default termios. Mutable
        // pointers: macOS declares them so, and they coerce to Linux's const ones.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &raw mut size,
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two open descriptors we now own.
        let (master, slave) = unsafe { (File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        // The child must not inherit the master, or the terminal never hangs up.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        let stdin = stdin.unwrap_or_else(|| Stdio::from(slave.try_clone().expect("dup")));
        cmd.stdin(stdin)
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // stdout (fd 1) is the terminal even when stdin is not.
                if libc::ioctl(1, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("child starts on the pty");
        // The parent's copies of the slave go with the command.
        drop(cmd);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup master");
        let sink = output.clone();
        let drained = Arc::new(AtomicBool::new(false));
        let done = drained.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the child and every holder of the slave are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            done.store(true, Ordering::SeqCst);
        });
        Pty {
            master,
            output,
            drained,
            child,
        }
    }

    /// Types `bytes` at the terminal.
    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty");
    }

    /// Everything the child wrote so far (stdout and stderr together).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `text`; panics with the output if it does not
    /// within `within`.
    #[track_caller]
    pub fn expect(&self, text: &str, within: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let out = self.output();
            if out.contains(text) {
                return out;
            }
            assert!(
                t0.elapsed() < within,
                "no {text:?} within {within:?}; output: {out:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit (killing it and panicking after `within`), then for
    /// its last output to be read; returns its status and all its output.
    #[track_caller]
    pub fn wait(&mut self, within: Duration) -> (ExitStatus, String) {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let t1 = Instant::now();
                while !self.drained.load(Ordering::SeqCst) && t1.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return (status, self.output());
            }
            if t0.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {within:?}; output: {:?}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns true if and only if the terminal is still in the mode it started in
    /// (canonical input, echo, signals from `^C`): a prompt left it sane.
    pub fn is_sane(&self) -> bool {
        // SAFETY: a zeroed termios filled by tcgetattr on a descriptor we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) };
        assert_eq!(r, 0, "tcgetattr: {}", std::io::Error::last_os_error());
        let want = libc::ICANON | libc::ECHO | libc::ISIG;
        t.c_lflag & want == want
    }
}
