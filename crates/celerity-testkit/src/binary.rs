//! Finding the `nats-server` executable and asking it for its version.
//!
//! This module only locates and inspects the binary; starting it is `server.rs`'s job.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::TestkitError;

/// The environment variable that names the binary explicitly.
const BINARY_ENV_VAR: &str = "NATS_SERVER";

/// The executable's file name.
const BINARY_NAME: &str = "nats-server";

/// Directories searched after `$PATH`: Debian installs to `/usr/sbin`, which a user's `$PATH` may lack.
const FALLBACK_DIRS: [&str; 3] = ["/usr/sbin", "/usr/bin", "/usr/local/bin"];

/// Finds the `nats-server` executable.
///
/// Uses `$NATS_SERVER` when it is set and not empty (the file must then exist);
/// otherwise searches `$PATH`, then `/usr/sbin`, `/usr/bin` and `/usr/local/bin`.
///
/// # Errors
///
/// [`TestkitError::BinaryNotFound`] with every path looked at; its message says how to install the server.
pub fn nats_server_binary() -> Result<PathBuf, TestkitError> {
    locate(std::env::var_os(BINARY_ENV_VAR), std::env::var_os("PATH"))
}

/// Returns the version `binary --version` reports, without the leading `v`, e.g. `"2.9.10"`.
///
/// # Errors
///
/// [`TestkitError::Spawn`] when the binary cannot be run,
/// [`TestkitError::Version`] when its output holds no version number.
pub fn server_version(binary: &Path) -> Result<String, TestkitError> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestkitError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_version(&printed).ok_or_else(|| TestkitError::Version {
        binary: binary.to_path_buf(),
        output: printed.trim().to_owned(),
    })
}

/// Checks that `path` is an executable file and returns it unchanged.
pub(crate) fn check_binary(path: PathBuf) -> Result<PathBuf, TestkitError> {
    if is_executable_file(&path) {
        Ok(path)
    } else {
        Err(TestkitError::BinaryNotFound {
            searched: vec![path],
        })
    }
}

/// The search behind [`nats_server_binary`], with the environment passed in so tests need not mutate it.
fn locate(explicit: Option<OsString>, path_var: Option<OsString>) -> Result<PathBuf, TestkitError> {
    if let Some(explicit) = explicit.filter(|value| !value.is_empty()) {
        return check_binary(PathBuf::from(explicit));
    }
    let dirs = path_var
        .iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| !dir.as_os_str().is_empty())
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from));
    let mut searched = Vec::new();
    for dir in dirs {
        let candidate = dir.join(BINARY_NAME);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
        if !searched.contains(&candidate) {
            searched.push(candidate);
        }
    }
    Err(TestkitError::BinaryNotFound { searched })
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Picks the first word that is a semantic version, with or without a leading `v` (`v2.9.10`,
/// `2.11.0-RC.1`), out of `--version` output, without the `v`.
fn parse_version(printed: &str) -> Option<String> {
    printed.split_whitespace().find_map(|word| {
        let version = word.strip_prefix('v').unwrap_or(word);
        semver::Version::parse(version)
            .is_ok()
            .then(|| version.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_version_reads_debian_and_release_output() {
        assert_eq!(
            parse_version("nats-server: v2.9.10\n").as_deref(),
            Some("2.9.10")
        );
        assert_eq!(
            parse_version("nats-server: v2.15.1").as_deref(),
            Some("2.15.1")
        );
        assert_eq!(
            parse_version("nats-server: v2.11.0-beta.2").as_deref(),
            Some("2.11.0-beta.2")
        );
        assert_eq!(parse_version("nats-server: unknown"), None);
        assert_eq!(parse_version("nats-server: 2.x"), None);
    }

    #[test]
    fn locate_reports_an_explicit_path_that_does_not_exist() {
        let missing = OsString::from("/nonexistent/nats-server");
        let error = locate(Some(missing), None).unwrap_err();
        assert!(
            matches!(&error, TestkitError::BinaryNotFound { searched } if searched == &[PathBuf::from("/nonexistent/nats-server")]),
            "{error:?}"
        );
        assert!(error.to_string().contains("apt-get install -y nats-server"));
        assert!(error.to_string().contains("NATS_SERVER="));
    }

    #[test]
    fn locate_searches_path_before_the_fallback_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join(BINARY_NAME);
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = locate(None, Some(dir.path().as_os_str().to_owned())).unwrap();
        assert_eq!(found, fake);
    }

    #[test]
    fn locate_skips_files_that_are_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join(BINARY_NAME);
        std::fs::write(&fake, "not a program").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_binary(fake).is_err());
    }
}
