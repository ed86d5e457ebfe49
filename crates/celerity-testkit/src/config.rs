//! The `nats-server` configuration file the testkit writes for each server.
//!
//! Holds the settings in [`ServerConfig`] and renders them in nats-server config syntax,
//! restricted to options that nats-server 2.9 already understands. Optional blocks (cluster,
//! monitoring, lame duck, domain) are written only when set, so a single server's file stays small.

use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::TlsFiles;

/// How clients must authenticate.
#[derive(Clone, Default)]
pub(crate) enum Auth {
    /// Anyone may connect.
    #[default]
    None,
    /// Clients send this user name and password.
    UserPassword { user: String, password: String },
    /// Clients send this token.
    Token(String),
}

// NOTE: Secrets stay out of `Debug`, so a printed builder or server never shows them.
impl fmt::Debug for Auth {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => formatter.write_str("None"),
            Auth::UserPassword { user, .. } => formatter
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Auth::Token(_) => formatter.write_str("Token(<redacted>)"),
        }
    }
}

/// Everything that goes into one server's config file.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    /// The client port; 0 until the server has chosen one (see [`ServerConfig::ports_file_dir`]).
    pub(crate) port: u16,
    /// Unique per server, so a readiness probe never mistakes another process on the port for ours.
    pub(crate) server_name: String,
    pub(crate) store_dir: PathBuf,
    pub(crate) log_path: PathBuf,
    pub(crate) jetstream: bool,
    pub(crate) max_payload: Option<u32>,
    pub(crate) auth: Auth,
    pub(crate) tls: Option<TlsFiles>,
    /// Where the server writes the ports it listens on (`<binary>_<pid>.ports`, JSON): how the
    /// testkit learns the port of a server started on port 0, which the server picked itself.
    pub(crate) ports_file_dir: PathBuf,
    /// The HTTP monitoring port on 127.0.0.1 (`/varz`, `/jsz`), when monitoring is on.
    pub(crate) http_port: Option<u16>,
    /// The route settings of a cluster node; `None` for a standalone server.
    pub(crate) cluster: Option<ClusterSettings>,
    /// How lame duck mode drains clients; `None` keeps the server's defaults (2 min, 10 s grace).
    pub(crate) lame_duck: Option<LameDuck>,
    /// The JetStream domain, written inside the `jetstream` block.
    pub(crate) domain: Option<String>,
    /// Raw config text appended after everything else, verbatim.
    pub(crate) extra_config: Option<String>,
}

/// The lame duck settings of every testkit server: nats-server refuses a duration under 30 s in a
/// config file (2.9.10 and 2.15.1 alike); the grace period is short so a drain starts at once.
pub(crate) const TESTKIT_LAME_DUCK: LameDuck = LameDuck {
    duration: Duration::from_secs(30),
    grace_period: Duration::from_secs(1),
};

/// The `cluster { ... }` block of one cluster node.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    /// The same for every node of a cluster; routes between clusters of other names are refused.
    pub(crate) name: String,
    /// The port on 127.0.0.1 this node accepts routes on.
    pub(crate) port: u16,
    /// The route ports of the other nodes, dialled as `nats-route://127.0.0.1:<port>`.
    pub(crate) route_ports: Vec<u16>,
}

/// The lame duck settings; nats-server refuses a duration under 30 s in a config file, and a
/// grace period that is not below the duration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LameDuck {
    /// How long the server may take to close all clients before it shuts down.
    pub(crate) duration: Duration,
    /// How long it waits after entering lame duck mode before it closes the first client.
    pub(crate) grace_period: Duration,
}

