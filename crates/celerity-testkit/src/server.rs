//! [`NatsServer`]: one running (or stopped) `nats-server` child process and its files.
//!
//! It owns the process and its temporary directory, and kills the one and removes the other on
//! drop; it also sends the process the signals of the fault controls (stop, kill, pause, resume,
//! lame duck). Choosing options is the builder's job; probing readiness is `readiness.rs`'s.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::config::ServerConfig;
use crate::{TestkitError, TlsFiles, readiness};

/// How long [`NatsServer::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The pause between two checks whether a stopping server has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// nats-server's own lame duck duration, used when the config sets none.
const DEFAULT_LAME_DUCK_DURATION: Duration = Duration::from_secs(120);

/// How much longer than its lame duck duration [`NatsServer::lame_duck`] waits for the exit: the
/// server also moves its Raft leaders away (about a second) before it closes clients.
const LAME_DUCK_EXIT_MARGIN: Duration = Duration::from_secs(10);

/// A `nats-server` process on 127.0.0.1 with its own config, log and store directory.
///
/// Dropping it kills the process (SIGKILL) and removes its temporary directory, even when a test
/// panics; a store directory given to [`NatsServerBuilder::store_dir`](crate::NatsServerBuilder::store_dir) is kept.
///
/// ```no_run
/// # fn main() -> Result<(), celerity_testkit::TestkitError> {
/// use celerity_testkit::NatsServer;
///
/// let mut server = NatsServer::start()?;
/// let url = server.url(); // "nats://127.0.0.1:<port>"
/// server.restart()?; // Same port and store directory, so streams survive.
/// assert_eq!(server.url(), url);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    config: ServerConfig,
    config_path: PathBuf,
    ready_timeout: Duration,
    /// `None` while stopped.
    child: Option<Child>,
    /// Whether the running child was sent SIGSTOP and not yet SIGCONT.
    paused: bool,
    /// Holds config, log and TLS files, and the store unless the caller gave one; removed on drop.
    _temp_dir: TempDir,
}

