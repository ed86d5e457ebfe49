//! Runtime settings: values that workers apply while they run and that outlive them (rate limits,
//! priority weights), kept in the settings KV bucket (`<ns>_settings`) and watched by every worker.

use serde::{Deserialize, Serialize};

use crate::rate::Rate;

/// Who a setting applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum SettingScope {
    /// Each worker separately (every worker, also those started later).
    Workers,
    /// One worker; the others keep theirs. It wins over a `Workers` value.
    Worker {
        /// The worker's token ([`worker_token`] of its hostname).
        worker: String,
    },
    /// All workers together (rate limits only: the state is kept in NATS).
    Cluster,
}

/// A stored rate limit: it overrides the task's own option (`rate_limit` for the worker scopes,
/// `global_rate_limit` for the cluster) until it is deleted. A worker-scoped value wins over a
/// workers-scoped one.
///
/// ```
/// use celerity_proto::{SettingScope, RateLimitSetting};
/// let setting = RateLimitSetting::new("tasks.call_api", SettingScope::Workers, Some("50/m".parse()?));
/// assert_eq!(setting.key(), "rate_limit.workers.tasks=2Ecall_api");
/// let json = serde_json::to_value(&setting).unwrap();
/// assert_eq!(json, serde_json::json!({"v": 1, "task": "tasks.call_api", "scope": "workers", "rate": "50/m"}));
/// # Ok::<(), celerity_proto::InvalidRate>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateLimitSetting {
    /// Protocol version.
    pub v: u32,
    /// The task name.
    pub task: String,
    /// Who it applies to.
    #[serde(flatten)]
    pub scope: SettingScope,
    /// The rate; `None` (JSON `null`) is no limit, even if the task's option sets one.
    pub rate: Option<Rate>,
}

impl RateLimitSetting {
    /// A version-1 setting.
    pub fn new(task: impl Into<String>, scope: SettingScope, rate: Option<Rate>) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            task: task.into(),
            scope,
            rate,
        }
    }

    /// Its key in the settings bucket: `rate_limit.workers.<task>`,
    /// `rate_limit.worker.<worker token>.<task>` or `rate_limit.cluster.<task>`, the task name
    /// escaped with [`kv_key_token`].
    pub fn key(&self) -> String {
        rate_limit_key(&self.task, &self.scope)
    }
}

/// The settings-bucket key of the rate limit of `task` for `scope`.
pub fn rate_limit_key(task: &str, scope: &SettingScope) -> String {
    let task = kv_key_token(task);
    match scope {
        SettingScope::Workers => format!("rate_limit.workers.{task}"),
        SettingScope::Worker { worker } => {
            format!("rate_limit.worker.{}.{task}", worker_token(worker))
        }
        SettingScope::Cluster => format!("rate_limit.cluster.{task}"),
    }
}

/// Stored priority weights: how a worker picks among the priority levels that have work. `None`
/// (JSON `null`) is strict priorities; ten weights (index = priority) is weighted mode. It
/// overrides the worker's `--priority-mode` / `--priority-weights` until it is deleted.
///
/// ```
/// use celerity_proto::{PriorityWeightsSetting, SettingScope};
/// let setting = PriorityWeightsSetting::new(SettingScope::Workers, Some([1, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
/// assert_eq!(setting.key(), "priority_weights.workers");
/// let json = serde_json::to_value(&setting).unwrap();
/// assert_eq!(json, serde_json::json!({"v": 1, "scope": "workers", "weights": [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]}));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PriorityWeightsSetting {
    /// Protocol version.
    pub v: u32,
    /// Who it applies to (`Workers` or `Worker`).
    #[serde(flatten)]
    pub scope: SettingScope,
    /// The weights of priorities 0 to 9, or `None` for strict priorities.
    pub weights: Option<[u32; 10]>,
}

