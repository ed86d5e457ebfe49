//! `celerity dashboard`: the web dashboard (crate `celerity-dashboard`), like `celery flower`.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use celerity_dashboard::{Credentials, Dashboard, DashboardConfig};
use clap::Args;

/// `celerity dashboard` flags.
#[derive(Args)]
pub(crate) struct DashboardArgs {
    /// Port to serve on (Flower's 5555; 0 picks a free one).
    #[arg(short = 'p', long = "port", default_value_t = 5555)]
    port: u16,
    /// Address to listen on; anything but loopback needs --basic-auth or --token (or --no-auth).
    #[arg(long = "bind", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// A `user:password` allowed to log in (repeat, or comma-separate in the environment).
    #[arg(
        long = "basic-auth",
        env = "CELERITY_DASHBOARD_BASIC_AUTH",
        value_delimiter = ',',
        hide_env_values = true
    )]
    basic_auth: Vec<String>,
    /// A bearer token allowed in (`Authorization: Bearer <token>`, or the login page).
    #[arg(
        id = "bearer_token",
        long = "token",
        env = "CELERITY_DASHBOARD_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    token: Vec<String>,
    /// Serve without a login on a non-loopback address (behind your own proxy's auth).
    #[arg(long = "no-auth")]
    no_auth: bool,
    /// Show everything, control nothing: every control is refused.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Jaeger's UI, for links to task traces (`http://localhost:16686`).
    #[arg(long = "jaeger-url", env = "CELERITY_JAEGER_URL")]
    jaeger_url: Option<String>,
    /// How much of the events stream to read back at start (`1h`, `30m`).
    #[arg(long = "history", default_value = "1h", value_parser = humantime::parse_duration)]
    history: Duration,
    /// Tasks kept in memory at most (the least recently updated are forgotten first).
    #[arg(long = "max-tasks", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_tasks: u64,
    #[command(flatten)]
    connection: crate::ConnectionArgs,
}

// Never print the credentials.
impl std::fmt::Debug for DashboardArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardArgs")
            .field("port", &self.port)
            .field("bind", &self.bind)
            .field("basic_auth", &self.basic_auth.len())
            .field("token", &self.token.len())
            .finish_non_exhaustive()
    }
}

impl DashboardArgs {
    /// The dashboard's configuration.
    pub(crate) fn config(&self) -> anyhow::Result<DashboardConfig> {
        let mut credentials = Credentials::default();
        for pair in &self.basic_auth {
            credentials
                .add_user(pair)
                .context("--basic-auth takes user:password")?;
        }
        for token in &self.token {
            credentials.add_token(token).context("--token")?;
        }
        if let Some(url) = &self.jaeger_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            anyhow::bail!("--jaeger-url takes an http:// or https:// URL, not {url:?}");
        }
        let mut config = DashboardConfig::new(self.connection.nats.config());
        config.port = self.port;
        config.bind = self.bind;
        config.namespace = self.connection.namespace.clone();
        config.credentials = credentials;
        config.allow_open = self.no_auth;
        config.read_only = self.read_only;
        config.jaeger_url = self.jaeger_url.clone();
        config.history = self.history;
        config.max_tasks = usize::try_from(self.max_tasks).unwrap_or(usize::MAX);
        Ok(config)
    }
}

/// Runs the dashboard until Ctrl-C (SIGINT) or SIGTERM (what `docker stop` and systemd send).
pub(crate) async fn run(args: DashboardArgs) -> anyhow::Result<bool> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let dashboard = Dashboard::start(args.config()?)
        .await
        .context("cannot start the dashboard")?;
    eprintln!("Celerity dashboard at {}", dashboard.url());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    dashboard.stop().await;
    Ok(true)
}