impl ServerConfig {
    /// Renders the config file's text.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a `String` cannot fail, so the `fmt::Result`s below are ignored.
        let _ = writeln!(text, "# Written by celerity-testkit.");
        // Port -1 lets the server pick a free port itself, so no other process can take it between
        // a pick and the bind.
        match self.port {
            0 => {
                let _ = writeln!(text, "listen: \"127.0.0.1:-1\"");
            }
            port => {
                let _ = writeln!(text, "listen: \"127.0.0.1:{port}\"");
            }
        }
        let _ = writeln!(text, "ports_file_dir: {}", quote_path(&self.ports_file_dir));
        let _ = writeln!(text, "server_name: {}", quote(&self.server_name));
        let _ = writeln!(text, "log_file: {}", quote_path(&self.log_path));
        if self.jetstream {
            let _ = writeln!(
                text,
                "jetstream {{\n  store_dir: {}",
                quote_path(&self.store_dir)
            );
            if let Some(domain) = &self.domain {
                let _ = writeln!(text, "  domain: {}", quote(domain));
            }
            let _ = writeln!(text, "}}");
        }
        if let Some(max_payload) = self.max_payload {
            let _ = writeln!(text, "max_payload: {max_payload}");
        }
        if let Some(http_port) = self.http_port {
            let _ = writeln!(text, "http: \"127.0.0.1:{http_port}\"");
        }
        if let Some(lame_duck) = &self.lame_duck {
            let _ = writeln!(
                text,
                "lame_duck_duration: {}\nlame_duck_grace_period: {}",
                quote(&go_duration(lame_duck.duration)),
                quote(&go_duration(lame_duck.grace_period))
            );
        }
        if let Some(cluster) = &self.cluster {
            render_cluster(&mut text, cluster);
        }
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => {
                let _ = writeln!(
                    text,
                    "authorization {{\n  user: {}\n  password: {}\n}}",
                    quote(user),
                    quote(password)
                );
            }
            Auth::Token(token) => {
                let _ = writeln!(text, "authorization {{\n  token: {}\n}}", quote(token));
            }
        }
        if let Some(tls) = &self.tls {
            let _ = writeln!(
                text,
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n  timeout: 5\n}}",
                quote_path(&tls.server_cert),
                quote_path(&tls.server_key),
                quote_path(&tls.ca_cert)
            );
        }
        if let Some(extra_config) = &self.extra_config {
            let _ = writeln!(text, "# Extra config, appended verbatim.\n{extra_config}");
        }
        text
    }
}

/// Writes the `cluster` block: a name, a loopback listen port and explicit routes to the others.
fn render_cluster(text: &mut String, cluster: &ClusterSettings) {
    let routes: Vec<String> = cluster
        .route_ports
        .iter()
        .map(|port| quote(&format!("nats-route://127.0.0.1:{port}")))
        .collect();
    let _ = writeln!(
        text,
        "cluster {{\n  name: {}\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}",
        quote(&cluster.name),
        cluster.port,
        routes.join(", ")
    );
}

/// A duration in Go's `time.ParseDuration` syntax, which nats-server uses: `30s` or `1500ms`.
fn go_duration(duration: Duration) -> String {
    match duration.subsec_millis() {
        0 => format!("{}s", duration.as_secs()),
        _ => format!("{}ms", duration.as_millis()),
    }
}

/// A server name no other testkit server (in this or another process) uses.
pub(crate) fn unique_server_name() -> String {
    static N_SERVERS: AtomicU64 = AtomicU64::new(0);
    let serial = N_SERVERS.fetch_add(1, Ordering::Relaxed);
    format!("testkit-{}-{serial}", std::process::id())
}

