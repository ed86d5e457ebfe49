//! The checks of `celerity check-config` on config texts, with the version given.

use super::*;

const CVE_CONFIG: &str = r#"
listen: 127.0.0.1:4222
authorization { users = [ {user: alice, password: pw} ] }
accounts { $SYS { users = [ {user: sys, password: x} ] } }
"#;

fn version(version: Option<&str>) -> ServerVersion {
    ServerVersion {
        version: version.map(str::to_owned),
        source: "given with --server-version".to_owned(),
    }
}

/// The findings for `text` on `server_version`, and the notes.
fn check(text: &str, server_version: Option<&str>) -> (Vec<Finding>, Vec<String>) {
    let mut notes = Vec::new();
    let config = conf::parse(text).expect("the test config parses");
    let facts = facts::read(&config, &mut notes);
    (judge(&facts, &version(server_version)), notes)
}

fn finding<'a>(findings: &'a [Finding], name: &str) -> &'a Finding {
    findings
        .iter()
        .find(|finding| finding.check == name)
        .unwrap_or_else(|| panic!("no {name} check in {findings:?}"))
}

#[test]
fn the_cve_pattern_fails_on_an_affected_version_and_passes_with_a_note_on_a_fixed_one() {
    let (findings, _) = check(CVE_CONFIG, Some("2.9.10"));
    let auth = finding(&findings, "auth");
    assert!(!auth.ok, "{auth:?}");
    assert!(
        auth.reason.contains(
            "on nats-server 2.9.10 (given with --server-version), this is CVE-2023-47090"
        ),
        "{auth:?}"
    );
    assert!(
        auth.fix
            .as_deref()
            .unwrap()
            .contains("add a second account with no users"),
        "{auth:?}"
    );
    assert!(finding(&findings, "listen").ok, "loopback: {findings:?}");

    let (findings, _) = check(CVE_CONFIG, Some("2.15.1"));
    let auth = finding(&findings, "auth");
    assert!(auth.ok, "{auth:?}");
    assert!(
        auth.reason.contains("harmless on nats-server 2.15.1"),
        "{auth:?}"
    );
}

#[test]
fn the_cve_pattern_fails_when_the_version_is_not_known() {
    let (findings, _) = check(CVE_CONFIG, None);
    let auth = finding(&findings, "auth");
    assert!(
        !auth.ok && auth.reason.contains("give --server-version"),
        "{auth:?}"
    );
}

#[test]
fn the_workarounds_of_the_advisory_pass_on_an_affected_version() {
    let second_account = r#"
authorization { users = [ {user: alice, password: pw} ] }
accounts { $SYS { users = [ {user: sys, password: x} ] }, OTHER {} }
"#;
    let users_in_accounts = r#"
accounts {
  APP { jetstream: enabled, users = [ {user: alice, password: pw} ] }
  $SYS { users = [ {user: sys, password: x} ] }
}
"#;
    for text in [second_account, users_in_accounts] {
        let (findings, _) = check(text, Some("2.9.10"));
        assert!(
            findings.iter().all(|finding| finding.ok),
            "{text}: {findings:?}"
        );
    }
}

#[test]
fn a_named_system_account_alone_is_the_same_pattern() {
    let text = r#"
authorization { users = [ {user: alice, password: pw} ] }
accounts { OPS { users = [ {user: sys, password: x} ] } }
system_account: OPS
"#;
    let (findings, _) = check(text, Some("2.10.1"));
    let auth = finding(&findings, "auth");
    assert!(
        !auth.ok && auth.reason.contains("whose only account is `OPS`"),
        "{auth:?}"
    );
}

#[test]
fn a_system_only_accounts_block_without_authorization_lets_clients_in_on_every_version() {
    let text =
        "accounts { $SYS { users = [ {user: sys, password: x} ] } }\nlisten: 127.0.0.1:4222\n";
    let (findings, _) = check(text, Some("2.15.1"));
    let auth = finding(&findings, "auth");
    assert!(
        !auth.ok && auth.reason.contains("into the global account"),
        "{auth:?}"
    );
}

#[test]
fn a_no_auth_user_fails_the_auth_check_and_a_public_listen_too() {
    let text = "listen: 0.0.0.0:4222\naccounts { A { users = [ {user: app, password: x} ] } }\nno_auth_user: app\n";
    let (findings, _) = check(text, Some("2.15.1"));
    let auth = finding(&findings, "auth");
    assert!(
        !auth.ok && auth.reason.contains("connect as app"),
        "{auth:?}"
    );
    let listen = finding(&findings, "listen");
    assert!(
        !listen.ok && listen.reason.contains("clients without credentials get in"),
        "{listen:?}"
    );
}

