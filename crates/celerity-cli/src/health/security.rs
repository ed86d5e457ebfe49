//! The `security` check of `celerity health`: whether a client without credentials gets in, and
//! whether a server that lets every client in can be reached from other machines.
//!
//! It judges only what a client observes: the server's INFO (`version`, `auth_required`, `host`),
//! the URL it was reached at, and at most two extra connections of [`PROBE_TIMEOUT`] each: one
//! without credentials (when ours had some), and one with a made-up user (when a client without
//! credentials got in though the INFO says no auth is required, to tell a `no_auth_user` from a
//! server with no auth at all: the first refuses a wrong password, the second takes anything).
//! It never prints or logs a credential.
//!
//! The facts of the advisory (CVE-2023-47090) and the loopback test are shared with
//! `celerity check-config`, which finds the same problems in a config file.

use std::net::IpAddr;
use std::time::Duration;

use async_nats::ConnectErrorKind;
use celerity::cli::NatsArgs;
use tracing::instrument::WithSubscriber as _;

use super::check::Check;

/// The advisory, by its names.
pub(crate) const ADVISORY: &str = "CVE-2023-47090 (GHSA-fr2g-9hjm-wr23, NATS secnote-2023-01)";

/// The versions the advisory affects, and those that fix it.
pub(crate) const AFFECTED: &str =
    "it affects nats-server 2.2.0 to 2.9.22 and 2.10.0 to 2.10.1, and 2.9.23 and 2.10.2 fix it";

/// What the advisory's configuration does.
pub(crate) const CVE_PATTERN: &str = "an `authorization` block with users plus an `accounts` block whose only account is `$SYS` makes the server add an implicit `no_auth_user`, so clients without credentials connect";

/// How to get out of the advisory's reach.
pub(crate) const CVE_FIX: &str = "upgrade nats-server to 2.9.23, 2.10.2 or later; until then add a second account with no users to the `accounts` block, or move the `authorization` users into an account of their own";

/// Where the project says how to secure a server.
pub(crate) const SECURITY_DOC: &str = "docs/security.md";

/// How long each probe connection may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The user name of the made-up credentials; its password is random.
const PROBE_USER: &str = "celerity-health-probe";

/// What one probe connection got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// The server took the connection.
    Accepted,
    /// The server refused it for its credentials (or TLS refused it for lacking a certificate).
    Refused(String),
    /// It failed for another reason, or got no answer in time: nothing is learnt.
    Failed(String),
}

/// What the check judges: the server's INFO, the URL, and the probes.
#[derive(Debug)]
struct Observed {
    version: String,
    auth_required: bool,
    /// The address the server listens on, from its INFO.
    listen_host: String,
    /// The hosts of the URL the client was given.
    url_hosts: Vec<String>,
    used_credentials: bool,
    /// A client without credentials (ours, when we gave none).
    anonymous: Probe,
    /// A client with a made-up user; tried only when `anonymous` got in though the INFO says no
    /// auth is required.
    made_up: Option<Probe>,
}

/// The security check of the server `nats` is connected to, reached with `args`.
pub(super) async fn check(nats: &async_nats::Client, args: &NatsArgs) -> Check {
    let info = nats.server_info();
    let used_credentials = uses_credentials(args);
    let anonymous = match used_credentials {
        true => probe(args, None).await,
        false => Probe::Accepted,
    };
    let made_up = match (&anonymous, info.auth_required) {
        (Probe::Accepted, false) => {
            let password = uuid::Uuid::now_v7().to_string();
            Some(probe(args, Some((PROBE_USER, &password))).await)
        }
        _ => None,
    };
    judge(&Observed {
        version: info.version.clone(),
        auth_required: info.auth_required,
        listen_host: info.host.clone(),
        url_hosts: url_hosts(&args.url),
        used_credentials,
        anonymous,
        made_up,
    })
}

