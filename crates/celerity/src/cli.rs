//! Command-line entry points for a user's own worker binary: Celery-like flags parsed with clap.
//!
//! ```no_run
//! #[celerity::task]
//! async fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let app = celerity::App::builder().task(add).build().expect("valid app");
//!     // myapp worker -Q high,default -c 8 --prefetch-multiplier 1 --hostname w1
//!     celerity::cli::main(app)
//! }
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::nats::NatsConfig;
use crate::worker::WorkerConfig;

/// How to reach NATS, as flags and environment variables: the `--nats-*` flags of a worker, for a
/// producer's own clap app too.
///
/// A binary with its own clap tree flattens it (`#[command(flatten)] nats: NatsArgs`) to take the
/// same flags and `CELERITY_NATS_*` variables as its workers; one without flags reads the
/// variables alone with [`NatsArgs::from_env`]. `Debug` prints no password, token or user-info.
///
/// ```
/// use clap::Parser;
///
/// #[derive(Parser)]
/// struct Producer {
///     /// How many tasks to send.
///     #[arg(long, default_value_t = 1)]
///     count: u32,
///     #[command(flatten)]
///     nats: celerity::cli::NatsArgs,
/// }
///
/// let args = Producer::parse_from(["producer", "--nats-url", "nats://app:s3cret@nats:4222"]);
/// assert_eq!(args.nats.config().url(), "nats://nats:4222");
/// assert!(!format!("{:?}", args.nats).contains("s3cret"));
/// ```
#[derive(Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated; `nats://user:pass@host:port` works too.
    #[arg(
        global = true,
        long = "nats-url",
        env = "CELERITY_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub url: String,
    /// User name (with --nats-password).
    #[arg(
        global = true,
        long = "nats-user",
        env = "CELERITY_NATS_USER",
        requires = "password"
    )]
    pub user: Option<String>,
    /// Password (with --nats-user).
    #[arg(
        global = true,
        long = "nats-password",
        env = "CELERITY_NATS_PASSWORD",
        requires = "user",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(
        global = true,
        long = "nats-token",
        env = "CELERITY_NATS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// File holding an NKey seed.
    #[arg(global = true, long = "nats-nkey", env = "CELERITY_NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// Credentials file (JWT and seed).
    #[arg(global = true, long = "nats-creds", env = "CELERITY_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server; implies TLS.
    #[arg(global = true, long = "nats-tls-ca", env = "CELERITY_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --nats-tls-key; implies TLS.
    #[arg(
        global = true,
        long = "nats-tls-cert",
        env = "CELERITY_NATS_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM), with --nats-tls-cert.
    #[arg(
        global = true,
        long = "nats-tls-key",
        env = "CELERITY_NATS_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed: the URL without user-info, the password and token redacted.
        let redacted = self.password.as_ref().map(|_| crate::nats::REDACTED);
        f.debug_struct("NatsArgs")
            .field("url", &crate::nats::without_user_info(&self.url))
            .field("user", &self.user)
            .field("password", &redacted)
            .field("token", &self.token.as_ref().map(|_| crate::nats::REDACTED))
            .field("nkey", &self.nkey)
            .field("creds", &self.creds)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl NatsArgs {
    /// The connection settings of the `CELERITY_NATS_*` environment variables alone (the defaults
    /// where they are unset): what a producer without flags of its own uses to reach the NATS its
    /// workers reach.
    ///
    /// ```no_run
    /// # async fn demo(app: celerity::App) -> Result<(), Box<dyn std::error::Error>> {
    /// let nats = celerity::cli::NatsArgs::from_env()?.config();
    /// let client = app.client(&nats).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A `clap::Error` when the variables do not go together (a user without a password, a TLS
    /// certificate without its key); it prints as clap's usage error.
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(Parser)]
        struct FromEnv {
            #[command(flatten)]
            nats: NatsArgs,
        }
        FromEnv::try_parse_from(["celerity"]).map(|parsed| parsed.nats)
    }

    /// The connection config these flags describe.
    pub fn config(&self) -> NatsConfig {
        let mut config = NatsConfig::new(self.url.clone());
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            config = config.user_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            config = config.token(token.clone());
        }
        if let Some(path) = &self.nkey {
            config = config.nkey_seed_file(path.clone());
        }
        if let Some(path) = &self.creds {
            config = config.credentials_file(path.clone());
        }
        if let Some(path) = &self.tls_ca {
            config = config.tls_ca(path.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.tls_client_cert(cert.clone(), key.clone());
        }
        config
    }
}

