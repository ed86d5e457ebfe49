//! Servers that let clients in without credentials, found by `celerity health`'s `security` check
//! against real servers and by `celerity check-config` in config files.
//!
//! CVE-2023-47090's configuration (an `authorization` block with users plus an `accounts` block
//! whose only account is `$SYS`) lets a client without credentials in on nats-server 2.9.10 and
//! not on 2.15.1: each test asserts what the binary in use (`$NATS_SERVER`, else the default one)
//! does, so the suite passes on both. Only loopback servers are started: the non-loopback cases are
//! unit tests of the CLI crate.

use std::path::Path;
use std::process::{Command, Output};

use celerity_testkit::NatsServer;
use serde_json::Value;

use crate::support::{celerity_cli, run_celerity, server};

/// The advisory's configuration, appended to the testkit's.
const CVE_CONFIG: &str = r#"
authorization { users = [ {user: alice, password: alice-pw} ] }
accounts { $SYS { users = [ {user: sys, password: sys-pw} ] } }
"#;

/// The advisory's workaround: a second account with no users.
const WORKAROUND_CONFIG: &str = r#"
authorization { users = [ {user: alice, password: alice-pw} ] }
accounts { $SYS { users = [ {user: sys, password: sys-pw} ] }, SPARE {} }
"#;

/// The version of the nats-server binary the testkit starts.
fn binary_version() -> String {
    let binary = celerity_testkit::nats_server_binary().expect("a nats-server binary");
    celerity_testkit::server_version(&binary).expect("nats-server prints its version")
}

/// Whether CVE-2023-47090 affects `version`: 2.2.0 to 2.9.22 and 2.10.0 to 2.10.1.
fn affected(version: &str) -> bool {
    let numbers: Vec<u64> = version
        .split(['.', '-'])
        .take(3)
        .map(|part| part.parse().expect("a numeric version"))
        .collect();
    match numbers[..] {
        [2, minor, patch] => {
            (2..=8).contains(&minor) || (minor == 9 && patch <= 22) || (minor == 10 && patch <= 1)
        }
        _ => false,
    }
}

fn start_with(extra_config: &str) -> NatsServer {
    NatsServer::builder()
        .extra_config(extra_config)
        .start()
        .expect("nats-server starts with the extra config")
}

/// `nats://user:password@127.0.0.1:<port>`.
fn url_as(server: &NatsServer, user: &str, password: &str) -> String {
    format!("nats://{user}:{password}@127.0.0.1:{}", server.port())
}

/// Whether a client without credentials gets in.
async fn anonymous_gets_in(server: &NatsServer) -> bool {
    async_nats::ConnectOptions::new()
        .connect(server.url())
        .await
        .is_ok()
}

