//! Which nats-server version runs the config `celerity check-config` reads: the one given, the
//! one a running server's INFO names, or what the local binary prints.

use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;

use crate::health::security::{cve_2023_47090_affects, url_servers};

/// How long reading a server's INFO may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(3);

/// The nats-server version the checks assume, and where it came from.
#[derive(Debug, Clone)]
pub(super) struct ServerVersion {
    pub(super) version: Option<String>,
    pub(super) source: String,
}

/// Parses `--server-version`.
pub(super) fn parse(value: &str) -> Result<String, String> {
    match cve_2023_47090_affects(value) {
        Some(_) => Ok(value.trim().trim_start_matches('v').to_owned()),
        None => Err(format!("{value:?} is not a version such as 2.9.10")),
    }
}

/// The version the checks assume: `--server-version`, else the INFO of `--nats-url`, else the
/// local binary's.
pub(super) async fn find(
    server_version: Option<&str>,
    nats_url: Option<&str>,
) -> anyhow::Result<ServerVersion> {
    if let Some(version) = server_version {
        return Ok(ServerVersion {
            version: Some(version.to_owned()),
            source: "given with --server-version".to_owned(),
        });
    }
    if let Some(url) = nats_url {
        let (host, port) = url_servers(url)
            .into_iter()
            .next()
            .with_context(|| "--nats-url names no server".to_owned())?;
        let version = info_version(&host, port).await.with_context(|| {
            format!("cannot read the version of the server at {host}:{port}: check --nats-url, or give --server-version")
        })?;
        return Ok(ServerVersion {
            version: Some(version),
            source: format!("from the INFO of the server at {host}:{port}"),
        });
    }
    Ok(binary_version())
}

/// The version in the INFO line a server greets a client with.
async fn info_version(host: &str, port: u16) -> anyhow::Result<String> {
    let read = async {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        let mut line = String::new();
        tokio::io::BufReader::new(stream)
            .read_line(&mut line)
            .await?;
        anyhow::Ok(line)
    };
    let line = tokio::time::timeout(INFO_TIMEOUT, read)
        .await
        .with_context(|| format!("no INFO within {INFO_TIMEOUT:?}"))??;
    let info = line
        .strip_prefix("INFO ")
        .context("the server's first line is not an INFO")?;
    let info: serde_json::Value = serde_json::from_str(info).context("its INFO is not JSON")?;
    info["version"]
        .as_str()
        .map(str::to_owned)
        .context("its INFO has no version")
}

/// What `nats-server --version` prints, found as the testkit finds it.
fn binary_version() -> ServerVersion {
    let binary = match celerity_testkit::nats_server_binary() {
        Ok(binary) => binary,
        Err(_) => {
            return ServerVersion {
                version: None,
                source: "no nats-server binary found ($NATS_SERVER, $PATH, /usr/sbin, /usr/bin, /usr/local/bin)".to_owned(),
            };
        }
    };
    match celerity_testkit::server_version(&binary) {
        Ok(version) => ServerVersion {
            version: Some(version),
            source: format!("from `{} --version`", binary.display()),
        },
        Err(error) => ServerVersion {
            version: None,
            source: format!("`{} --version` gave none: {error}", binary.display()),
        },
    }
}
