//! How to reach NATS: URL, authentication and TLS, and the connect loop with backoff.
//!
//! [`NatsConfig`] is plain data (from flags, environment or code); [`NatsConfig::connect`] turns it
//! into an `async_nats::Client`.
//!
//! Secrets never leave this module in text: credentials in a URL are taken out of it when the
//! config is made ([`without_user_info`] is the one function that strips them), so the URL that is
//! logged, carried in errors and handed to async-nats (whose own debug logs print it) holds none.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::nats::permissions::{self, Violations};

/// How to reach and authenticate to the NATS server.
///
/// Every method the server may use is supported: user and password (also as `nats://user:pass@host`
/// in the URL), token (also as `nats://token@host`), NKey seed file, credentials file (JWT), and TLS
/// with a CA and client certificates.
///
/// Credentials in the URL are moved out of it (percent-decoded; from the first server of a list
/// that has them), so [`NatsConfig::url`], logs and errors never show them; a later
/// [`NatsConfig::user_password`] or [`NatsConfig::token`] replaces them. `Debug` prints no password
/// or token.
///
/// A password or token sent without TLS to a server that is not on this machine can be read on
/// the network: connecting logs a warning then, once per connection. Servers on loopback
/// (`127.0.0.0/8`, `::1`, `localhost`) are exempt, because the secret never leaves the machine, and
/// whoever can read loopback traffic can read the process's environment and memory as well.
///
/// ```
/// use celerity::NatsConfig;
/// let config = NatsConfig::new("nats://127.0.0.1:4222").user_password("app", "s3cret");
/// assert_eq!(config.url(), "nats://127.0.0.1:4222");
/// let from_url = NatsConfig::new("nats://app:s3cret@127.0.0.1:4222");
/// assert_eq!(from_url.url(), "nats://127.0.0.1:4222");
/// assert!(!format!("{from_url:?}").contains("s3cret"));
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
    inbox_prefix: Option<String>,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("NatsConfig")
            .field("url", &self.url)
            .field("user", &self.user_password.as_ref().map(|(user, _)| user))
            .field("password", &self.user_password.as_ref().map(|_| REDACTED))
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("require_tls", &self.require_tls)
            .field("name", &self.name)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

/// What `Debug` prints instead of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

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
    /// The server refuses this user's subscriptions to the connection's reply inboxes, where the
    /// answer to every request comes: every request would wait out its timeout.
    #[error(
        "the NATS server refuses this user's subscription to its reply inbox {inbox}: allow it to subscribe to \"<prefix>.>\" for the inbox prefix it connects with, or set the prefix to one it may subscribe to (NatsConfig::inbox_prefix, {INBOX_PREFIX_ENV}; docs/security.md)"
    )]
    InboxDenied {
        /// The inbox subject refused.
        inbox: String,
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

impl ConnectError {
    /// True for errors that trying again cannot fix: an auth file that cannot be read, a URL
    /// that does not parse.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::AuthFile { .. } | ConnectError::InboxDenied { .. } => true,
            ConnectError::Connect { source, .. } => {
                source.kind() == async_nats::ConnectErrorKind::ServerParse
            }
        }
    }
}

impl NatsConfig {
    /// A config for `url` (`nats://host:port`, `tls://host:port`, or a comma-separated list).
    ///
    /// User-info in the URL (`nats://user:password@host`, `nats://token@host`) becomes the
    /// config's user and password or token, and is removed from the URL.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let user_info = url.split(',').find_map(|server| split_user_info(server).1);
        let mut config = Self {
            url: without_user_info(&url),
            ..Self::default()
        };
        match user_info.map(|user_info| user_info.split_once(':')) {
            Some(Some((user, password))) => {
                config.user_password = Some((percent_decode(user), percent_decode(password)));
            }
            Some(None) => {
                config.token = user_info.map(percent_decode);
            }
            None => {}
        }
        config
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