/// Whether CVE-2023-47090 affects nats-server `version` (`2.9.10`, `v2.10.1`, `2.10.0-RC.2`);
/// `None` when it is not a version number.
pub(crate) fn cve_2023_47090_affects(version: &str) -> Option<bool> {
    let version = version.trim().trim_start_matches('v');
    let release = version.split(['-', '+']).next().unwrap_or(version);
    let mut numbers = release.split('.').map(|part| part.parse::<u64>().ok());
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
        (numbers.next(), numbers.next(), numbers.next())
    else {
        return None;
    };
    Some(
        major == 2
            && ((2..=8).contains(&minor)
                || (minor == 9 && patch <= 22)
                || (minor == 10 && patch <= 1)),
    )
}

/// Whether `host` (a name or an address, brackets allowed) is this machine's loopback only:
/// `localhost`, `127.0.0.0/8` or `::1`. `0.0.0.0`, `::` and an empty host mean every interface.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|address| address.to_canonical().is_loopback())
}

/// How a listen host reads in a sentence: `0.0.0.0 (every interface)`.
pub(crate) fn describe_host(host: &str) -> String {
    let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(address) if address.is_unspecified() => format!("{bare} (every interface)"),
        _ if bare.is_empty() => "every interface".to_owned(),
        _ => bare.to_owned(),
    }
}

/// The host and port of each server of `url` (one, or a comma-separated list;
/// `nats://user:pass@host:4222`, `tls://[::1]:4222`, `host`), without its user-info.
pub(crate) fn url_servers(url: &str) -> Vec<(String, u16)> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .map(|server| {
            let authority = server.split_once("://").map_or(server, |(_, rest)| rest);
            let authority = authority.split(['/', '?', '#']).next().unwrap_or(authority);
            let authority = authority
                .rsplit_once('@')
                .map_or(authority, |(_, rest)| rest);
            split_host_port(authority)
        })
        .collect()
}

fn url_hosts(url: &str) -> Vec<String> {
    url_servers(url).into_iter().map(|(host, _)| host).collect()
}

/// `host:port`, `[v6]:port`, `host` or `v6` as a host and a port (4222 when absent).
fn split_host_port(authority: &str) -> (String, u16) {
    const DEFAULT_PORT: u16 = 4222;
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|port| port.parse().ok());
        return (host.to_owned(), port.unwrap_or(DEFAULT_PORT));
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => {
            (host.to_owned(), port.parse().unwrap_or(DEFAULT_PORT))
        }
        _ => (authority.to_owned(), DEFAULT_PORT),
    }
}

/// Whether `args` authenticate: a user, token, NKey, credentials file or client certificate, or
/// user-info in the URL.
fn uses_credentials(args: &NatsArgs) -> bool {
    args.user.is_some()
        || args.token.is_some()
        || args.nkey.is_some()
        || args.creds.is_some()
        || args.tls_cert.is_some()
        || url_has_user_info(&args.url)
}

fn url_has_user_info(url: &str) -> bool {
    url.split(',').any(|server| {
        let authority = server.split_once("://").map_or(server, |(_, rest)| rest);
        authority
            .split(['/', '?', '#'])
            .next()
            .is_some_and(|authority| authority.contains('@'))
    })
}