/// `worker` flags, like Celery's.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Queues to consume, comma-separated (default: the app's default queue).
    #[arg(short = 'Q', long = "queues", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Tasks run at once (default: one per core).
    #[arg(short = 'c', long = "concurrency", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,
    /// Tasks held per slot; 1 holds no task that cannot start.
    #[arg(long = "prefetch-multiplier", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub prefetch_multiplier: u32,
    /// Worker name in logs, results and dead letters (default: `celerity@<host>.<pid>`).
    #[arg(short = 'n', long = "hostname")]
    pub hostname: Option<String>,
    /// Seconds before an unacknowledged task goes to another worker (at most 60, inside the
    /// queues' two-minute de-duplication window; running tasks send in-progress acks).
    #[arg(long = "ack-wait", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub ack_wait_secs: u64,
    /// Deliveries of a message, at most, before it is dead-lettered (`too_many_deliveries`) instead
    /// of run again; a task's own `max_deliveries` wins.
    #[arg(long = "max-deliveries", default_value_t = crate::worker::DEFAULT_MAX_DELIVERIES, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_deliveries: u32,
    /// Rate-limited tasks that may wait on this worker without holding fetch credit; beyond it
    /// (or beyond --max-rate-limited-bytes) a waiting task keeps its credit and the worker fetches
    /// less.
    #[arg(long = "max-rate-limited", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_rate_limited: u64,
    /// Bytes of messages those waiting tasks may hold in all.
    #[arg(long = "max-rate-limited-bytes", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1024..=1 << 40))]
    pub max_rate_limited_bytes: u64,
    /// Milliseconds between checks of every priority level for work that no bell or doorbell told
    /// of (redeliveries, which ring no doorbell; tasks sent while disconnected).
    #[arg(long = "recheck-interval", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    pub recheck_interval_ms: u64,
    /// `strict` (the highest level with work first) or `weighted` (levels share the worker by
    /// weight, so low levels never starve).
    #[arg(long = "priority-mode", default_value = "strict", value_parser = ["strict", "weighted"])]
    pub priority_mode: String,
    /// Weights of priorities 0 to 9 in weighted mode, 10 comma-separated numbers (default
    /// 1,2,...,10); implies `--priority-mode weighted`.
    #[arg(long = "priority-weights", value_parser = parse_weights)]
    pub priority_weights: Option<PriorityWeights>,
    /// Also run the periodic-task scheduler (one worker at a time sends the tasks).
    #[arg(short = 'B', long = "beat")]
    pub beat: bool,
    /// A TOML file of periodic entries, besides the app's; implies `--beat`.
    #[arg(long = "schedule", value_parser = parse_schedule_file)]
    pub schedule: Option<ScheduleFile>,
    /// Seconds a dead scheduler keeps the lead before another worker takes over.
    #[arg(long = "beat-lease", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub beat_lease_secs: u64,
    /// Send no task events (`task-received`, `task-started`, ...); worker events (online,
    /// heartbeats, offline) are still sent.
    #[arg(long = "without-events")]
    pub without_events: bool,
    /// Serve `/healthz`, `/readyz` and `/metrics` on this port (0: any free port, which the
    /// worker's events tell); off by default.
    #[arg(long = "http-port")]
    pub http_port: Option<u16>,
    /// The address the HTTP endpoint listens on (default 127.0.0.1; `0.0.0.0` for every
    /// interface, as in a container).
    #[arg(
        long = "http-bind",
        default_value = "127.0.0.1",
        requires = "http_port"
    )]
    pub http_bind: std::net::IpAddr,
    /// Log filter (`info`, `debug`, `celerity=debug`); RUST_LOG wins when set.
    #[arg(short = 'l', long = "loglevel", default_value = "info")]
    pub loglevel: String,
    /// Replicas and size limits of the streams and buckets.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// How the streams and buckets are stored, as flags and `CELERITY_*` variables: replicas,
