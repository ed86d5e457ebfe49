//! The `celerity` command.
//!
//! This file only parses arguments, runs the chosen command, prints the error chain and picks the
//! exit code; each command lives in its own module (`dev`, `control`, `inspect`, `status` (with `result`), `health`,
//! `purge`, `events`, `beat`, `bench`).

mod beat;
mod bench;
mod check_config;
mod control;
mod dashboard;
mod dead_letters;
mod demo;
mod dev;
mod events;
mod health;
mod inspect;
mod purge;
mod status;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Celerity: a distributed task runtime on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "celerity", version, about)]
struct Cli {
    /// Log filter for stderr (`info`, `celerity=debug`; default: warnings); RUST_LOG wins when set.
    #[arg(short = 'l', long = "loglevel", global = true)]
    loglevel: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local demo: a nats-server, a worker and a producer sending a few hundred tasks.
    Dev(dev::DevArgs),
    /// Send a control command to workers: `ping`, `revoke <task id> [--terminate]`,
    /// `rate-limit <task> <rate> [--global]`.
    Control(control::ControlArgs),
    /// Ask workers what they run and hold: `registered`, `stats`, `active-queues`, `revoked`.
    Inspect(inspect::InspectArgs),
    /// The workers that answer, with their queues (like `celery status`).
    Status(status::StatusArgs),
    /// A task's state, result or error, meta, worker and times, from the results bucket.
    Result(status::ResultArgs),
    /// Check that the deployment can run tasks: server, JetStream, each queue's stream and
    /// consumers, a worker per queue, no stalled queue; exit status 1 when a check fails.
    Health(health::HealthArgs),
    /// Check a nats-server config file for a server that lets clients in without credentials
    /// (CVE-2023-47090, `no_auth_user`) or without auth off loopback; exit status 1 when it does.
    CheckConfig(check_config::CheckConfigArgs),
    /// Remove the tasks stored in a queue (or one priority level of it), asking first unless
    /// `--force`.
    Purge(purge::PurgeArgs),
    /// Serve the web dashboard (like `celery flower`): workers, tasks, canvases, queues and dead
    /// letters, live.
    Dashboard(dashboard::DashboardArgs),
    /// Tail task and worker events, live or read back (`--since 10m`), with filters.
    Events(events::EventsArgs),
    /// The messages no worker could run: `list`, `show`, `requeue`, `delete`, `purge`.
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Periodic tasks: `list` the entries, their last and next runs, and the active scheduler.
    Beat(beat::BeatArgs),
    /// Measure Celerity against raw JetStream in one run (build with --release): throughput,
    /// chain latency, chord, priority, worker memory.
    Bench(bench::BenchArgs),
    /// The bench's worker process (started by `celerity bench`).
    #[command(hide = true)]
    BenchWorker {
        /// Worker flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The flags of `celerity bench-worker`: a worker's.
#[derive(Debug, Parser)]
#[command(name = "celerity bench-worker")]
struct BenchWorkerCli {
    #[command(flatten)]
    worker: celerity::cli::WorkerArgs,
}

fn main() -> ExitCode {
    let cli = parse();
    if cli.command.prints_and_ends() {
        end_quietly_when_stdout_closes();
    }
    let default_log_filter = match &cli.command {
        Command::Dev(_) => dev::DEFAULT_LOG_FILTER,
        Command::Dashboard(_) => "warn,celerity_dashboard=info",
        Command::BenchWorker { args } => {
            let worker = BenchWorkerCli::parse_from(
                std::iter::once("celerity bench-worker".to_owned()).chain(args.iter().cloned()),
            );
            return match bench::tasks::app() {
                Ok(app) => celerity::cli::run_worker(app, &worker.worker),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(2)
                }
            };
        }
        // Beat, bench and the commands that print and end.
        _ => "warn",
    };
    celerity::cli::init_logging(cli.loglevel.as_deref().unwrap_or(default_log_filter));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Dev(args) => runtime.block_on(dev::run(args)),
        Command::Control(args) => runtime.block_on(control::run(args)),
        Command::Inspect(args) => runtime.block_on(inspect::run(args)),
        Command::Status(args) => runtime.block_on(status::status(args)),
        Command::Result(args) => runtime.block_on(status::result(args)),
        Command::Health(args) => runtime.block_on(health::run(args)),
        Command::CheckConfig(args) => runtime.block_on(check_config::run(args)),
        Command::Purge(args) => runtime.block_on(purge::run(args)),
        Command::Events(args) => runtime.block_on(events::run(args)),
        Command::DeadLetters(args) => runtime.block_on(dead_letters::run(args)),
        Command::Dashboard(args) => runtime.block_on(dashboard::run(args)),
        Command::Beat(args) => runtime.block_on(beat::run(args)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::BenchWorker { .. } => unreachable!("run before the runtime starts"),
    };
    // Commands await everything they start, except a worker join they gave up on after an
    // interrupt: do not wait for that one.
    runtime.shutdown_background();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

impl Command {
    /// True for a command that prints what it found and ends, whose output is often piped
    /// (`celerity inspect active | head`).
    fn prints_and_ends(&self) -> bool {
        matches!(
            self,
            Command::Control(_)
                | Command::Inspect(_)
                | Command::Status(_)
                | Command::Result(_)
                | Command::Health(_)
                | Command::CheckConfig(_)
                | Command::Purge(_)
                | Command::Events(_)
                | Command::DeadLetters(_)
        )
    }
}

/// Restores the default action of SIGPIPE, so a command whose reader has gone (`celerity events
/// | head`) ends as any Unix tool does, instead of panicking in `println!`. Commands that run
/// (worker, dashboard, dev, beat, bench) keep Rust's ignored SIGPIPE: a peer that goes is an error
/// to handle, not a reason to die. (Sockets are written with `MSG_NOSIGNAL` either way.)
fn end_quietly_when_stdout_closes() {
    // SAFETY: called at the start of `main`, before any thread starts; it only resets one
    // signal's action to the default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses `--timeout`: a number of seconds above 0.
fn parse_seconds(value: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("give a number of seconds above 0, not {value}"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// True when `error` says the stream does not exist.
fn is_stream_not_found(error: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The flags of the commands that ask workers (`inspect`, `status`, `health`): the deployment's,
/// and how long to wait for replies.
#[derive(Debug, clap::Args)]
struct AskArgs {
    /// Seconds to wait for workers to answer.
    #[arg(short = 't', long = "timeout", default_value = "1", value_parser = parse_seconds)]
    timeout: std::time::Duration,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// The workers a control command or an inspection goes to.
#[derive(Debug, clap::Args)]
struct Destinations {
    /// These workers (their hostnames, comma-separated) only; default: every worker.
    #[arg(
        short = 'd',
        long = "destination",
        value_delimiter = ',',
        global = true
    )]
    destination: Vec<String>,
}

/// The namespace and NATS flags of the commands that read a deployment.
#[derive(Debug, clap::Args)]
struct ConnectionArgs {
    /// The namespace of the deployment.
    #[arg(
        long = "namespace",
        env = "CELERITY_NAMESPACE",
        default_value = "celerity"
    )]
    namespace: String,
    /// NATS connection.
    #[command(flatten)]
    nats: celerity::cli::NatsArgs,
}

impl ConnectionArgs {
    /// A client of the deployment these flags name.
    async fn connect(&self) -> anyhow::Result<celerity::Client> {
        connect(&self.namespace, &self.nats).await
    }
}

/// A client of the deployment in `namespace`, for the commands that read it or send it commands
/// (it sends no `task-sent` events: these commands send no tasks).
async fn connect(
    namespace: &str,
    nats: &celerity::cli::NatsArgs,
) -> anyhow::Result<celerity::Client> {
    use anyhow::Context as _;
    // These commands send no tasks: no task-sent events, and no span exporter whatever OTEL_*
    // says.
    let app = celerity::App::builder()
        .namespace(namespace)
        .send_sent_events(false)
        .telemetry(celerity::telemetry::Telemetry::disabled())
        .build()
        .context("invalid settings")?;
    app.client(&nats.config()).await.context("cannot connect")
}

/// Parses the process's arguments, keeping what clap's derive drops: where a value came from.
fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches)
        .unwrap_or_else(|error| error.format(&mut Cli::command()).exit());
    if let (Command::Dev(args), Some(("dev", dev_matches))) =
        (&mut cli.command, matches.subcommand())
    {
        args.note_value_sources(dev_matches);
    }
    cli
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dev_starts_its_own_server_unless_a_url_is_given() {
        let parse = |argv: &[&str]| {
            let matches = Cli::command().try_get_matches_from(argv).unwrap();
            let mut cli = Cli::from_arg_matches(&matches).unwrap();
            let Command::Dev(args) = &mut cli.command else {
                unreachable!("the argv above is `dev`")
            };
            args.note_value_sources(matches.subcommand_matches("dev").unwrap());
            args.clone()
        };
        // The environment may name a server too; then there is no default to observe.
        if std::env::var_os("CELERITY_NATS_URL").is_none() {
            assert!(!parse(&["celerity", "dev"]).uses_given_server());
        }
        assert!(
            parse(&["celerity", "dev", "--nats-url", "nats://127.0.0.1:4222"]).uses_given_server()
        );
    }

    #[test]
    fn the_compose_files_dashboard_command_is_one_the_cli_accepts() {
        let compose = include_str!("../../../docker-compose.yml");
        let line = compose
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("command: [\"dashboard\""))
            .expect("docker-compose.yml runs `celerity dashboard`");
        let command: Vec<String> = serde_json::from_str(&line["command: ".len()..])
            .expect("the command is a flow sequence of strings");
        let argv = std::iter::once("celerity").chain(command.iter().map(String::as_str));
        let cli = Cli::try_parse_from(argv).expect("the CLI accepts the compose command");
        let Command::Dashboard(args) = cli.command else {
            panic!("the compose command runs the dashboard")
        };
        args.config().expect("its flags make a valid configuration");
    }
}