impl PriorityWeightsSetting {
    /// A version-1 setting.
    pub fn new(scope: SettingScope, weights: Option<[u32; 10]>) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            scope,
            weights,
        }
    }

    /// Its key in the settings bucket: `priority_weights.workers` or
    /// `priority_weights.worker.<worker token>` (`priority_weights.cluster` means nothing).
    pub fn key(&self) -> String {
        priority_weights_key(&self.scope)
    }
}

/// The settings-bucket key of the priority weights for `scope`.
pub fn priority_weights_key(scope: &SettingScope) -> String {
    match scope {
        SettingScope::Workers => "priority_weights.workers".to_owned(),
        SettingScope::Worker { worker } => {
            format!("priority_weights.worker.{}", worker_token(worker))
        }
        SettingScope::Cluster => "priority_weights.cluster".to_owned(),
    }
}

/// A name as one KV key token: `A-Z a-z 0-9 - _` are kept and every other byte of its UTF-8 is
/// written `=XX` (upper-case hex), so `app::add` is `app=3A=3Aadd` and `tasks.add` is
/// `tasks=2Eadd`.
///
/// ```
/// assert_eq!(celerity_proto::kv_key_token("a.b=c"), "a=2Eb=3Dc");
/// ```
pub fn kv_key_token(name: &str) -> String {
    use std::fmt::Write as _;
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            token.push(char::from(byte));
        } else {
            let _ = write!(token, "={byte:02X}");
        }
    }
    token
}

/// The subject token of a worker's hostname, written as task names are in keys
/// ([`kv_key_token`]): `A-Z a-z 0-9 - _` are kept and every other byte becomes `=XX`, so
/// `celerity@host.1` is `celerity=40host=2E1`.
///
/// No two hostnames share a token (`=` itself is escaped), so no two workers share a control
/// subject or a per-worker setting; and the token is both a subject token and a KV key token.
///
/// ```
/// assert_eq!(celerity_proto::worker_token("celerity@host.1"), "celerity=40host=2E1");
/// assert_ne!(celerity_proto::worker_token("a.b"), celerity_proto::worker_token("a_b"));
/// ```
pub fn worker_token(hostname: &str) -> String {
    kv_key_token(hostname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_tokens_of_different_hostnames_differ_and_are_single_tokens() {
        let hostnames = [
            "a.b", "a_b", "a=2Eb", "a=b", "a b", "a*b", "a>b", "é", "=C3=A9",
        ];
        let tokens: std::collections::HashSet<String> = hostnames
            .iter()
            .map(|hostname| worker_token(hostname))
            .collect();
        assert_eq!(tokens.len(), hostnames.len(), "{tokens:?}");
        for token in &tokens {
            assert!(
                token
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_=".contains(&byte)),
                "{token} is not one subject token of KV key characters"
            );
        }
    }

    #[test]
    fn keys_name_scope_and_escaped_task() {
        let worker = SettingScope::Worker {
            worker: "celerity@host.1".to_owned(),
        };
        assert_eq!(
            rate_limit_key("app::add", &worker),
            "rate_limit.worker.celerity=40host=2E1.app=3A=3Aadd"
        );
        assert_eq!(
            rate_limit_key("é", &SettingScope::Cluster),
            "rate_limit.cluster.=C3=A9"
        );
    }

    #[test]
    fn settings_round_trip_with_their_scope() {
        for scope in [
            SettingScope::Workers,
            SettingScope::Cluster,
            SettingScope::Worker {
                worker: "w1".to_owned(),
            },
        ] {
            let setting = RateLimitSetting::new("tasks.a", scope, None);
            let json = serde_json::to_string(&setting).unwrap();
            assert_eq!(
                serde_json::from_str::<RateLimitSetting>(&json).unwrap(),
                setting
            );
        }
        let json = r#"{"v":1,"task":"t","scope":"worker","worker":"w1","rate":"10/s"}"#;
        let setting: RateLimitSetting = serde_json::from_str(json).unwrap();
        assert_eq!(setting.key(), "rate_limit.worker.w1.t");
        assert!(
            serde_json::from_str::<RateLimitSetting>(
                r#"{"v":1,"task":"t","scope":"all","rate":null}"#
            )
            .is_err()
        );
    }
}