/// placement tags and size limits. Each flag given overrides the app's
/// [`Storage`](crate::Storage) setting of the same name; sizes take units (`512MiB`, `2GB`,
/// `1048576`).
///
/// ```
/// use clap::Parser;
///
/// #[derive(Parser)]
/// struct Producer {
///     #[command(flatten)]
///     storage: celerity::cli::StorageArgs,
/// }
///
/// let args = Producer::parse_from(["producer", "--replicas", "3", "--queue-max-bytes", "2GiB"]);
/// let storage = args.storage.apply(celerity::Storage::default());
/// assert_eq!((storage.replicas, storage.queue_max_bytes), (3, 2 << 30));
/// ```
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// Copies of every stream and bucket (1 to 5; 3 on a cluster of three JetStream servers).
    #[arg(long = "replicas", env = "CELERITY_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: Option<u8>,
    /// Placement tags, comma-separated: a cluster keeps the copies only on servers with all of
    /// them.
    #[arg(
        long = "placement-tags",
        env = "CELERITY_PLACEMENT_TAGS",
        value_delimiter = ','
    )]
    pub placement_tags: Vec<String>,
    /// Size limit of each queue's stream (default 1GiB); a full queue refuses new tasks.
    #[arg(long = "queue-max-bytes", env = "CELERITY_QUEUE_MAX_BYTES", value_parser = parse_size)]
    pub queue_max_bytes: Option<u64>,
    /// Size limit of the delayed-task stream (default 256MiB).
    #[arg(long = "delayed-max-bytes", env = "CELERITY_DELAYED_MAX_BYTES", value_parser = parse_size)]
    pub delayed_max_bytes: Option<u64>,
    /// Size limit of the dead-letter stream (default 256MiB; the oldest letters go first).
    #[arg(long = "dead-letter-max-bytes", env = "CELERITY_DEAD_LETTER_MAX_BYTES", value_parser = parse_size)]
    pub dead_letter_max_bytes: Option<u64>,
    /// How long dead letters are kept (default 14d; `36h`, `30d`).
    #[arg(long = "dead-letter-max-age", env = "CELERITY_DEAD_LETTER_MAX_AGE", value_parser = parse_age)]
    pub dead_letter_max_age: Option<Duration>,
    /// Size limit of the chord completion stream (default 256MiB).
    #[arg(long = "chord-max-bytes", env = "CELERITY_CHORD_MAX_BYTES", value_parser = parse_size)]
    pub chord_max_bytes: Option<u64>,
    /// Size limit of the results bucket and of the chords bucket (default 1GiB each).
    #[arg(long = "results-max-bytes", env = "CELERITY_RESULTS_MAX_BYTES", value_parser = parse_size)]
    pub results_max_bytes: Option<u64>,
}

impl StorageArgs {
    /// `storage` with every setting these flags give replaced.
    pub fn apply(&self, storage: crate::Storage) -> crate::Storage {
        let mut storage = storage;
        if let Some(replicas) = self.replicas {
            storage.replicas = usize::from(replicas);
        }
        if !self.placement_tags.is_empty() {
            storage.placement_tags.clone_from(&self.placement_tags);
        }
        let sizes = [
            (self.queue_max_bytes, &mut storage.queue_max_bytes),
            (self.delayed_max_bytes, &mut storage.delayed_max_bytes),
            (
                self.dead_letter_max_bytes,
                &mut storage.dead_letter_max_bytes,
            ),
            (self.chord_max_bytes, &mut storage.chord_max_bytes),
            (self.results_max_bytes, &mut storage.results_max_bytes),
        ];
        for (given, setting) in sizes {
            if let Some(bytes) = given {
                *setting = bytes;
            }
        }
        if let Some(age) = self.dead_letter_max_age {
            storage.dead_letter_max_age = age;
        }
        storage
    }
}

