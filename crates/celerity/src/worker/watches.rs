//! The settings watch: stored rate limits and priority weights, applied to a running worker as
//! they change in the settings bucket. (The revoked ids have their own watch, in
//! `worker::revocations`.)
//!
//! A value that is not a setting is logged and skipped, never applied and never fatal.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use crate::worker::{SharedHandle, limits, settings};

/// Applies every change of the settings bucket, for as long as the worker runs.
///
/// # Cancel safety
/// Cancel safe: it only reads the bucket, and a setting is applied whole or not at all.
pub(super) async fn watch_settings(shared: SharedHandle) {
    loop {
        match shared.settings_bucket.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(entry) => {
                            apply_setting(&shared.limits, &shared.priority_weights, &entry)
                        }
                        Err(error) => {
                            tracing::warn!(error = %error, "the settings watch failed; restarting it");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot watch settings; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Applies one entry of the settings bucket; a value that is not a setting is logged and skipped.
pub(super) fn apply_setting(
    limits: &limits::RateLimits,
    weights: &settings::PriorityWeights,
    entry: &kv::Entry,
) {
    if entry.key.starts_with("rate_limit.") {
        if let Some(value) = decode_setting(entry, celerity_proto::RateLimitSetting::key) {
            limits.apply(&entry.key, entry.revision, value);
        }
    } else if entry.key.starts_with("priority_weights.")
        && let Some(value) = decode_setting(entry, celerity_proto::PriorityWeightsSetting::key)
    {
        weights.apply(&entry.key, entry.revision, value);
    }
}

/// The value of a settings entry: `Some(None)` for a deleted key, `Some(Some(..))` for a readable
/// value stored under its own key, `None` (logged) for anything else.
fn decode_setting<T: serde::de::DeserializeOwned>(
    entry: &kv::Entry,
    key_of: fn(&T) -> String,
) -> Option<Option<T>> {
    if entry.operation != kv::Operation::Put {
        return Some(None);
    }
    match serde_json::from_slice::<T>(&entry.value) {
        Ok(setting) if key_of(&setting) == entry.key => Some(Some(setting)),
        Ok(_) => {
            tracing::warn!(key = %entry.key, "ignoring a stored setting whose key does not match its value");
            None
        }
        Err(error) => {
            tracing::warn!(key = %entry.key, error = %error, "ignoring a stored setting that cannot be read");
            None
        }
    }
}
