//! Validated names: task ids, task names, queue names, namespaces and priorities.
//!
//! Each is a newtype checked once in its constructor, so code further in takes it without re-checking.
//! The rules come from where the value ends up: a task id is a KV key and a `Nats-Msg-Id`, a queue
//! name is a subject token and part of a stream name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that does not satisfy the rules of the name it was meant to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct InvalidName {
    /// Which kind of name was being built (`task id`, `queue name`, ...).
    pub kind: &'static str,
    /// The offending value.
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

fn check(
    kind: &'static str,
    value: &str,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
    rule: &'static str,
) -> Result<(), InvalidName> {
    if value.is_empty() || value.len() > max_len || !value.chars().all(allowed) {
        return Err(InvalidName {
            kind,
            value: value.to_owned(),
            rule,
        });
    }
    Ok(())
}

macro_rules! string_name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidName;
            fn from_str(value: &str) -> Result<Self, InvalidName> {
                Self::new(value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_name! {
    /// A task id: 1 to 128 characters of `A-Z a-z 0-9 - _ =`.
    ///
    /// It is the result's KV key and the message's `Nats-Msg-Id`, so it must be a valid KV key and
    /// contain no subject separators.
    /// Celerity generates UUIDv7 strings; other producers may use any id that fits the rule.
    ///
    /// ```
    /// # use celerity_proto::TaskId;
    /// assert!(TaskId::new("0190a5b2-7c1e-7f00-8000-000000000001").is_ok());
    /// assert!(TaskId::new("has.dots").is_err());
    /// ```
    TaskId
}

impl TaskId {
    /// Checks `value` against the task id rule.
    ///
    /// # Errors
    /// [`InvalidName`] when the value is empty, longer than 128 bytes or has another character.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
        let value = value.into();
        check(
            "task id",
            &value,
            128,
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '='),
            "use 1 to 128 characters of A-Z a-z 0-9 - _ =",
        )?;
        Ok(Self(value))
    }
}

string_name! {
    /// A registered task name such as `tasks.add` or `myapp::tasks::add`: 1 to 256 printable
    /// characters, no whitespace.
    ///
    /// ```
    /// # use celerity_proto::TaskName;
    /// assert!(TaskName::new("myapp::tasks::add").is_ok());
    /// assert!(TaskName::new("two words").is_err());
    /// ```
    TaskName
}

impl TaskName {
    /// Checks `value` against the task name rule.
    ///
    /// # Errors
    /// [`InvalidName`] when the value is empty, longer than 256 bytes or has whitespace or control
    /// characters.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
        let value = value.into();
        check(
            "task name",
            &value,
            256,
            |c| !c.is_whitespace() && !c.is_control(),
            "use 1 to 256 characters without whitespace or control characters",
        )?;
        Ok(Self(value))
    }
}

string_name! {
    /// A queue name: 1 to 64 characters of `A-Z a-z 0-9 - _`.
    ///
    /// It is a subject token and part of the queue's stream name, so it can hold no `.`, `*` or `>`.
    ///
    /// ```
    /// # use celerity_proto::QueueName;
    /// assert_eq!(QueueName::new("high")?.as_str(), "high");
    /// assert!(QueueName::new("a.b").is_err());
    /// # Ok::<(), celerity_proto::InvalidName>(())
    /// ```
    QueueName
}

impl QueueName {
    /// Checks `value` against the queue name rule.
    ///
    /// # Errors
    /// [`InvalidName`] when the value is empty, longer than 64 bytes or has another character.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
        let value = value.into();
        check(
            "queue name",
            &value,
            64,
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'),
            "use 1 to 64 characters of A-Z a-z 0-9 - _",
        )?;
        Ok(Self(value))
    }
}

impl Default for QueueName {
    fn default() -> Self {
        Self("default".to_owned())
    }
}

string_name! {
    /// The namespace that prefixes every subject, stream and bucket, so several applications can
    /// share one NATS account: 1 to 32 characters of `a-z 0-9 -`, default `celerity`.
    ///
    /// No `_`: stream names join the namespace and queue names with `_`, and a namespace with one
    /// could name another namespace's stream (`a_q` + queue `b` against `a` + queue `Q_b`).
    ///
    /// ```
    /// # use celerity_proto::Namespace;
    /// assert_eq!(Namespace::default().as_str(), "celerity");
    /// assert!(Namespace::new("Shop").is_err());
    /// assert!(Namespace::new("a_q").is_err());
    /// ```
    Namespace
}

impl Namespace {
    /// Checks `value` against the namespace rule.
    ///
    /// # Errors
    /// [`InvalidName`] when the value is empty, longer than 32 bytes or has another character.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
        let value = value.into();
        check(
            "namespace",
            &value,
            32,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "use 1 to 32 characters of a-z 0-9 -",
        )?;
        Ok(Self(value))
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self("celerity".to_owned())
    }
}

/// A task priority from 0 (lowest, the default) to 9 (highest), as in Celery.
///
/// ```
/// # use celerity_proto::Priority;
/// assert_eq!(Priority::new(9)?.get(), 9);
/// assert!(Priority::new(10).is_err());
/// # Ok::<(), celerity_proto::InvalidName>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    /// The highest priority.
    pub const MAX: Priority = Priority(9);

    /// Checks that `value` is in `0..=9`.
    ///
    /// # Errors
    /// [`InvalidName`] naming the value when it is above 9.
    pub fn new(value: u8) -> Result<Self, InvalidName> {
        if value > Self::MAX.0 {
            return Err(InvalidName {
                kind: "priority",
                value: value.to_string(),
                rule: "use 0 (lowest) to 9 (highest)",
            });
        }
        Ok(Self(value))
    }

    /// The priority as a number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Every priority, highest first: the order a worker drains its levels in.
    pub fn all_descending() -> impl Iterator<Item = Priority> {
        (0..=Self::MAX.0).rev().map(Priority)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Priority {
    type Err = InvalidName;
    fn from_str(value: &str) -> Result<Self, InvalidName> {
        let number = value.parse::<u8>().map_err(|_| InvalidName {
            kind: "priority",
            value: value.to_owned(),
            rule: "use 0 (lowest) to 9 (highest)",
        })?;
        Self::new(number)
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(u8::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_subject_and_key_separators() {
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b", &"x".repeat(129)] {
            assert!(TaskId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TaskId::new("AbC-09_=").is_ok());
    }

    #[test]
    fn names_deserialize_through_their_rules() {
        assert!(serde_json::from_str::<QueueName>("\"a.b\"").is_err());
        assert!(serde_json::from_str::<Priority>("12").is_err());
        assert_eq!(serde_json::from_str::<Priority>("7").unwrap().get(), 7);
    }

    #[test]
    fn priority_parse_names_the_value() {
        let error = "42".parse::<Priority>().unwrap_err();
        assert_eq!(error.value, "42");
        assert!(error.to_string().contains("42"));
    }
}