/// A size with an optional unit (`512MiB`, `2GB`, `1048576`), at least 1 KiB.
fn parse_size(value: &str) -> Result<u64, String> {
    let bytes = value
        .parse::<bytesize::ByteSize>()
        .map_err(|error| format!("{error}; use a size like 512MiB, 2GB or 1048576"))?
        .as_u64();
    if bytes < crate::MIN_MAX_BYTES || i64::try_from(bytes).is_err() {
        return Err(format!("{bytes} bytes is out of range; use at least 1KiB"));
    }
    Ok(bytes)
}

/// A positive duration (`14d`, `36h`).
fn parse_age(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(age) if !age.is_zero() => Ok(age),
        Ok(_) => Err("use a positive age, like 14d or 36h".to_owned()),
        Err(error) => Err(format!("{error}; use an age like 14d or 36h")),
    }
}

/// The entries of a schedule file, read when the flags are parsed.
#[derive(Debug, Clone)]
pub struct ScheduleFile(pub Vec<crate::beat::Entry>);

fn parse_schedule_file(path: &str) -> Result<ScheduleFile, String> {
    crate::beat::load_schedule_file(std::path::Path::new(path))
        .map(ScheduleFile)
        .map_err(|error| crate::error_chain(&error))
}

impl WorkerArgs {
    /// The worker config these flags describe.
    pub fn config(&self) -> WorkerConfig {
        let mut config = WorkerConfig::new()
            .queues(self.queues.clone())
            .prefetch_multiplier(self.prefetch_multiplier as usize)
            .ack_wait(Duration::from_secs(self.ack_wait_secs))
            .max_deliveries(self.max_deliveries)
            .max_rate_limited(usize::try_from(self.max_rate_limited).unwrap_or(usize::MAX))
            .max_rate_limited_bytes(
                usize::try_from(self.max_rate_limited_bytes).unwrap_or(usize::MAX),
            )
            .recheck_interval(Duration::from_millis(self.recheck_interval_ms))
            .events(!self.without_events);
        if let Some(concurrency) = self.concurrency {
            config = config.concurrency(concurrency as usize);
        }
        if let Some(hostname) = &self.hostname {
            config = config.hostname(hostname.clone());
        }
        if let Some(port) = self.http_port {
            config = config.http(std::net::SocketAddr::new(self.http_bind, port));
        }
        match (&self.priority_weights, self.priority_mode.as_str()) {
            (Some(weights), _) => config = config.priority_weights(weights.0),
            (None, "weighted") => config = config.weighted_priorities(),
            _ => {}
        }
        if self.beat || self.schedule.is_some() {
            let entries = self.schedule.clone().map(|file| file.0).unwrap_or_default();
            config = config.beat(entries, Duration::from_secs(self.beat_lease_secs));
        }
        config
    }
}

/// The weights of priorities 0 to 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityWeights(pub [u32; 10]);

fn parse_weights(value: &str) -> Result<PriorityWeights, String> {
    crate::control::parse_weights(value)
        .map(PriorityWeights)
        .map_err(|error| error.to_string())
}

#[derive(Debug, Parser)]
#[command(about = "A Celerity application")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker.
    Worker(WorkerArgs),
}

/// Parses the process's arguments (`<binary> worker ...`) and runs the command; returns the exit
/// code for `main`.
pub fn main(app: App) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker(args) => run_worker(app, &args),
    }
}

