//! Waiting until a freshly spawned `nats-server` accepts clients, and reading its log when it does not.
//!
//! Ready means: the process still runs, its port is known (read from its ports file when the server
//! picked it), a TCP connect to the port succeeds, and the first line is an
//! `INFO` whose JSON names our server (and says `"jetstream": true` when JetStream is on).
//! TLS servers send that `INFO` in plaintext before the handshake, so no TLS is needed to probe them.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
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
/// A config on port 0 gets the port the server picked, read from `ports_file`.
pub(crate) fn wait_until_ready(
    child: &mut Child,
    config: &mut ServerConfig,
    ports_file: &Path,
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
        if config.port == 0
            && let Some(port) = read_ports_file(ports_file)
        {
            config.port = port;
        }
        let last_probe = match config.port {
            0 => format!("no port in {} yet", ports_file.display()),
            _ => match probe(config) {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            },
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

/// The path of the ports file a `nats-server` started as `binary` writes as process `pid` into
/// `dir` (`<binary's file name>_<pid>.ports`).
pub(crate) fn ports_file(dir: &Path, binary: &Path, pid: u32) -> PathBuf {
    let name = binary
        .file_name()
        .map_or_else(|| "nats-server".into(), |name| name.to_string_lossy());
    dir.join(format!("{name}_{pid}.ports"))
}

/// The client port in a ports file (`{"nats":["nats://127.0.0.1:4222"], ...}`), once it is
/// written whole.
fn read_ports_file(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':')
        .next()?
        .parse()
        .ok()
        .filter(|port| *port != 0)
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
    fn the_client_port_is_read_from_the_ports_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = ports_file(dir.path(), Path::new("/usr/sbin/nats-server"), 42);
        assert_eq!(path, dir.path().join("nats-server_42.ports"));
        assert_eq!(read_ports_file(&path), None, "not written yet");
        std::fs::write(
            &path,
            r#"{"nats":["nats://127.0.0.1:33389"],"monitoring":[]}"#,
        )
        .unwrap();
        assert_eq!(read_ports_file(&path), Some(33389));
        std::fs::write(&path, r#"{"nats":["#).unwrap();
        assert_eq!(read_ports_file(&path), None, "written in part");
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