    /// Starts the subjects of this connection's reply inboxes (answers to requests, deliveries of
    /// ordered consumers) with `prefix` instead of `_INBOX`, so a NATS user may be allowed to
    /// subscribe to its own inboxes only (`<prefix>.>`) and not read the answers other users get.
    /// Without it, the environment variable `CELERITY_NATS_INBOX_PREFIX` sets it.
    ///
    /// ```
    /// let config = celerity::NatsConfig::new("nats://127.0.0.1:4222").inbox_prefix("_INBOX.producer");
    /// # let _ = config;
    /// ```
    pub fn inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
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
        let prefix_from_env = || std::env::var(INBOX_PREFIX_ENV).ok();
        if let Some(prefix) = self.inbox_prefix.clone().or_else(prefix_from_env)
            && !prefix.trim().is_empty()
        {
            options = options.custom_inbox_prefix(prefix.trim());
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
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it completes leaves no connection behind.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        self.connect_with(|options| options).await
    }

    /// The secret (`password` or `token`) this config sends in clear text to a server off this
    /// machine: without TLS (neither asked for here nor `server_tls_required` by the server), to a
    /// list with a server that is neither on loopback nor named with a TLS scheme.
    fn secret_in_clear(&self, server_tls_required: bool) -> Option<&'static str> {
        let secret = match (&self.user_password, &self.token) {
            (Some(_), _) => "password",
            (None, Some(_)) => "token",
            (None, None) => return None,
        };
        let encrypted = self.require_tls || server_tls_required;
        (!encrypted && !every_server_private(&self.url)).then_some(secret)
    }

    /// Connects once with the options `customize` makes of this config's, recording the
    /// permission violations the server reports (`permissions.rs`) and checking that the user may
    /// subscribe to its reply inboxes.
    pub(crate) async fn connect_with(
        &self,
        customize: impl FnOnce(ClientOptions) -> ClientOptions,
    ) -> Result<async_nats::Client, ConnectError> {
        let violations = Violations::new();
        let options = customize(ClientOptions::new(self.options().await?)).recording(&violations);
        // A list is one address each: async-nats reads a `str` as a single server.
        let servers: Vec<&str> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|server| !server.is_empty())
            .collect();
        let client = options
            .connect(servers.as_slice())
            .await
            .map_err(|source| ConnectError::Connect {
                url: self.url.clone(),
                source,
            })?;
        if let Some(secret) = self.secret_in_clear(client.server_info().tls_required) {
            tracing::warn!(
                url = %self.url,
                "the NATS {secret} went to the server without TLS, readable by anyone on the network path: use a tls:// URL or --nats-tls-ca, or authenticate with an NKey or a credentials file"
            );
        }
        violations.register(&client);
        permissions::check_inbox(&client, &violations)
            .await
            .map_err(|inbox| ConnectError::InboxDenied { inbox })?;
        Ok(client)
    }
}

/// The environment variable that sets the inbox prefix of connections whose config sets none
/// ([`NatsConfig::inbox_prefix`]).
pub(crate) const INBOX_PREFIX_ENV: &str = "CELERITY_NATS_INBOX_PREFIX";

/// A caller's event callback, run after the permission record's (see [`ClientOptions`]).
type EventCallback =
    Arc<dyn Fn(async_nats::Event) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> + Send + Sync>;

/// The options of one connection as [`NatsConfig::connect_with`] hands them to its caller to
/// change: the async-nats options, and an event callback of the caller's. async-nats keeps one
/// event callback per connection, and the permission record (`permissions.rs`) needs it, so the
/// caller's runs inside it instead of replacing it.
pub(crate) struct ClientOptions {
    nats: async_nats::ConnectOptions,
    on_event: Option<EventCallback>,
}

impl ClientOptions {
    fn new(nats: async_nats::ConnectOptions) -> Self {
        Self {
            nats,
            on_event: None,
        }
    }

