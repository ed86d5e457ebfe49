//! Waiting until a freshly spawned `nats-server` accepts clients, and reading its log when it does not.
//!
//! Ready means: the process still runs, a TCP connect to its port succeeds, and the first line is an
//! `INFO` whose JSON names our server (and says `"jetstream": true` when JetStream is on).
//! TLS servers send that `INFO` in plaintext before the handshake, so no TLS is needed to probe them.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use crate::TestkitError;
use crate::config::ServerConfig;

/// The pause between two probes; short, because the deadline bounds the loop.
const PROBE_INTERVAL: Duration = Duration::from_millis(15);

/// How long one connect or read may take before the probe counts as failed.
const PROBE_IO_TIMEOUT: Duration = Duration::from_millis(500);

/// The most bytes of the log a startup error carries.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// The most lines of the log a startup error carries.
const LOG_TAIL_LINES: usize = 25;

/// Polls until the server behind `child` is ready, it exits, or `timeout` passes.
///
/// `log_offset` is where this start's output begins in the log file, so errors show only this start.
pub(crate) fn wait_until_ready(
    child: &mut Child,
    config: &ServerConfig,
    log_offset: u64,
    timeout: Duration,
) -> Result<(), TestkitError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(TestkitError::io(format!(
            "check whether nats-server on port {} is still running",
            config.port
        )))? {
            let log_tail = log_tail(&config.log_path, log_offset);
            return Err(if log_tail.contains("address already in use") {
                TestkitError::PortInUse {
                    port: config.port,
                    log_tail,
                }
            } else {
                TestkitError::Exited {
                    port: config.port,
                    status,
                    log_tail,
                }
            });
        }
        let last_probe = match probe(config) {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(TestkitError::NotReady {
                port: config.port,
                timeout,
                last_probe,
                log_tail: log_tail(&config.log_path, log_offset),
            });
        }
        thread::sleep(PROBE_INTERVAL);
    }
}

/// One readiness attempt; the error says what was seen instead of a matching `INFO`.
fn probe(config: &ServerConfig) -> Result<(), String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
    let stream = TcpStream::connect_timeout(&address, PROBE_IO_TIMEOUT)
        .map_err(|error| format!("connect failed: {error}"))?;
    stream
        .set_read_timeout(Some(PROBE_IO_TIMEOUT))
        .map_err(|error| format!("setting a read timeout failed: {error}"))?;
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .map_err(|error| format!("reading INFO failed: {error}"))?;
    let json = line
        .trim_end()
        .strip_prefix("INFO ")
        .ok_or_else(|| format!("first line is not INFO: {:?}", line.trim_end()))?;
    let info: serde_json::Value =
        serde_json::from_str(json).map_err(|error| format!("INFO is not JSON: {error}"))?;
    let server_name = info.get("server_name").and_then(serde_json::Value::as_str);
    if server_name != Some(config.server_name.as_str()) {
        return Err(format!(
            "another server answers on the port (server_name {server_name:?}, expected {:?})",
            config.server_name
        ));
    }
    let jetstream = info.get("jetstream").and_then(serde_json::Value::as_bool);
    if config.jetstream && jetstream != Some(true) {
        return Err("INFO does not say \"jetstream\": true yet".to_owned());
    }
    Ok(())
}

/// The last lines written to the log at `path` after `offset`, or a note saying why there are none.
pub(crate) fn log_tail(path: &Path, offset: u64) -> String {
    match read_log_tail(path, offset) {
        Ok(tail) if tail.trim().is_empty() => "(the log is empty)".to_owned(),
        Ok(tail) => tail,
        Err(error) => format!("(could not read {}: {error})", path.display()),
    }
}

fn read_log_tail(path: &Path, offset: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let start = offset.max(length.saturating_sub(LOG_TAIL_BYTES));
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.len().saturating_sub(LOG_TAIL_LINES);
    Ok(lines[first..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_starts_at_the_offset_and_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let old_run = "old run\n";
        let new_run: String = (0..40).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, format!("{old_run}{new_run}")).unwrap();
        let tail = log_tail(&path, old_run.len() as u64);
        assert!(!tail.contains("old run"), "{tail}");
        assert!(tail.starts_with("line 15\n"), "{tail}");
        assert!(tail.ends_with("line 39"), "{tail}");
    }

    #[test]
    fn log_tail_of_a_missing_file_says_so() {
        let tail = log_tail(Path::new("/nonexistent/log"), 0);
        assert!(
            tail.starts_with("(could not read /nonexistent/log"),
            "{tail}"
        );
    }
}
