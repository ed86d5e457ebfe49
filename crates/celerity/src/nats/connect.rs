//! How to reach NATS: URL, authentication and TLS, and the connect loop with backoff.
//!
//! [`NatsConfig`] is plain data (from flags, environment or code); [`NatsConfig::connect`] turns it
//! into an `async_nats::Client`.

use std::path::PathBuf;
use std::time::Duration;

/// How to reach and authenticate to the NATS server.
///
/// Every method the server may use is supported: user and password (also as `nats://user:pass@host`
/// in the URL), token, NKey seed file, credentials file (JWT), and TLS with a CA and client
/// certificates.
///
/// ```
/// use celerity::NatsConfig;
/// let config = NatsConfig::new("nats://127.0.0.1:4222").user_password("app", "s3cret");
/// assert_eq!(config.url(), "nats://127.0.0.1:4222");
/// ```
#[derive(Clone, Default)]
pub struct NatsConfig {
    url: String,
    user_password: Option<(String, String)>,
    token: Option<String>,
    nkey_seed_file: Option<PathBuf>,
    credentials_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
    require_tls: bool,
    name: Option<String>,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("NatsConfig")
            .field("url", &self.url)
            .field("user", &self.user_password.as_ref().map(|(user, _)| user))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

/// The NATS server could not be reached or refused us.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection failed (server down, refused, TLS or auth failure).
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The URL tried.
        url: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// An auth file could not be read.
    #[error("cannot read {what} file {path}")]
    AuthFile {
        /// Which file (`NKey seed`, `credentials`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl NatsConfig {
    /// A config for `url` (`nats://host:port`, `tls://host:port`, or a comma-separated list).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Authenticates with a user and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticates with the NKey seed stored in `path`.
    pub fn nkey_seed_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.nkey_seed_file = Some(path.into());
        self
    }

    /// Authenticates with a credentials file (user JWT and NKey seed).
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    /// Trusts the CA certificate(s) in `path` (PEM) and requires TLS.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self.require_tls = true;
        self
    }

    /// Presents a client certificate and key (PEM) and requires TLS.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client = Some((cert.into(), key.into()));
        self.require_tls = true;
        self
    }

    /// Requires TLS even without a custom CA (the system roots are trusted).
    pub fn require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// The connection name the server shows in its monitoring.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) async fn options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let mut options = match &self.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| ConnectError::AuthFile {
                    what: "credentials",
                    path: path.clone(),
                    source,
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed =
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| ConnectError::AuthFile {
                        what: "NKey seed",
                        path: path.clone(),
                        source,
                    })?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &self.tls_ca {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.require_tls {
            options = options.require_tls(true);
        }
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        // Reconnect forever: a worker must outlive any server restart.
        Ok(options
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10))))
    }

    /// Connects once.
    ///
    /// After the first connection the client reconnects by itself, forever.
    ///
    /// # Errors
    /// [`ConnectError`] when the server cannot be reached or refuses the credentials.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        self.connect_with(|options| options).await
    }

    pub(crate) async fn connect_with(
        &self,
        customize: impl FnOnce(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, ConnectError> {
        let options = customize(self.options().await?);
        options
            .connect(self.url.as_str())
            .await
            .map_err(|source| ConnectError::Connect {
                url: self.url.clone(),
                source,
            })
    }
}

/// Connects, retrying with exponential backoff (100 ms up to 5 s) until it succeeds, and logs every
/// failed attempt so an operator sees why a worker is not consuming yet.
///
/// Errors reading auth files are not retried: they will not fix themselves.
pub(crate) async fn connect_with_retry(
    config: &NatsConfig,
    customize: impl Fn(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
) -> Result<async_nats::Client, ConnectError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        match config.connect_with(&customize).await {
            Ok(client) => {
                if attempt > 1 {
                    tracing::info!(url = %config.url, attempt, "connected to NATS");
                }
                return Ok(client);
            }
            Err(error @ ConnectError::AuthFile { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!(
                    url = %config.url,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %crate::error_chain(&error),
                    "NATS is not reachable yet; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}
