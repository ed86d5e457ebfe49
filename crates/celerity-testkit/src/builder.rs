//! [`NatsServerBuilder`]: the options of a server before it starts.
//!
//! It only collects settings and runs the first start;
//! the running process is [`NatsServer`]'s business.

use std::path::PathBuf;
use std::time::Duration;

use crate::binary::{check_binary, nats_server_binary};
use crate::config::{Auth, ServerConfig, TESTKIT_LAME_DUCK, unique_server_name};
use crate::{NatsServer, TestkitError, tls};

/// The default for [`NatsServerBuilder::ready_timeout`].
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Options for a `nats-server` to start; get one from [`NatsServer::builder`].
///
/// Defaults: a free loopback port (picked by the server itself), a fresh temporary store directory, JetStream on,
/// no authentication, no TLS, the server's default `max_payload`, and a 20 s ready timeout.
///
/// ```no_run
/// # fn main() -> Result<(), celerity_testkit::TestkitError> {
/// use celerity_testkit::NatsServer;
///
/// let server = NatsServer::builder()
///     .user_password("celerity", "secret")
///     .max_payload(4 * 1024 * 1024)
///     .start()?;
/// assert!(server.url().starts_with("nats://127.0.0.1:"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsServerBuilder {
    binary: Option<PathBuf>,
    port: Option<u16>,
    store_dir: Option<PathBuf>,
    auth: Auth,
    tls: bool,
    max_payload: Option<u32>,
    jetstream: bool,
    ready_timeout: Duration,
    extra_config: Option<String>,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        NatsServerBuilder {
            binary: None,
            port: None,
            store_dir: None,
            auth: Auth::None,
            tls: false,
            max_payload: None,
            jetstream: true,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            extra_config: None,
        }
    }
}

impl NatsServerBuilder {
    /// Runs this `nats-server` executable instead of the one [`nats_server_binary`] finds.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Listens on this port of 127.0.0.1 instead of a free one that the server picks.
    ///
    /// A fixed port is not retried when it is taken: the start fails with [`TestkitError::PortInUse`].
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Keeps JetStream data in `dir` (created if missing) instead of a temporary directory.
    ///
    /// A directory given here is left in place when the server is dropped.
    pub fn store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store_dir = Some(dir.into());
        self
    }

    /// Requires clients to log in with this user name and password; replaces an earlier [`token`](Self::token).
    pub fn user_password(mut self, user: &str, password: &str) -> Self {
        self.auth = Auth::UserPassword {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        self
    }

    /// Requires clients to send this token; replaces an earlier [`user_password`](Self::user_password).
    pub fn token(mut self, token: &str) -> Self {
        self.auth = Auth::Token(token.to_owned());
        self
    }

    /// Requires TLS with client certificates, using a CA and certificates generated for this server.
    ///
    /// The PEM files are in [`NatsServer::tls_files`]. The URL stays `nats://`: the server sends
    /// its `INFO` in plaintext with `tls_required: true`, and the client upgrades the connection.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Sets the largest message payload the server accepts, in bytes (the server's default is 1 MiB).
    ///
    /// nats-server refuses to start when this exceeds its `max_pending` of 64 MiB.
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Turns JetStream on (the default) or off.
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// Sets how long each start may take until the server answers (default 20 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Appends `text` to the server's config file, e.g. an `accounts { ... }` block.
    ///
    /// The text is appended verbatim after everything the testkit writes, without any check, so
    /// it must be valid nats-server config syntax for the binary in use; a later setting of the
    /// same name overrides the testkit's. Calling this again appends more text.
    pub fn extra_config(mut self, text: &str) -> Self {
        match &mut self.extra_config {
            Some(extra_config) => {
                extra_config.push('\n');
                extra_config.push_str(text);
            }
            None => self.extra_config = Some(text.to_owned()),
        }
        self
    }

    /// Starts the server and waits until it accepts clients.
    ///
    /// Without [`port`](Self::port) the server binds a free port itself (`listen: 127.0.0.1:-1`)
    /// and the testkit reads it from the server's ports file, so no other process can take the
    /// port between a pick and the bind; restarts keep that port.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryNotFound`] without a usable binary, [`TestkitError::Cert`] when TLS
    /// files cannot be generated, and the errors of [`NatsServer::start_again`].
    pub fn start(self) -> Result<NatsServer, TestkitError> {
        let binary = match self.binary {
            Some(path) => check_binary(path)?,
            None => nats_server_binary()?,
        };
        let temp_dir = tempfile::Builder::new()
            .prefix("celerity-nats-")
            .tempdir()
            .map_err(TestkitError::io(
                "create a temporary directory for nats-server",
            ))?;
        let store_dir = match &self.store_dir {
            Some(dir) => {
                let dir = std::path::absolute(dir).map_err(TestkitError::io(format!(
                    "resolve store directory {}",
                    dir.display()
                )))?;
                std::fs::create_dir_all(&dir).map_err(TestkitError::io(format!(
                    "create store directory {}",
                    dir.display()
                )))?;
                dir
            }
            None => temp_dir.path().join("store"),
        };
        let tls = match self.tls {
            true => Some(tls::generate(temp_dir.path())?),
            false => None,
        };
        let config = ServerConfig {
            port: self.port.unwrap_or(0),
            server_name: unique_server_name(),
            store_dir,
            log_path: temp_dir.path().join("nats-server.log"),
            jetstream: self.jetstream,
            max_payload: self.max_payload,
            auth: self.auth,
            tls,
            ports_file_dir: temp_dir.path().join("ports"),
            http_port: None,
            cluster: None,
            lame_duck: Some(TESTKIT_LAME_DUCK),
            domain: None,
            extra_config: self.extra_config,
        };
        let mut server = NatsServer::new(binary, config, temp_dir, self.ready_timeout);
        server.start_again()?;
        Ok(server)
    }
}

// The entry points to a builder live with it, so the running server's file names no builder.
impl NatsServer {
    /// Starts a server with the default options; the same as `NatsServer::builder().start()`.
    ///
    /// # Errors
    ///
    /// See [`NatsServerBuilder::start`].
    pub fn start() -> Result<NatsServer, TestkitError> {
        NatsServer::builder().start()
    }

    /// Returns a builder to choose the port, store directory, authentication, TLS and more.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }
}