#[test]
fn a_public_listen_without_auth_fails_and_names_the_fix() {
    for (text, expected) in [
        (
            "listen: 0.0.0.0:4222\n",
            "listens on 0.0.0.0 (every interface), set by `listen`, and it has no auth",
        ),
        (
            "port: 4222\n",
            "every interface (no `listen` or `host` is set",
        ),
        (
            "listen: 4222\nhost: 10.0.0.5\n",
            "listens on 10.0.0.5, set by `host`",
        ),
        ("listen: \"[::]:4222\"\n", ":: (every interface)"),
        (
            "listen: $ADDR\n",
            "$ADDR (a variable the file does not define)",
        ),
        (
            "authorization { timeout: 2 }\nlisten: nats.example.com:4222\n",
            "nats.example.com",
        ),
    ] {
        let (findings, _) = check(text, Some("2.15.1"));
        let listen = finding(&findings, "listen");
        assert!(!listen.ok, "{text}: {listen:?}");
        assert!(listen.reason.contains(expected), "{text}: {listen:?}");
        assert!(
            listen
                .reason
                .contains("anyone who can reach it may send, revoke or read tasks"),
            "{listen:?}"
        );
        assert!(
            listen.fix.as_deref().unwrap().contains("docs/security.md"),
            "{listen:?}"
        );
        assert!(
            finding(&findings, "auth").ok,
            "no auth is not an auth surprise: {findings:?}"
        );
    }
}

#[test]
fn a_public_listen_with_auth_and_a_loopback_one_without_pass() {
    for text in [
        "listen: 0.0.0.0:4222\nauthorization { users = [ {user: a, password: b} ] }\n",
        "listen: 0.0.0.0:4222\nauthorization { token: $TOKEN }\nTOKEN: s3cret\n",
        "listen: 0.0.0.0:4222\noperator: /etc/nats/operator.jwt\n",
        "listen: 0.0.0.0:4222\ntls { cert_file: a, key_file: b, ca_file: c, verify: true }\n",
        "ADDR: 127.0.0.1\nlisten: $ADDR\n",
        "listen: localhost:4222\n",
        "listen: \"[::1]:4222\"\n",
        "{ listen: 127.0.0.1:-1 }\n",
    ] {
        let (findings, _) = check(text, Some("2.9.10"));
        assert!(
            findings.iter().all(|finding| finding.ok),
            "{text}: {findings:?}"
        );
    }
}

#[test]
fn listen_hosts_are_read_from_each_form_of_listen() {
    let host_of = |text: &str| facts::read(&conf::parse(text).unwrap(), &mut Vec::new()).host;
    let set = |host: &str, from| Host::Set {
        host: host.to_owned(),
        from,
    };
    assert_eq!(
        host_of("listen: 127.0.0.1:4222"),
        set("127.0.0.1", "listen")
    );
    assert_eq!(host_of("listen: \"[::1]:4222\""), set("::1", "listen"));
    assert_eq!(
        host_of("listen: nats.local:4222"),
        set("nats.local", "listen")
    );
    assert_eq!(
        host_of("listen: 4222\nnet: 10.0.0.5"),
        set("10.0.0.5", "host")
    );
    assert_eq!(host_of("listen: \":4222\""), Host::Default);
    assert_eq!(host_of("listen: -1"), Host::Default);
    assert_eq!(host_of("port: 4222"), Host::Default);
    assert_eq!(
        host_of("listen: $ADDR"),
        Host::Unresolved("$ADDR".to_owned())
    );
}

#[test]
fn includes_are_followed_relative_to_the_including_file_and_a_missing_one_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("nats.conf"),
        "listen: 127.0.0.1:4222\ninclude conf.d/auth.conf\naccounts { include \"conf.d/accounts.conf\" }\ninclude missing.conf\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/auth.conf"),
        "authorization { users = [ {user: alice, password: pw} ] }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/accounts.conf"),
        "$SYS { users = [ {user: sys, password: x} ] }\n",
    )
    .unwrap();
    let mut notes = Vec::new();
    let config = facts::load(&dir.path().join("nats.conf"), 0, &mut notes).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("include \"missing.conf\" (line 4"),
        "{notes:?}"
    );
    let facts = facts::read(&config, &mut notes);
    assert_eq!(
        access(&facts, &version(Some("2.9.10"))),
        Access::Cve,
        "{facts:?}"
    );
}

#[test]
fn an_include_of_itself_stops_at_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loop.conf"), "include loop.conf\n").unwrap();
    let mut notes = Vec::new();
    facts::load(&dir.path().join("loop.conf"), 0, &mut notes).unwrap();
    assert!(
        notes.iter().any(|note| note.contains("includes deep")),
        "{notes:?}"
    );
}

#[test]
fn a_version_flag_must_be_a_version() {
    assert_eq!(version::parse("v2.9.10").as_deref(), Ok("2.9.10"));
    assert!(version::parse("latest").is_err());
}
