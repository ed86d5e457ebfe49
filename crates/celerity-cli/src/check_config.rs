//! `celerity check-config <nats-server.conf>`: the problems of `celerity health`'s `security` check,
//! found in a nats-server config file instead of a running server (nothing is connected to, except
//! the server named with `--nats-url`, whose INFO gives the version).
//!
//! Two checks: `auth` (who gets in without credentials: CVE-2023-47090's pattern on a version it
//! affects, a `no_auth_user`, or a `$SYS`-only `accounts` block) and `listen` (whether a server that
//! lets clients in without credentials listens off loopback). Exit status 1 when one fails.
//! The file is read with [`conf`]; `include`d files are followed, relative to the including file.

mod conf;
mod facts;
mod version;

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::health::security::{
    ADVISORY, AFFECTED, CVE_FIX, SECURITY_DOC, cve_2023_47090_affects, describe_host,
    is_loopback_host,
};
use facts::{Facts, Host};
use version::ServerVersion;

/// `celerity check-config ...`
#[derive(Debug, Args)]
pub(crate) struct CheckConfigArgs {
    /// The nats-server config file.
    file: PathBuf,
    /// The nats-server version that runs this file (`2.9.10`); default: the version the server at
    /// --nats-url reports, else what `nats-server --version` prints (the binary named by
    /// $NATS_SERVER, else the first on $PATH, /usr/sbin, /usr/bin or /usr/local/bin).
    #[arg(long = "server-version", value_parser = version::parse)]
    server_version: Option<String>,
    /// Read the version from the INFO of this running server (only its greeting is read: no
    /// credentials are needed or sent).
    #[arg(long = "nats-url")]
    nats_url: Option<String>,
    /// One JSON object: `{"ok", "file", "server_version", "version_source", "checks", "notes"}`.
    #[arg(long)]
    json: bool,
}