/// Runs a worker from parsed flags, logging to stderr; for binaries with their own clap tree.
pub fn run_worker(app: App, args: &WorkerArgs) -> ExitCode {
    init_logging(&args.loglevel);
    let storage = args.storage.apply(app.settings().storage.clone());
    let app = match app.with_storage(storage) {
        Ok(app) => app,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    match crate::worker::run(app, args.nats.config(), args.config()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %crate::error_chain(&error), "worker failed");
            eprintln!("error: {}", crate::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr with `RUST_LOG` or `default_filter`. Does nothing if logging is already set up.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        nats: NatsArgs,
    }

    #[test]
    fn nats_args_debug_prints_no_secret() {
        let flags = Flags::try_parse_from([
            "producer",
            "--nats-url",
            "nats://app:url-secret@nats:4222",
            "--nats-user",
            "app",
            "--nats-password",
            "password-secret",
            "--nats-token",
            "token-secret",
        ])
        .unwrap();
        let printed = format!("{flags:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("nats://nats:4222"), "{printed}");
        assert!(printed.contains("app"), "{printed}");
    }

    /// Set in the child processes of [`from_env_reads_the_variables_a_worker_reads`]: what the
    /// child expects of [`NatsArgs::from_env`] (`read` or `refused`).
    const FROM_ENV_CHILD: &str = "CELERITY_TEST_FROM_ENV_CHILD";

    #[test]
    fn from_env_reads_the_variables_a_worker_reads() {
        match std::env::var(FROM_ENV_CHILD).as_deref() {
            Ok("read") => {
                let args = NatsArgs::from_env().unwrap();
                assert_eq!(args.config().url(), "nats://nats.example:4222");
                assert_eq!(args.user.as_deref(), Some("app"));
                assert_eq!(args.password.as_deref(), Some("s3cret"));
                return;
            }
            Ok(_) => {
                let refused = NatsArgs::from_env().unwrap_err();
                assert!(refused.to_string().contains("--nats-password"), "{refused}");
                return;
            }
            Err(_) => {}
        }
        // The variables are set in child processes running only this test: setting them here
        // would race with every other test reading the environment.
        let child = |expect: &str, variables: &[(&str, &str)]| {
            let mut command = std::process::Command::new(std::env::current_exe().unwrap());
            command
                .args([
                    "--exact",
                    "cli::tests::from_env_reads_the_variables_a_worker_reads",
                ])
                .env(FROM_ENV_CHILD, expect);
            for name in ["URL", "USER", "PASSWORD", "TOKEN"] {
                command.env_remove(format!("CELERITY_NATS_{name}"));
            }
            let output = command.envs(variables.iter().copied()).output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "the child test expecting {expect} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        child(
            "read",
            &[
                ("CELERITY_NATS_URL", "nats://nats.example:4222"),
                ("CELERITY_NATS_USER", "app"),
                ("CELERITY_NATS_PASSWORD", "s3cret"),
            ],
        );
        child("refused", &[("CELERITY_NATS_USER", "app")]);
    }

    #[test]
    fn sizes_take_units_and_refuse_nonsense() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("12").unwrap_err().contains("at least 1KiB"));
        assert!(parse_size("lots").unwrap_err().contains("512MiB"));
        assert_eq!(parse_age("14d"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_age("0s").is_err());
    }

    #[test]
    fn storage_flags_override_only_what_they_give() {
        #[derive(Debug, Parser)]
        struct Worker {
            #[command(flatten)]
            worker: WorkerArgs,
        }
        let parsed = Worker::try_parse_from([
            "worker",
            "--replicas",
            "3",
            "--placement-tags",
            "ssd,eu",
            "--results-max-bytes",
            "64MiB",
        ])
        .unwrap();
        let storage = parsed.worker.storage.apply(crate::Storage::default());
        assert_eq!(storage.replicas, 3);
        assert_eq!(storage.placement_tags, ["ssd", "eu"]);
        assert_eq!(storage.results_max_bytes, 64 << 20);
        assert_eq!(
            storage.queue_max_bytes,
            crate::Storage::default().queue_max_bytes
        );
        let refused = Worker::try_parse_from(["worker", "--replicas", "7"]).unwrap_err();
        assert!(refused.to_string().contains("1..=5"), "{refused}");
    }

    #[test]
    fn priority_weights_name_the_bad_value() {
        assert_eq!(parse_weights("1,1,1,1,1,1,1,1,1,2").unwrap().0[9], 2);
        assert!(parse_weights("1,2,3").unwrap_err().contains("3 weights"));
        assert!(
            parse_weights("1,x,1,1,1,1,1,1,1,1")
                .unwrap_err()
                .contains("\"x\"")
        );
    }
}