/// `celerity health --json` as `url`: the exit code and the `security` check.
fn security_check(url: &str) -> (Option<i32>, Value) {
    let output = run_celerity(url, &["health", "--json", "--timeout", "0.2"]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the report is JSON ({error}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let check = report["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .find(|check| check["check"] == "security")
        .unwrap_or_else(|| panic!("no security check in {report}"))
        .clone();
    (output.status.code(), check)
}

/// `celerity check-config <args>`.
fn check_config(args: &[&str]) -> Output {
    Command::new(celerity_cli())
        .arg("check-config")
        .args(args)
        .output()
        .expect("celerity runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("the config file is written");
    path.to_string_lossy().into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_cve_2023_47090_where_the_server_lets_a_client_without_credentials_in() {
    let version = binary_version();
    let server = start_with(CVE_CONFIG);
    assert_eq!(
        anonymous_gets_in(&server).await,
        affected(&version),
        "on nats-server {version}, a client without credentials gets in exactly when the advisory affects it"
    );

    let (code, check) = security_check(&url_as(&server, "alice", "alice-pw"));
    assert_eq!(code, Some(1), "the deployment has no queue either: {check}");
    let reason = check["reason"].as_str().unwrap();
    match affected(&version) {
        true => {
            assert_eq!(check["ok"], false, "{check}");
            assert!(reason.contains("a connection without credentials got in, though the server says auth is required: the symptom of CVE-2023-47090"), "{check}");
            assert!(
                reason.contains(&format!("nats-server {version}")),
                "{check}"
            );
            let fix = check["fix"].as_str().unwrap();
            assert!(
                fix.contains("2.9.23") && fix.contains("second account"),
                "{check}"
            );
        }
        false => {
            assert_eq!(check["ok"], true, "{check}");
            assert_eq!(
                reason,
                "clients must authenticate: a connection without credentials was refused (authorization violation)"
            );
        }
    }
    assert!(
        !check.to_string().contains("alice-pw"),
        "no secret is printed: {check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_without_credentials_on_the_cve_config_fails_or_cannot_connect_by_version() {
    let version = binary_version();
    let server = start_with(CVE_CONFIG);
    match affected(&version) {
        true => {
            let (_, check) = security_check(&server.url());
            assert_eq!(check["ok"], false, "{check}");
            assert!(
                check["reason"].as_str().unwrap().contains("CVE-2023-47090"),
                "{check}"
            );
        }
        false => {
            let output = run_celerity(&server.url(), &["health", "--json"]);
            assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
            let error = String::from_utf8_lossy(&output.stderr);
            assert!(error.contains("authorization violation"), "{error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advisorys_workaround_passes_with_a_note_on_an_affected_version() {
    let version = binary_version();
    let server = start_with(WORKAROUND_CONFIG);
    assert!(
        !anonymous_gets_in(&server).await,
        "a second account closes the hole on {version}"
    );

    let (_, check) = security_check(&url_as(&server, "alice", "alice-pw"));
    assert_eq!(check["ok"], true, "{check}");
    let reason = check["reason"].as_str().unwrap();
    assert!(reason.starts_with("clients must authenticate"), "{check}");
    assert_eq!(
        reason.contains(&format!(
            "note: nats-server {version} is a version CVE-2023-47090"
        )),
        affected(&version),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_auth_on_loopback_passes() {
    let server = server();
    let (_, check) = security_check(&server.url());
    assert_eq!(check["ok"], true, "{check}");
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .starts_with("no auth, loopback only (listens on 127.0.0.1)"),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_a_client_certificate_refuses_the_probe_without_one() {
    let server = NatsServer::builder()
        .tls()
        .start()
        .expect("a TLS nats-server starts");
    let tls = server.tls_files().expect("TLS files");
    let output = Command::new(celerity_cli())
        .args([
            "health",
            "--json",
            "--timeout",
            "0.2",
            "--nats-url",
            &server.url(),
        ])
        .arg("--nats-tls-ca")
        .arg(&tls.ca_cert)
        .arg("--nats-tls-cert")
        .arg(&tls.client_cert)
        .arg("--nats-tls-key")
        .arg(&tls.client_key)
        .output()
        .expect("celerity runs");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the report is JSON ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["check"] == "security")
        .unwrap_or_else(|| panic!("no security check in {report}"));
    assert_eq!(check["ok"], true, "{check}");
    assert!(
        check["reason"].as_str().unwrap().starts_with(
            "clients must authenticate: a connection without credentials was refused (TLS: received fatal alert: "
        ),
        "{check}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_auth_user_is_found_by_a_made_up_password_being_refused() {
    let server = start_with(
        "accounts { APP { users = [ {user: app, password: app-pw} ] } }\nno_auth_user: app",
    );
    assert!(
        anonymous_gets_in(&server).await,
        "no_auth_user lets clients without credentials in"
    );
    for url in [server.url(), url_as(&server, "app", "app-pw")] {
        let (_, check) = security_check(&url);
        assert_eq!(check["ok"], false, "{check}");
        assert!(
            check["reason"]
                .as_str()
                .unwrap()
                .contains("refuses a wrong password, so it has a `no_auth_user`"),
            "{check}"
        );
    }
}

#[test]
fn check_config_finds_the_cve_pattern_on_an_affected_version_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "cve.conf",
        &format!("listen: 127.0.0.1:4222\n{CVE_CONFIG}"),
    );

    let affected_run = check_config(&[&file, "--server-version", "2.9.10"]);
    assert_eq!(
        affected_run.status.code(),
        Some(1),
        "{}",
        stdout(&affected_run)
    );
    let out = stdout(&affected_run);
    assert!(out.contains("FAIL  auth: an `authorization` block plus an `accounts` block whose only account is `$SYS` (the system account): on nats-server 2.9.10 (given with --server-version), this is CVE-2023-47090"), "{out}");
    assert!(out.contains("add a second account with no users"), "{out}");
    assert!(
        out.contains("OK    listen: listens on loopback only: 127.0.0.1, set by `listen`"),
        "{out}"
    );
    assert!(out.ends_with("cve.conf: 1 problem found\n"), "{out}");

    let fixed_run = check_config(&[&file, "--server-version", "2.15.1", "--json"]);
    assert_eq!(fixed_run.status.code(), Some(0), "{}", stdout(&fixed_run));
    let report: Value = serde_json::from_slice(&fixed_run.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["server_version"], "2.15.1");
    assert!(
        report["checks"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("harmless on nats-server 2.15.1"),
        "{report}"
    );
}

#[test]
fn check_config_takes_the_version_of_the_local_binary_by_default() {
    let version = binary_version();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "cve.conf",
        &format!("listen: 127.0.0.1:4222\n{CVE_CONFIG}"),
    );
    let output = check_config(&[&file]);
    let out = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(i32::from(affected(&version))),
        "{out}"
    );
    assert!(
        out.contains(&format!("nats-server version {version}, from `")),
        "{out}"
    );
    assert!(out.contains(" --version`"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_agrees_with_health_when_it_reads_the_running_servers_version() {
    let version = binary_version();
    let server = start_with(CVE_CONFIG);
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "cve.conf",
        &format!("listen: 127.0.0.1:4222\n{CVE_CONFIG}"),
    );
    let output = check_config(&[&file, "--nats-url", &server.url(), "--json"]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["server_version"], version.as_str(), "{report}");
    assert_eq!(
        report["version_source"],
        format!("from the INFO of the server at 127.0.0.1:{}", server.port())
    );
    let (_, health) = security_check(&url_as(&server, "alice", "alice-pw"));
    assert_eq!(
        report["ok"], health["ok"],
        "check-config {report} and health {health}"
    );
    assert_eq!(
        output.status.code(),
        Some(i32::from(affected(&version))),
        "{report}"
    );
}

#[test]
fn check_config_fails_a_public_listen_without_auth_and_passes_a_clean_config() {
    let dir = tempfile::tempdir().unwrap();
    let public = write(
        dir.path(),
        "public.conf",
        "# no auth\nlisten: 0.0.0.0:4222\njetstream { store_dir: /tmp/js }\n",
    );
    let output = check_config(&[&public, "--server-version", "2.15.1"]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(out.contains("FAIL  listen: listens on 0.0.0.0 (every interface), set by `listen`, and it has no auth"), "{out}");
    assert!(
        out.contains(
            "anyone who can reach it may send, revoke or read tasks: require authentication"
        ),
        "{out}"
    );
    assert!(out.contains("docs/security.md"), "{out}");

    let clean = write(
        dir.path(),
        "clean.conf",
        "listen: 0.0.0.0:4222\naccounts {\n  APP { jetstream: enabled, users = [ {user: app, password: $APP_PASSWORD} ] }\n  $SYS { users = [ {user: sys, password: x} ] }\n}\nAPP_PASSWORD: \"s3cret\"\n",
    );
    let output = check_config(&[&clean, "--server-version", "2.9.10"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.contains("OK    auth: clients must authenticate (the users of the accounts)"),
        "{out}"
    );
    assert!(out.contains("OK    listen: listens on 0.0.0.0 (every interface), set by `listen`; clients must authenticate"), "{out}");
    assert!(out.ends_with("clean.conf: no problem found\n"), "{out}");
    assert!(!out.contains("s3cret"), "no secret is printed: {out}");
}

#[test]
fn check_config_reports_an_unreadable_or_broken_file_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf");
    let output = check_config(&[missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the config file"));

    let broken = write(dir.path(), "broken.conf", "accounts {\n  A: { users: [ }\n");
    let output = check_config(&[&broken]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("broken.conf is not a nats-server config: line 2"),
        "{error}"
    );
}