    /// Runs `callback` on every connection event (after the permission record has seen it), as
    /// `async_nats::ConnectOptions::event_callback`.
    pub(crate) fn event_callback<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(async_nats::Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + Sync + 'static,
    {
        self.on_event = Some(Arc::new(move |event| Box::pin(callback(event))));
        self
    }

    /// The connection name the server shows, as `async_nats::ConnectOptions::name`.
    pub(crate) fn name(mut self, name: impl ToString) -> Self {
        self.nats = self.nats.name(name);
        self
    }

    /// The async-nats options, with an event callback that records permission violations in
    /// `violations`, then runs the caller's.
    fn recording(self, violations: &Arc<Violations>) -> async_nats::ConnectOptions {
        let (violations, on_event) = (violations.clone(), self.on_event);
        self.nats.event_callback(move |event| {
            violations.observe(&event);
            let forwarded = on_event.as_ref().map(|callback| callback(event));
            async move {
                if let Some(forwarded) = forwarded {
                    forwarded.await;
                }
            }
        })
    }
}

/// `url` (one server or a comma-separated list) with the user-info of every server removed:
/// `nats://user:secret@host:4222` becomes `nats://host:4222`. Anything that prints a URL given by
/// a user prints this.
///
/// It works on text, so a URL that does not parse is stripped too.
pub(crate) fn without_user_info(url: &str) -> String {
    url.split(',')
        .map(|server| split_user_info(server).0)
        .collect::<Vec<_>>()
        .join(",")
}

/// One server URL without its user-info, and the user-info (still percent-encoded), if any.
fn split_user_info(server: &str) -> (String, Option<&str>) {
    let authority_start = server.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let authority_end = server[authority_start..]
        .find(['/', '?', '#'])
        .map_or(server.len(), |end| authority_start + end);
    match server[authority_start..authority_end].rfind('@') {
        Some(at) => {
            let user_info = &server[authority_start..authority_start + at];
            let stripped = format!(
                "{}{}",
                &server[..authority_start],
                &server[authority_start + at + 1..]
            );
            (stripped, Some(user_info))
        }
        None => (server.to_owned(), None),
    }
}

/// Decodes `%XX` escapes (a password may hold `@` or `:` only escaped); other text is kept.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|_| bytes[index] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// True when no server of `url` is reached in clear text off this machine: each is either on
/// loopback (`127.0.0.0/8`, `::1`, `localhost`) or named with a TLS scheme (`tls://`, `wss://`).
fn every_server_private(url: &str) -> bool {
    url.split(',').all(|server| {
        let server = split_user_info(server.trim()).0;
        let (scheme, authority) = server.split_once("://").unwrap_or(("nats", &server));
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            // `[::1]:4222`
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None if authority.matches(':').count() > 1 => authority,
            None => authority.split(':').next().unwrap_or_default(),
        };
        ["tls", "wss"].contains(&scheme.to_ascii_lowercase().as_str())
            || host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    })
}

/// How long to wait between attempts to reach a server that is not up yet: 100 ms, doubling up
/// to 5 s, without end.
///
/// Every wait of the runtime for the server (connecting, provisioning) backs off this way; retry
/// with it through [`backon::Retryable`].
pub(crate) const SERVER_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(5))
    .without_max_times();