/// The outcome of one check.
#[derive(Debug, Serialize)]
struct Finding {
    /// `auth` or `listen`.
    check: &'static str,
    ok: bool,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Finding {
    fn pass(check: &'static str, reason: String) -> Self {
        Self {
            check,
            ok: true,
            reason,
            fix: None,
        }
    }

    fn fail(check: &'static str, reason: String, fix: String) -> Self {
        Self {
            check,
            ok: false,
            reason,
            fix: Some(fix),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    file: String,
    server_version: Option<String>,
    /// Where the version came from, or why it is not known.
    version_source: String,
    checks: Vec<Finding>,
    /// What was not checked (an `include` not followed, a variable not resolved).
    notes: Vec<String>,
}

/// Who gets in without credentials, by the config.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    /// Clients must authenticate, as said.
    Authenticated(&'static str),
    /// No auth is configured: every client gets in.
    NoAuth,
    /// `no_auth_user` names this user.
    NoAuthUser(String),
    /// An `accounts` block of the system account only, with users, and no `authorization`: clients
    /// without credentials get into the global account, by design.
    SystemOnly,
    /// CVE-2023-47090's pattern on a version it affects (or an unknown one).
    Cve,
}

/// Runs the checks and prints the report; false when one failed.
pub(crate) async fn run(args: CheckConfigArgs) -> anyhow::Result<bool> {
    let mut notes = Vec::new();
    let config = facts::load(&args.file, 0, &mut notes)?;
    let facts = facts::read(&config, &mut notes);
    let version = version::find(args.server_version.as_deref(), args.nats_url.as_deref()).await?;
    let checks = judge(&facts, &version);
    let report = Report {
        ok: checks.iter().all(|finding| finding.ok),
        file: args.file.display().to_string(),
        server_version: version.version,
        version_source: version.source,
        checks,
        notes,
    };
    match args.json {
        true => println!("{}", serde_json::to_string(&report)?),
        false => print_text(&report),
    }
    Ok(report.ok)
}

/// Who gets in without credentials, by `facts` on `version`.
fn access(facts: &Facts, version: &ServerVersion) -> Access {
    let system = facts.system_account.as_deref().unwrap_or("$SYS");
    let system_only =
        !facts.accounts.is_empty() && facts.accounts.iter().all(|(name, _)| name == system);
    let affected = version.version.as_deref().and_then(cve_2023_47090_affects);
    let authorization = facts.authorization.as_ref();
    if let Some(user) = &facts.no_auth_user {
        return Access::NoAuthUser(user.clone());
    }
    if facts.operator {
        return Access::Authenticated("an operator: users with JWTs");
    }
    if authorization.is_some() && system_only && affected != Some(false) {
        return Access::Cve;
    }
    if facts.client_certificates {
        return Access::Authenticated("client certificates: `tls { verify: true }`");
    }
    if authorization
        .is_some_and(|block| block.users > 0 || block.user || block.token || block.callout)
    {
        return Access::Authenticated("the users or token of the `authorization` block");
    }
    let account_users = facts.accounts.iter().any(|(_, users)| *users > 0);
    if system_only && account_users && authorization.is_none() {
        return Access::SystemOnly;
    }
    match account_users || (authorization.is_some() && !facts.accounts.is_empty()) {
        true => Access::Authenticated("the users of the accounts"),
        false => Access::NoAuth,
    }
}

/// The `auth` and `listen` checks.
fn judge(facts: &Facts, version: &ServerVersion) -> Vec<Finding> {
    let access = access(facts, version);
    vec![
        auth_check(facts, &access, version),
        listen_check(facts, &access),
    ]
}

fn auth_check(facts: &Facts, access: &Access, version: &ServerVersion) -> Finding {
    let system = facts.system_account.as_deref().unwrap_or("$SYS");
    let pattern = format!(
        "an `authorization` block plus an `accounts` block whose only account is `{system}` (the system account)"
    );
    match access {
        Access::Cve => {
            let on = match &version.version {
                Some(v) => format!("on nats-server {v} ({}), this is {ADVISORY}", version.source),
                None => format!("the server's version is not known ({}: give --server-version), and on a version {ADVISORY} affects this is that advisory", version.source),
            };
            Finding::fail(
                "auth",
                format!("{pattern}: {on}: the server adds an implicit `no_auth_user`, so clients without credentials connect, and anyone who can reach it may send, revoke or read tasks ({AFFECTED})"),
                CVE_FIX.to_owned(),
            )
        }
        Access::NoAuthUser(user) => Finding::fail(
            "auth",
            format!("`no_auth_user: {user}`: clients without credentials connect as {user}"),
            "remove `no_auth_user`, unless every client that can reach the server may send, revoke and read tasks".to_owned(),
        ),
        Access::SystemOnly => Finding::fail(
            "auth",
            format!("an `accounts` block whose only account is `{system}`, and no `authorization` block: nats-server lets clients without credentials into the global account (by design, on every version)"),
            format!("give the application an account with users of its own: `accounts {{ APP {{ jetstream: enabled, users = [...] }}, {system} {{ ... }} }}`"),
        ),
        Access::Authenticated(how) => {
            let fixed = match (&facts.authorization, &version.version) {
                (Some(_), Some(v)) if facts.accounts.iter().all(|(name, _)| name == system) && !facts.accounts.is_empty() => format!(
                    "; {pattern} is the pattern of {ADVISORY}, harmless on nats-server {v} ({}), which is fixed: keep it above 2.9.22 and 2.10.1",
                    version.source
                ),
                _ => String::new(),
            };
            Finding::pass("auth", format!("clients must authenticate ({how}){fixed}"))
        }
        Access::NoAuth => Finding::pass("auth", "no auth is configured: every client gets in (the listen check says who can reach it)".to_owned()),
    }
}

fn listen_check(facts: &Facts, access: &Access) -> Finding {
    let (described, origin, loopback) = match &facts.host {
        Host::Set { host, from } => (
            describe_host(host),
            format!(", set by `{from}`"),
            is_loopback_host(host),
        ),
        Host::Default => (
            "every interface".to_owned(),
            " (no `listen` or `host` is set: nats-server's default, unless it is started with `-a`)".to_owned(),
            false,
        ),
        Host::Unresolved(variable) => (
            variable.clone(),
            " (a variable the file does not define)".to_owned(),
            false,
        ),
    };
    let who = match access {
        _ if loopback => {
            return Finding::pass(
                "listen",
                format!("listens on loopback only: {described}{origin}"),
            );
        }
        Access::Authenticated(_) => {
            return Finding::pass(
                "listen",
                format!("listens on {described}{origin}; clients must authenticate"),
            );
        }
        Access::NoAuth => {
            "it has no auth (no `authorization` users, no accounts with users, no operator)"
        }
        _ => "clients without credentials get in (see the auth check)",
    };
    Finding::fail(
        "listen",
        format!(
            "listens on {described}{origin}, and {who}: anyone who can reach it may send, revoke or read tasks"
        ),
        format!(
            "require authentication (users in an `authorization` block or in accounts, NKeys, or an operator with JWTs), see {SECURITY_DOC}; or listen on loopback only: `listen: 127.0.0.1:4222`"
        ),
    )
}

fn print_text(report: &Report) {
    for finding in &report.checks {
        let status = if finding.ok { "OK  " } else { "FAIL" };
        match &finding.fix {
            Some(fix) => println!("{status}  {}: {}: {fix}", finding.check, finding.reason),
            None => println!("{status}  {}: {}", finding.check, finding.reason),
        }
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    match &report.server_version {
        Some(version) => println!("nats-server version {version}, {}", report.version_source),
        None => println!("nats-server version unknown: {}", report.version_source),
    }
    let failed = report.checks.iter().filter(|finding| !finding.ok).count();
    match failed {
        0 => println!("\n{}: no problem found", report.file),
        1 => println!("\n{}: 1 problem found", report.file),
        _ => println!("\n{}: {failed} problems found", report.file),
    }
}

#[cfg(test)]
mod tests;