/// Connects to the server of `args` once, with no credentials or with `credentials`, keeping its
/// TLS trust but no client certificate.
async fn probe(args: &NatsArgs, credentials: Option<(&str, &str)>) -> Probe {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(PROBE_TIMEOUT);
    if let Some(ca) = &args.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((user, password)) = credentials {
        options = options.user_and_password(user.to_owned(), password.to_owned());
    }
    // The configured URL with its user-info taken out.
    let servers: Vec<String> = celerity::NatsConfig::new(args.url.as_str())
        .url()
        .split(',')
        .map(|server| server.trim().to_owned())
        .collect();
    // async-nats logs a refused connection at error level; a refusal is what the probe hopes for.
    let connect = options
        .connect(servers)
        .with_subscriber(tracing::subscriber::NoSubscriber::default());
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(client)) => {
            drop(client);
            Probe::Accepted
        }
        Ok(Err(error)) => match error.kind() {
            ConnectErrorKind::AuthorizationViolation
            | ConnectErrorKind::Authentication
            | ConnectErrorKind::Tls => Probe::Refused(error.kind().to_string()),
            // A server that requires a client certificate ends the handshake with an alert
            // (BadCertificate, CertificateRequired), which async-nats reports as I/O.
            ConnectErrorKind::Io if error.to_string().contains("fatal alert") => {
                Probe::Refused(error.to_string().replace("IO error: ", "TLS: "))
            }
            _ => Probe::Failed(error.to_string()),
        },
        Err(_) => Probe::Failed(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// The check of what was observed.
fn judge(observed: &Observed) -> Check {
    let version = observed.version.as_str();
    match (&observed.anonymous, &observed.made_up) {
        (Probe::Refused(why), _) => Check::pass(
            "security",
            None,
            format!(
                "clients must authenticate: a connection without credentials was refused ({why}){}",
                version_note(version, ", though this server shows no symptom of it")
            ),
        ),
        (Probe::Failed(why), _) => Check::pass(
            "security",
            None,
            format!(
                "not probed: a connection without credentials failed ({why}), so whether one gets in is not known{}",
                version_note(version, "")
            ),
        ),
        (Probe::Accepted, None | Some(Probe::Refused(_))) => anonymous_admitted(observed),
        (Probe::Accepted, Some(Probe::Accepted | Probe::Failed(_))) => no_auth(
            observed,
            &version_note(version, ", which matters once the server has auth"),
        ),
    }
}

/// A client without credentials got in though the server authenticates others.
///
/// What the INFO says tells the causes apart: a `no_auth_user` clears `auth_required` (since
/// nats-server 2.9.8), while the advisory's implicit user and the one a `$SYS`-only `accounts`
/// block gets by design leave it set (seen on 2.9.10 and 2.15.1).
fn anonymous_admitted(observed: &Observed) -> Check {
    let version = &observed.version;
    let affected = cve_2023_47090_affects(version) == Some(true);
    let check_config = "`celerity check-config <nats-server.conf>` names the cause";
    let (cause, fix) = match (observed.auth_required, affected) {
        (false, _) => (
            "; the server says no auth is required yet refuses a wrong password, so it has a `no_auth_user`, whom clients without credentials connect as".to_owned(),
            "remove the `no_auth_user`, unless every client that can reach the server may send, revoke and read tasks".to_owned(),
        ),
        (true, true) => (
            format!(", though the server says auth is required: the symptom of {ADVISORY} on nats-server {version} ({AFFECTED}): {CVE_PATTERN}; an `accounts` block whose only account is `$SYS` and no `authorization` block does the same by design"),
            format!("{CVE_FIX}; without an `authorization` block, give the application an account with users of its own; {check_config}"),
        ),
        (true, false) => (
            format!(", though the server says auth is required: nats-server {version} is not affected by {ADVISORY}, so its config has an `accounts` block whose only account is `$SYS` and no `authorization` block, and then lets clients without credentials into the global account by design"),
            format!("give the application an account with users of its own, or an `authorization` block with users; {check_config}"),
        ),
    };
    Check::fail(
        "security",
        None,
        format!(
            "a connection without credentials got in{cause}; anyone who can reach the server may send, revoke or read tasks"
        ),
        fix,
    )
}

/// The server lets every client in: a failure unless only this machine can reach it.
fn no_auth(observed: &Observed, note: &str) -> Check {
    let unchecked = match observed.used_credentials {
        true => " (the credentials given are not checked)",
        false => "",
    };
    let reached_from_afar = match is_loopback_host(&observed.listen_host) {
        false => Some(format!(
            "it listens on {}",
            describe_host(&observed.listen_host)
        )),
        true => observed
            .url_hosts
            .iter()
            .find(|host| !is_loopback_host(host))
            .map(|host| format!("it is reached at {host}, not on loopback")),
    };
    match reached_from_afar {
        Some(reached) => Check::fail(
            "security",
            None,
            format!(
                "no auth{unchecked}, and {reached}: anyone who can reach it may send, revoke or read tasks{note}"
            ),
            format!(
                "require authentication (users in an `authorization` block or in accounts, NKeys, or an operator with JWTs) and give Celerity the credentials (--nats-user and --nats-password, --nats-creds, ...), see {SECURITY_DOC}; or make it listen on loopback only (`listen: 127.0.0.1:4222`)"
            ),
        ),
        None => Check::pass(
            "security",
            None,
            format!(
                "no auth{unchecked}, loopback only (listens on {}){note}",
                describe_host(&observed.listen_host)
            ),
        ),
    }
}

/// The note a passing check carries when the version is one the advisory affects; `aside` is
/// said of it before the advice.
fn version_note(version: &str, aside: &str) -> String {
    match cve_2023_47090_affects(version) {
        Some(true) => format!(
            "; note: nats-server {version} is a version {ADVISORY} affects ({AFFECTED}){aside}: upgrade it"
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(version: &str, auth_required: bool, anonymous: Probe) -> Observed {
        Observed {
            version: version.to_owned(),
            auth_required,
            listen_host: "127.0.0.1".to_owned(),
            url_hosts: vec!["127.0.0.1".to_owned()],
            used_credentials: true,
            anonymous,
            made_up: None,
        }
    }

    #[test]
    fn the_advisory_affects_2_2_0_to_2_9_22_and_2_10_0_to_2_10_1() {
        for affected in [
            "2.2.0",
            "2.9.10",
            "v2.9.22",
            "2.10.0",
            "2.10.1",
            "2.10.0-RC.3",
            "2.5.0",
        ] {
            assert_eq!(cve_2023_47090_affects(affected), Some(true), "{affected}");
        }
        for fixed in [
            "2.1.9", "2.9.23", "2.10.2", "2.11.0", "2.15.1", "3.0.0", "1.4.1",
        ] {
            assert_eq!(cve_2023_47090_affects(fixed), Some(false), "{fixed}");
        }
        for not_a_version in ["", "2.9", "two", "2.x.1"] {
            assert_eq!(
                cve_2023_47090_affects(not_a_version),
                None,
                "{not_a_version}"
            );
        }
    }

    #[test]
    fn loopback_hosts_are_localhost_127_slash_8_and_colon_colon_1() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "0.0.0.0",
            "::",
            "",
            "10.0.0.5",
            "192.168.1.2",
            "nats",
            "nats.example.com",
            "::2",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert_eq!(describe_host("0.0.0.0"), "0.0.0.0 (every interface)");
        assert_eq!(describe_host("[::]"), ":: (every interface)");
        assert_eq!(describe_host("10.0.0.5"), "10.0.0.5");
    }

    #[test]
    fn url_servers_drop_the_scheme_and_user_info_and_default_the_port() {
        assert_eq!(
            url_servers(
                "nats://alice:s3cret@10.0.0.5:4333, tls://[::1]:4222,localhost,nats://t0ken@nats"
            ),
            vec![
                ("10.0.0.5".to_owned(), 4333),
                ("::1".to_owned(), 4222),
                ("localhost".to_owned(), 4222),
                ("nats".to_owned(), 4222),
            ]
        );
        assert!(url_has_user_info("nats://alice:s3cret@127.0.0.1:4222"));
        assert!(url_has_user_info("nats://127.0.0.1:4222, t0ken@10.0.0.5"));
        assert!(!url_has_user_info(
            "nats://127.0.0.1:4222,tls://[::1]:4222/path@x"
        ));
    }

    #[test]
    fn a_refused_connection_without_credentials_passes_with_a_note_on_an_affected_version() {
        let fixed = judge(&observed(
            "2.15.1",
            true,
            Probe::Refused("authorization violation".into()),
        ));
        assert!(fixed.ok, "{fixed:?}");
        assert_eq!(
            fixed.reason,
            "clients must authenticate: a connection without credentials was refused (authorization violation)"
        );
        let affected = judge(&observed(
            "2.9.10",
            true,
            Probe::Refused("authorization violation".into()),
        ));
        assert!(affected.ok, "{affected:?}");
        assert!(
            affected
                .reason
                .contains("note: nats-server 2.9.10 is a version CVE-2023-47090"),
            "{affected:?}"
        );
    }

    #[test]
    fn a_client_without_credentials_that_gets_in_while_auth_is_required_fails_naming_the_advisory()
    {
        let check = judge(&observed("2.9.10", true, Probe::Accepted));
        assert!(!check.ok, "{check:?}");
        assert!(
            check.reason.contains(
                "got in, though the server says auth is required: the symptom of CVE-2023-47090"
            ),
            "{check:?}"
        );
        assert!(check.reason.contains("2.9.22"), "{check:?}");
        assert!(
            check.fix.as_deref().unwrap().contains("2.9.23"),
            "{check:?}"
        );
        let fixed = judge(&observed("2.15.1", true, Probe::Accepted));
        assert!(
            !fixed.ok
                && fixed
                    .reason
                    .contains("2.15.1 is not affected by CVE-2023-47090")
                && fixed
                    .reason
                    .contains("so its config has an `accounts` block whose only account is `$SYS`"),
            "{fixed:?}"
        );
    }

    #[test]
    fn a_no_auth_user_is_told_from_no_auth_by_a_made_up_password() {
        let mut no_auth_user = observed("2.15.1", false, Probe::Accepted);
        no_auth_user.made_up = Some(Probe::Refused("authorization violation".into()));
        let check = judge(&no_auth_user);
        assert!(
            !check.ok
                && check
                    .reason
                    .contains("refuses a wrong password, so it has a `no_auth_user`"),
            "{check:?}"
        );

        let mut no_auth = observed("2.15.1", false, Probe::Accepted);
        no_auth.made_up = Some(Probe::Accepted);
        no_auth.used_credentials = false;
        let check = judge(&no_auth);
        assert!(check.ok, "{check:?}");
        assert_eq!(
            check.reason,
            "no auth, loopback only (listens on 127.0.0.1)"
        );
    }

    #[test]
    fn no_auth_fails_when_the_server_listens_on_every_interface_or_is_reached_off_loopback() {
        let mut open = observed("2.15.1", false, Probe::Accepted);
        open.made_up = Some(Probe::Accepted);
        open.listen_host = "0.0.0.0".to_owned();
        let check = judge(&open);
        assert!(!check.ok, "{check:?}");
        assert!(check.reason.contains("listens on 0.0.0.0 (every interface): anyone who can reach it may send, revoke or read tasks"), "{check:?}");
        assert!(
            check
                .reason
                .contains("the credentials given are not checked"),
            "{check:?}"
        );
        assert!(
            check.fix.as_deref().unwrap().contains("docs/security.md"),
            "{check:?}"
        );

        open.listen_host = "127.0.0.1".to_owned();
        open.url_hosts = vec!["127.0.0.1".to_owned(), "nats.internal".to_owned()];
        let check = judge(&open);
        assert!(
            !check.ok && check.reason.contains("reached at nats.internal"),
            "{check:?}"
        );
    }

    #[test]
    fn a_probe_that_fails_for_another_reason_passes_as_not_probed() {
        let check = judge(&observed(
            "2.15.1",
            true,
            Probe::Failed("no answer within 1s".into()),
        ));
        assert!(
            check.ok && check.reason.starts_with("not probed"),
            "{check:?}"
        );
    }
}
