//! One check of `celerity health` and its outcome, below every module that makes checks.

use celerity_proto::QueueName;
use serde::Serialize;

/// One check's outcome.
#[derive(Debug, Serialize)]
pub(super) struct Check {
    /// `server`, `security`, `jetstream`, `queues`, `queue`, `workers`, `stalled` or `storage`.
    pub(super) check: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) queue: Option<String>,
    /// The stream or bucket's stream a `storage` check is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stream: Option<String>,
    pub(super) ok: bool,
    /// What was found.
    pub(super) reason: String,
    /// What to do, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) fix: Option<String>,
}

impl Check {
    pub(super) fn pass(check: &'static str, queue: Option<&QueueName>, reason: String) -> Self {
        Self {
            check,
            queue: queue.map(ToString::to_string),
            stream: None,
            ok: true,
            reason,
            fix: None,
        }
    }

    pub(super) fn fail(
        check: &'static str,
        queue: Option<&QueueName>,
        reason: String,
        fix: String,
    ) -> Self {
        Self {
            ok: false,
            fix: Some(fix),
            ..Self::pass(check, queue, reason)
        }
    }

    /// A passed check about one stream.
    pub(super) fn pass_named(check: &'static str, stream: String, reason: String) -> Self {
        Self {
            stream: Some(stream),
            ..Self::pass(check, None, reason)
        }
    }

    /// A failed check about one stream.
    pub(super) fn fail_named(
        check: &'static str,
        stream: String,
        reason: String,
        fix: String,
    ) -> Self {
        Self {
            stream: Some(stream),
            ..Self::fail(check, None, reason, fix)
        }
    }
}