/// Quotes a string for the config file; JSON string syntax is valid nats-server config syntax.
fn quote(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig {
            port: 4333,
            server_name: "testkit-4333".to_owned(),
            store_dir: PathBuf::from("/tmp/store"),
            log_path: PathBuf::from("/tmp/nats-server.log"),
            jetstream: true,
            max_payload: None,
            auth: Auth::None,
            tls: None,
            ports_file_dir: PathBuf::from("/tmp/ports"),
            http_port: None,
            cluster: None,
            lame_duck: None,
            domain: None,
            extra_config: None,
        }
    }

    #[test]
    fn render_has_listen_name_log_and_jetstream() {
        let text = config().render();
        assert!(text.contains("listen: \"127.0.0.1:4333\"\n"), "{text}");
        assert!(text.contains("server_name: \"testkit-4333\"\n"), "{text}");
        assert!(
            text.contains("log_file: \"/tmp/nats-server.log\"\n"),
            "{text}"
        );
        assert!(
            text.contains("jetstream {\n  store_dir: \"/tmp/store\"\n}"),
            "{text}"
        );
        assert!(!text.contains("authorization"), "{text}");
        assert!(text.contains("ports_file_dir: \"/tmp/ports\"\n"), "{text}");
        for unset in ["http", "cluster", "routes", "lame_duck", "domain", "Extra"] {
            assert!(
                !text.contains(unset),
                "{unset} is rendered though unset: {text}"
            );
        }
    }

    #[test]
    fn render_writes_the_cluster_block_with_a_route_per_other_node() {
        let text = ServerConfig {
            cluster: Some(ClusterSettings {
                name: "testkit-7-cluster".to_owned(),
                port: 6222,
                route_ports: vec![6223, 6224],
            }),
            ..config()
        }
        .render();
        assert!(
            text.contains(
                "cluster {\n  name: \"testkit-7-cluster\"\n  listen: \"127.0.0.1:6222\"\n  \
                 routes: [\"nats-route://127.0.0.1:6223\", \"nats-route://127.0.0.1:6224\"]\n}\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn render_writes_monitoring_lame_duck_and_domain_when_set() {
        let text = ServerConfig {
            http_port: Some(8222),
            lame_duck: Some(LameDuck {
                duration: Duration::from_secs(30),
                grace_period: Duration::from_millis(1500),
            }),
            domain: Some("hub".to_owned()),
            ..config()
        }
        .render();
        assert!(text.contains("http: \"127.0.0.1:8222\"\n"), "{text}");
        assert!(text.contains("lame_duck_duration: \"30s\"\n"), "{text}");
        assert!(
            text.contains("lame_duck_grace_period: \"1500ms\"\n"),
            "{text}"
        );
        assert!(
            text.contains("jetstream {\n  store_dir: \"/tmp/store\"\n  domain: \"hub\"\n}\n"),
            "{text}"
        );
    }

    #[test]
    fn render_appends_extra_config_verbatim_at_the_end() {
        let extra = "accounts {\n  A: { jetstream: enabled, users: [{user: a, password: a}] }\n}";
        let text = ServerConfig {
            extra_config: Some(extra.to_owned()),
            ..config()
        }
        .render();
        assert!(text.ends_with(&format!("{extra}\n")), "{text}");
    }

    #[test]
    fn go_durations_use_seconds_when_whole() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn render_lets_the_server_pick_port_0() {
        let text = ServerConfig {
            port: 0,
            ..config()
        }
        .render();
        assert!(text.contains("listen: \"127.0.0.1:-1\"\n"), "{text}");
    }

    #[test]
    fn render_leaves_out_jetstream_when_disabled() {
        let text = ServerConfig {
            jetstream: false,
            ..config()
        }
        .render();
        assert!(!text.contains("jetstream"), "{text}");
    }

    #[test]
    fn render_quotes_secrets() {
        let text = ServerConfig {
            auth: Auth::UserPassword {
                user: "alice".to_owned(),
                password: "pa\"ss$word".to_owned(),
            },
            max_payload: Some(2048),
            ..config()
        }
        .render();
        assert!(text.contains("user: \"alice\""), "{text}");
        assert!(text.contains("password: \"pa\\\"ss$word\""), "{text}");
        assert!(text.contains("max_payload: 2048"), "{text}");
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let auth = Auth::Token("s3cret".to_owned());
        assert!(!format!("{auth:?}").contains("s3cret"));
        let auth = Auth::UserPassword {
            user: "alice".to_owned(),
            password: "s3cret".to_owned(),
        };
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn server_names_are_unique() {
        assert_ne!(unique_server_name(), unique_server_name());
    }
}