impl NatsServer {
    /// The URL clients connect to, `nats://127.0.0.1:<port>` (also for TLS servers).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.port)
    }

    /// The client port on 127.0.0.1; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The server's name (`server_name` in its config and `INFO`), unique among testkit servers.
    ///
    /// Cluster monitoring reports leaders by this name.
    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }

    /// The HTTP monitoring port on 127.0.0.1 (`/varz`, `/jsz`), if monitoring is on; cluster
    /// nodes have one, a server from [`NatsServer::builder`] has none.
    pub fn monitor_port(&self) -> Option<u16> {
        self.config.http_port
    }

    /// The process id, or `None` while the server is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The JetStream store directory; nats-server keeps its data in `jetstream/` below it.
    pub fn store_dir(&self) -> &Path {
        &self.config.store_dir
    }

    /// The server's log file, which also receives its stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.config.log_path
    }

    /// The certificate files, when the server was built with [`NatsServerBuilder::tls`](crate::NatsServerBuilder::tls).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.config.tls.as_ref()
    }

    /// Stops the server gracefully: SIGTERM, then SIGKILL if it has not exited within 10 s.
    ///
    /// Does nothing when the server is already stopped.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when the signal cannot be sent or the process cannot be waited for.
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        let port = self.config.port;
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if !has_exited(child, port)? {
            send_signal(child, libc::SIGTERM, "SIGTERM", port)?;
            // A stopped process acts on SIGTERM only once it runs again.
            if self.paused {
                send_signal(child, libc::SIGCONT, "SIGCONT", port)?;
                self.paused = false;
            }
            let deadline = Instant::now() + STOP_GRACE;
            while !has_exited(child, port)? {
                if Instant::now() >= deadline {
                    return self.kill();
                }
                thread::sleep(EXIT_POLL_INTERVAL);
            }
        }
        self.child = None;
        self.paused = false;
        Ok(())
    }

    /// Kills the server with SIGKILL and waits for it to exit, as a crash would.
    ///
    /// Works on a paused server too (SIGKILL needs no SIGCONT). Does nothing when the server is
    /// already stopped.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when the process cannot be killed or waited for.
    pub fn kill(&mut self) -> Result<(), TestkitError> {
        let port = self.config.port;
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // `Child::kill` succeeds on a process that exited but was not yet reaped.
        child
            .kill()
            .map_err(TestkitError::io(format!("kill nats-server on port {port}")))?;
        child.wait().map_err(TestkitError::io(format!(
            "wait for killed nats-server on port {port}"
        )))?;
        self.child = None;
        self.paused = false;
        Ok(())
    }

    /// Freezes the server with SIGSTOP, as a hung machine would: its sockets stay open, but it
    /// answers nothing, and its cluster peers see it time out. Returns once every thread of the
    /// process has stopped.
    ///
    /// Does nothing when the server is stopped or already paused.
    /// [`resume`](Self::resume) undoes it; dropping a paused server still kills it.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when the signal cannot be sent or the stop cannot be waited for.
    pub fn pause(&mut self) -> Result<(), TestkitError> {
        if self.paused || !self.is_running() {
            return Ok(());
        }
        if let Some(child) = &self.child {
            send_signal(child, libc::SIGSTOP, "SIGSTOP", self.config.port)?;
            self.paused = true;
            // The threads of the process stop one by one; until the last has, it may still answer.
            wait_until_stopped(child, self.config.port)?;
        }
        Ok(())
    }

    /// Lets a paused server run again with SIGCONT.
    ///
    /// Does nothing when the server is not paused.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when the signal cannot be sent.
    pub fn resume(&mut self) -> Result<(), TestkitError> {
        if !self.paused {
            return Ok(());
        }
        if let Some(child) = &self.child {
            send_signal(child, libc::SIGCONT, "SIGCONT", self.config.port)?;
        }
        self.paused = false;
        Ok(())
    }

    /// Whether the server was [paused](Self::pause) and not resumed, stopped or killed since.
    pub fn is_paused(&self) -> bool {
        self.paused && self.child.is_some()
    }

    /// Puts the server into lame duck mode (SIGUSR2) and waits until it has exited.
    ///
    /// In lame duck mode the server stops accepting clients, hands its Raft leaderships to other
    /// cluster nodes (about a second), waits its grace period of 1 s if clients are connected,
    /// closes them one by one (at most a second apart) and shuts down. Testkit servers use a lame
    /// duck duration of 30 s, the least nats-server accepts in a config file; the wait lasts at
    /// most that plus 10 s.
    ///
    /// A paused server is resumed first. Does nothing when the server is stopped;
    /// [`start_again`](Self::start_again) brings it back on the same port with the same data.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotExited`] when the server is still running at the deadline (it is then
    /// killed), [`TestkitError::Io`] when the signal cannot be sent or the process not waited for.
    pub fn lame_duck(&mut self) -> Result<(), TestkitError> {
        self.resume()?;
        let port = self.config.port;
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if !has_exited(child, port)? {
            send_signal(child, libc::SIGUSR2, "SIGUSR2", port)?;
            let timeout = self
                .config
                .lame_duck
                .map_or(DEFAULT_LAME_DUCK_DURATION, |lame_duck| lame_duck.duration)
                + LAME_DUCK_EXIT_MARGIN;
            let deadline = Instant::now() + timeout;
            while !has_exited(child, port)? {
                if Instant::now() >= deadline {
                    self.kill()?;
                    return Err(TestkitError::NotExited {
                        port,
                        timeout,
                        log_tail: readiness::log_tail(&self.config.log_path, 0),
                    });
                }
                thread::sleep(EXIT_POLL_INTERVAL);
            }
        }
        self.child = None;
        Ok(())
    }

    /// Starts a stopped server again with the same port, config and store directory, and waits
    /// until it accepts clients; JetStream data written before the stop is still there.
    ///
    /// Does nothing when the server is running.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Spawn`] when the binary cannot be run; [`TestkitError::PortInUse`],
    /// [`TestkitError::Exited`] or [`TestkitError::NotReady`] when it does not come up.
    pub fn start_again(&mut self) -> Result<(), TestkitError> {
        if self.is_running() {
            return Ok(());
        }
        std::fs::write(&self.config_path, self.config.render()).map_err(TestkitError::io(
            format!("write config file {}", self.config_path.display()),
        ))?;
        let ports_dir = &self.config.ports_file_dir;
        std::fs::create_dir_all(ports_dir).map_err(TestkitError::io(format!(
            "create ports file directory {}",
            ports_dir.display()
        )))?;
        let log_path = &self.config.log_path;
        let log_offset = std::fs::metadata(log_path).map_or(0, |metadata| metadata.len());
        let log_action = || format!("open log file {}", log_path.display());
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(TestkitError::io(log_action()))?;
        let stderr = stdout.try_clone().map_err(TestkitError::io(log_action()))?;
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let ports_file = readiness::ports_file(ports_dir, &self.binary, child.id());
        let ready = readiness::wait_until_ready(
            &mut child,
            &mut self.config,
            &ports_file,
            log_offset,
            self.ready_timeout,
        );
        match ready {
            Ok(()) => {
                self.child = Some(child);
                self.paused = false;
                Ok(())
            }
            Err(error) => {
                // The process may already be gone; the startup error matters more than these.
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    /// Stops the server gracefully and starts it again on the same port with the same data.
    ///
    /// # Errors
    ///
    /// The errors of [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop()?;
        self.start_again()
    }

    /// Whether the process is alive; reaps it and counts as stopped once it has exited.
    pub fn is_running(&mut self) -> bool {
        let port = self.config.port;
        match self.child.as_mut() {
            None => false,
            Some(child) => match has_exited(child, port) {
                Ok(true) => {
                    self.child = None;
                    self.paused = false;
                    false
                }
                // An unknown state counts as running, so `Drop` still kills the process.
                Ok(false) | Err(_) => true,
            },
        }
    }

    /// A stopped server with nothing spawned yet; the builder starts it.
    pub(crate) fn new(
        binary: PathBuf,
        config: ServerConfig,
        temp_dir: TempDir,
        ready_timeout: Duration,
    ) -> NatsServer {
        NatsServer {
            binary,
            config_path: temp_dir.path().join("nats-server.conf"),
            config,
            ready_timeout,
            child: None,
            paused: false,
            _temp_dir: temp_dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // A failure here cannot be reported; `kill` leaves nothing behind that a retry would fix.
        let _ = self.kill();
    }
}

fn has_exited(child: &mut Child, port: u16) -> Result<bool, TestkitError> {
    child
        .try_wait()
        .map(|status| status.is_some())
        .map_err(TestkitError::io(format!(
            "check whether nats-server on port {port} has exited"
        )))
}

/// Waits until the kernel reports the child stopped (or gone), for at most [`STOP_GRACE`].
fn wait_until_stopped(child: &Child, port: u16) -> Result<(), TestkitError> {
    let action = || format!("wait for nats-server on port {port} to stop after SIGSTOP");
    let pid = libc::id_t::from(child.id());
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        // SAFETY: An all-zero `siginfo_t` is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable `siginfo_t`. `WNOWAIT` leaves the child's state
        // unreaped, so `Child::try_wait` and `Child::wait` still see an exit later.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        if result != 0 {
            return Err(TestkitError::io(action())(std::io::Error::last_os_error()));
        }
        // With `WNOHANG` and nothing to report, `info` stays zeroed.
        if info.si_signo == libc::SIGCHLD || Instant::now() >= deadline {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn send_signal(
    child: &Child,
    signal: libc::c_int,
    signal_name: &str,
    port: u16,
) -> Result<(), TestkitError> {
    let action = || format!("send {signal_name} to nats-server on port {port}");
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))
        .map_err(TestkitError::io(action()))?;
    // SAFETY: `kill` has no memory-safety preconditions. The child has not been reaped
    // (we still hold it un-waited), so `pid` cannot have been reused by another process.
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 {
        Ok(())
    } else {
        Err(TestkitError::io(action())(std::io::Error::last_os_error()))
    }
}