/// Connects, retrying with [`SERVER_BACKOFF`] until it succeeds, and logs every failed attempt so
/// an operator sees why a worker is not consuming yet.
///
/// Errors that trying again cannot fix ([`ConnectError::is_permanent`]: an auth file that cannot
/// be read, a URL that does not parse) are not retried.
///
/// # Cancel safety
/// Cancel safe: dropping the future stops the retries and leaves no connection behind.
pub(crate) async fn connect_with_retry(
    config: &NatsConfig,
    customize: impl Fn(ClientOptions) -> ClientOptions,
) -> Result<async_nats::Client, ConnectError> {
    let mut attempt = 1u32;
    let client = (|| config.connect_with(&customize))
        .retry(SERVER_BACKOFF)
        .when(|error| !error.is_permanent())
        .notify(|error, delay| {
            tracing::warn!(
                url = %config.url,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %crate::error_chain(error),
                "NATS is not reachable yet; retrying"
            );
            attempt += 1;
        })
        .await?;
    if attempt > 1 {
        tracing::info!(url = %config.url, attempt, "connected to NATS");
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn the_server_backoff_doubles_from_100_ms_to_5_s_and_never_ends() {
        let millis: Vec<u128> = SERVER_BACKOFF
            .build()
            .take(9)
            .map(|delay| delay.as_millis())
            .collect();
        assert_eq!(millis, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(
            SERVER_BACKOFF.build().nth(10_000),
            Some(Duration::from_secs(5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connecting_retries_an_unreachable_server_until_cancelled() {
        // Port 1 on loopback refuses at once; the paused clock runs the backoff's sleeps at once.
        let config = NatsConfig::new("nats://127.0.0.1:1");
        let started = tokio::time::Instant::now();
        let connecting = connect_with_retry(&config, |options| options);
        let outcome = tokio::time::timeout(Duration::from_secs(60), connecting).await;
        assert!(outcome.is_err(), "still retrying after a minute");
        assert!(started.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_auth_file_is_not_retried() {
        let config = NatsConfig::new("nats://127.0.0.1:1").nkey_seed_file("/nonexistent/seed");
        let outcome = connect_with_retry(&config, |options| options).await;
        assert!(
            matches!(outcome, Err(ConnectError::AuthFile { .. })),
            "{outcome:?}"
        );
    }

    #[test]
    fn user_info_is_stripped_from_every_server_of_a_list() {
        for (url, stripped) in [
            ("nats://app:s3cret@127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("tls://t0ken@nats.example.com", "tls://nats.example.com"),
            ("app:s3cret@host:4222", "host:4222"),
            (
                "nats://a:s3cret@h1:4222,nats://h2:4222,nats://b:s3cret@[::1]:4222/x",
                "nats://h1:4222,nats://h2:4222,nats://[::1]:4222/x",
            ),
            // Does not parse as a URL: stripped all the same.
            ("nats://us er:s3cr@t@host", "nats://host"),
            ("nats://host:4222", "nats://host:4222"),
        ] {
            assert_eq!(without_user_info(url), stripped, "{url}");
        }
    }

    #[test]
    fn credentials_in_the_url_become_the_configs_and_never_print() {
        let config = NatsConfig::new("nats://h1,nats://app:s%40cret%3A1@h2:4222");
        assert_eq!(config.url(), "nats://h1,nats://h2:4222");
        assert_eq!(
            config.user_password,
            Some(("app".to_owned(), "s@cret:1".to_owned()))
        );
        let token = NatsConfig::new("nats://t0ken@h1");
        assert_eq!(token.token.as_deref(), Some("t0ken"));
        for config in [
            config,
            token,
            NatsConfig::new("nats://h")
                .user_password("app", "s@cret:1")
                .token("t0ken"),
        ] {
            let printed = format!("{config:?}");
            assert!(
                !printed.contains("s@cret") && !printed.contains("t0ken"),
                "{printed}"
            );
            assert!(printed.contains(REDACTED), "{printed}");
        }
        let explicit = NatsConfig::new("nats://app:old@h").user_password("app", "new");
        assert_eq!(explicit.user_password.unwrap().1, "new");
    }

    #[test]
    fn a_password_or_token_without_tls_off_this_machine_is_sent_in_clear() {
        let remote = || NatsConfig::new("nats://nats.example.com:4222");
        let password = remote().user_password("app", "s3cret");
        assert_eq!(password.secret_in_clear(false), Some("password"));
        assert_eq!(
            password.secret_in_clear(true),
            None,
            "the server asks for TLS"
        );
        assert_eq!(
            password.clone().require_tls(true).secret_in_clear(false),
            None
        );
        assert_eq!(
            remote().token("t0ken").secret_in_clear(false),
            Some("token")
        );
        assert_eq!(
            NatsConfig::new("nats://t0ken@nats.example.com").secret_in_clear(false),
            Some("token")
        );
        assert_eq!(remote().secret_in_clear(false), None, "no secret");
        let local = NatsConfig::new("nats://app:s3cret@127.0.0.1:4222");
        assert_eq!(local.secret_in_clear(false), None, "loopback");
    }

    #[test]
    fn servers_in_clear_are_those_off_loopback_without_a_tls_scheme() {
        for url in [
            "nats://127.0.0.1:4222",
            "127.0.0.2:4222",
            "nats://localhost",
            "nats://[::1]:4222",
            "nats://a:b@127.0.0.1:1,nats://LOCALHOST:2",
            "tls://nats.example.com,nats://127.0.0.1",
            "wss://nats.example.com",
        ] {
            assert!(every_server_private(url), "{url}");
        }
        for url in [
            "nats://10.0.0.1:4222",
            "nats.example.com:4222",
            "nats://127.0.0.1:4222,nats://nats:4222",
            "nats://[2001:db8::1]:4222",
            "nats://127.0.0.1.example.com",
            "ws://nats.example.com",
        ] {
            assert!(!every_server_private(url), "{url}");
        }
    }
}
