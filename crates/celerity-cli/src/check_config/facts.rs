//! What `celerity check-config` reads of a nats-server config: the file and the files it
//! includes, then the few facts its checks judge (the listen host, the `authorization` block, the
//! accounts and their users, the operator, `no_auth_user`, client certificates).

use std::path::Path;

use anyhow::Context as _;

use super::conf::{self, Entry, Map, Value};

/// How deep `include`s are followed.
const MAX_INCLUDE_DEPTH: usize = 10;

/// What the checks read of a config.
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub(super) host: Host,
    pub(super) authorization: Option<Authorization>,
    /// Each account's name and number of users.
    pub(super) accounts: Vec<(String, usize)>,
    pub(super) system_account: Option<String>,
    pub(super) operator: bool,
    pub(super) no_auth_user: Option<String>,
    pub(super) client_certificates: bool,
}

/// The client listen address.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) enum Host {
    /// Set by the option named.
    Set { host: String, from: &'static str },
    /// Not set: nats-server binds every interface (unless started with `-a`).
    #[default]
    Default,
    /// A `$VARIABLE` the file does not define.
    Unresolved(String),
}

/// What the top-level `authorization` block holds.
#[derive(Debug, Default)]
pub(super) struct Authorization {
    pub(super) users: usize,
    pub(super) user: bool,
    pub(super) token: bool,
    pub(super) callout: bool,
}

/// Reads `path` and the files it includes.
pub(super) fn load(path: &Path, depth: usize, notes: &mut Vec<String>) -> anyhow::Result<Map> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let map = conf::parse(&text)
        .with_context(|| format!("{} is not a nats-server config", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(expand(map, dir, depth, notes))
}

/// `map` with each `include` replaced by the entries of the file it names, in nested maps too.
fn expand(map: Map, dir: &Path, depth: usize, notes: &mut Vec<String>) -> Map {
    let mut entries = Vec::new();
    for entry in map.entries {
        match entry {
            Entry::Include { path, line } => {
                let included = dir.join(&path);
                let loaded = match depth < MAX_INCLUDE_DEPTH {
                    true => load(&included, depth + 1, notes).map_err(|error| format!("{error:#}")),
                    false => Err(format!("more than {MAX_INCLUDE_DEPTH} includes deep")),
                };
                match loaded {
                    Ok(map) => entries.extend(map.entries),
                    Err(why) => notes.push(format!(
                        "include {path:?} (line {line} of a file in {}) not followed: {why}; what it holds is not checked",
                        dir.display()
                    )),
                }
            }
            Entry::Pair { key, value } => entries.push(Entry::Pair {
                key,
                value: expand_value(value, dir, depth, notes),
            }),
        }
    }
    Map { entries }
}

fn expand_value(value: Value, dir: &Path, depth: usize, notes: &mut Vec<String>) -> Value {
    match value {
        Value::Map(map) => Value::Map(expand(map, dir, depth, notes)),
        Value::Array(values) => Value::Array(
            values
                .into_iter()
                .map(|value| expand_value(value, dir, depth, notes))
                .collect(),
        ),
        other => other,
    }
}

/// The text of `value`, following variables the file defines at its top level; `Err` names a
/// variable it does not define.
fn text_of(value: &Value, top: &Map) -> Option<Result<String, String>> {
    let mut value = value;
    for _ in 0..MAX_INCLUDE_DEPTH {
        match value {
            Value::Text(text) => return Some(Ok(text.clone())),
            Value::Variable(name) => match top.pairs().filter(|(key, _)| key == name).last() {
                Some((_, defined)) => value = defined,
                None => return Some(Err(format!("${name}"))),
            },
            Value::Map(_) | Value::Array(_) => return None,
        }
    }
    None
}

/// What the checks need of `config`.
pub(super) fn read(config: &Map, notes: &mut Vec<String>) -> Facts {
    let text = |key: &str| config.get(key).and_then(|value| text_of(value, config));
    let count = |map: &Map, key: &str| match map.get(key) {
        Some(Value::Array(values)) => values.len(),
        _ => 0,
    };
    let authorization = config
        .get("authorization")
        .and_then(Value::as_map)
        .map(|block| Authorization {
            users: count(block, "users"),
            user: block.get("user").is_some(),
            token: block.get("token").is_some(),
            callout: block.get("auth_callout").is_some(),
        });
    let accounts = config
        .get("accounts")
        .and_then(Value::as_map)
        .map(|accounts| {
            accounts
                .pairs()
                .map(|(name, account)| {
                    (
                        name.to_owned(),
                        account.as_map().map_or(0, |map| count(map, "users")),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tls = config.get("tls").and_then(Value::as_map);
    let enabled = |key: &str| {
        tls.and_then(|tls| tls.get(key))
            .and_then(|value| text_of(value, config))
            .is_some_and(|text| {
                text.is_ok_and(|text| {
                    matches!(text.to_ascii_lowercase().as_str(), "true" | "yes" | "on")
                })
            })
    };
    let no_auth_user = text("no_auth_user").map(|text| text.unwrap_or_else(|variable| variable));
    Facts {
        host: host(text("listen"), text("host").or_else(|| text("net")), notes),
        authorization,
        accounts,
        system_account: text("system_account").and_then(Result::ok),
        operator: ["operator", "operators", "trusted", "trusted_keys"]
            .iter()
            .any(|key| config.get(key).is_some()),
        no_auth_user,
        client_certificates: enabled("verify") || enabled("verify_and_map"),
    }
}

/// The client listen host from `listen` (`host:port`, `[v6]:port` or a port) or else `host`.
fn host(
    listen: Option<Result<String, String>>,
    host: Option<Result<String, String>>,
    notes: &mut Vec<String>,
) -> Host {
    let from_listen = match listen {
        Some(Err(variable)) => return unresolved(variable, "listen", notes),
        Some(Ok(listen)) => listen_host(&listen),
        None => None,
    };
    match (from_listen, host) {
        (Some(host), _) => Host::Set {
            host,
            from: "listen",
        },
        (None, Some(Ok(host))) => Host::Set { host, from: "host" },
        (None, Some(Err(variable))) => unresolved(variable, "host", notes),
        (None, None) => Host::Default,
    }
}

fn unresolved(variable: String, key: &str, notes: &mut Vec<String>) -> Host {
    notes.push(format!(
        "`{key}` is {variable}, which the file does not define (nats-server then reads the environment): counted as not loopback"
    ));
    Host::Unresolved(variable)
}

/// The host part of a `listen` value; `None` for a port alone or an empty host.
fn listen_host(listen: &str) -> Option<String> {
    let listen = listen.trim();
    if listen
        .trim_start_matches('-')
        .chars()
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let host = match listen.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => listen.rsplit_once(':').map_or(listen, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_owned())
}
