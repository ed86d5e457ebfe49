//! What `celerity health` reads of the namespace's storage: for each stream and bucket, its use
//! against its size limit and, on a cluster, whether every copy is current.
//!
//! A stream at [`FULL_AT`] of its limit fails the check: a queue (discard new) is about to refuse
//! tasks, the dead-letter stream (discard old) to drop its oldest letters. A stream with no limit
//! fails too: a flood could fill the server's store, which stops JetStream for every user.

use async_nats::jetstream;
use celerity::StreamUse;
use celerity_proto::{Layout, QueueName};

use super::check::Check;

/// The share of its limit at which a stream's check fails.
const FULL_AT: f64 = 0.9;

/// Reads the use of each queue's stream and of every shared stream and bucket that exists.
pub(super) async fn read(
    js: &jetstream::Context,
    layout: &Layout,
    queues: &[QueueName],
) -> anyhow::Result<Vec<StreamUse>> {
    let names = queues
        .iter()
        .map(|queue| layout.queue_stream(queue))
        .chain(celerity::shared_streams(layout));
    let mut uses = Vec::new();
    for name in names {
        match js.get_stream(&name).await {
            Ok(stream) => uses.push(StreamUse::of(stream.cached_info())),
            Err(error) if crate::is_stream_not_found(&error) => {}
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!("cannot read stream {name}")));
            }
        }
    }
    Ok(uses)
}

/// The storage checks: one failure per stream that is nearly full, has no limit or has copies
/// behind; else one pass that names the fullest.
pub(super) fn checks(uses: &[StreamUse]) -> Vec<Check> {
    let failed: Vec<Check> = uses.iter().map(check).filter(|check| !check.ok).collect();
    if !failed.is_empty() {
        return failed;
    }
    let fullest = uses.iter().max_by(|a, b| {
        let fraction = |used: &StreamUse| used.fraction().unwrap_or(0.0);
        fraction(a).total_cmp(&fraction(b))
    });
    let reason = match fullest {
        Some(fullest) => format!(
            "{} streams and buckets, each under {:.0}% of its size limit (fullest: {}, {})",
            uses.len(),
            FULL_AT * 100.0,
            fullest.stream,
            check(fullest).reason
        ),
        None => "no stream or bucket of the namespace exists yet".to_owned(),
    };
    vec![Check::pass("storage", None, reason)]
}

/// The check of one stream's use and copies.
fn check(used: &StreamUse) -> Check {
    let name = used.stream.clone();
    let size = match used.max_bytes {
        Some(max) => format!(
            "{} messages, {} of {} ({:.0}%)",
            used.messages,
            bytes(used.bytes),
            bytes(max),
            used.fraction().unwrap_or(0.0) * 100.0
        ),
        None => format!(
            "{} messages, {}, no size limit",
            used.messages,
            bytes(used.bytes)
        ),
    };
    let copies = match (&used.leader, used.replicas) {
        (Some(leader), replicas) if replicas > 1 => {
            format!("; {replicas} replicas, led by {leader}")
        }
        _ => String::new(),
    };
    let reason = format!("{size}{copies}");
    if used.max_bytes.is_none() {
        return Check::fail_named(
            "storage",
            name.clone(),
            reason,
            format!(
                "a flood could fill the server's store; set a limit: `nats stream edit {name} --max-bytes 1GiB` (streams made by this version of Celerity have one)"
            ),
        );
    }
    if used.fraction().is_some_and(|fraction| fraction >= FULL_AT) {
        let fix = match used.discards_new {
            true => format!(
                "at its limit it refuses new messages (producers get a queue-full error): let workers drain it, or raise the limit (the worker's --*-max-bytes flags before it is made, `nats stream edit {name} --max-bytes` after)"
            ),
            false => format!(
                "at its limit it drops its oldest messages: read and purge them (`celerity dead-letters`), or raise the limit with `nats stream edit {name} --max-bytes`"
            ),
        };
        return Check::fail_named("storage", name, format!("nearly full: {reason}"), fix);
    }
    if !used.lagging.is_empty() {
        return Check::fail_named(
            "storage",
            name,
            format!("{reason}; copies offline or behind: {}", used.lagging.join(", ")),
            "start the servers named, or wait for them to catch up; with one of three copies down the stream still works, with two it stops".to_owned(),
        );
    }
    Check::pass_named("storage", name, reason)
}

/// A byte count for people (`12.5 MiB`).
fn bytes(count: u64) -> String {
    bytesize::ByteSize::b(count).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(bytes: u64, max_bytes: Option<u64>, discards_new: bool) -> StreamUse {
        StreamUse {
            stream: "CELERITY_Q_default".to_owned(),
            messages: 3,
            bytes,
            max_bytes,
            discards_new,
            replicas: 3,
            leader: Some("n1".to_owned()),
            lagging: Vec::new(),
        }
    }

    #[test]
    fn streams_within_their_limits_make_one_check_naming_the_fullest() {
        let mut fuller = used(3 << 20, Some(4 << 20), true);
        fuller.stream = "CELERITY_DLQ".to_owned();
        let checks = checks(&[used(1 << 20, Some(4 << 20), true), fuller]);
        assert_eq!(checks.len(), 1, "{checks:?}");
        assert!(
            checks[0].reason.starts_with("2 streams and buckets"),
            "{checks:?}"
        );
        assert!(
            checks[0]
                .reason
                .contains("fullest: CELERITY_DLQ, 3 messages, 3.0 MiB of 4.0 MiB (75%)"),
            "{checks:?}"
        );
    }

    #[test]
    fn a_stream_below_its_limit_passes_with_its_use() {
        let check = check(&used(1 << 20, Some(4 << 20), true));
        assert!(check.ok, "{check:?}");
        assert!(
            check.reason.contains("1.0 MiB of 4.0 MiB (25%)"),
            "{check:?}"
        );
        assert!(check.reason.contains("3 replicas, led by n1"), "{check:?}");
    }

    #[test]
    fn a_nearly_full_or_unlimited_or_lagging_stream_fails_with_a_fix() {
        let full = check(&used(95, Some(100), true));
        assert!(
            !full.ok && full.fix.as_deref().unwrap().contains("refuses new"),
            "{full:?}"
        );
        let dropping = check(&used(95, Some(100), false));
        assert!(
            dropping
                .fix
                .as_deref()
                .unwrap()
                .contains("drops its oldest"),
            "{dropping:?}"
        );
        let unlimited = check(&used(95, None, true));
        assert!(
            !unlimited.ok && unlimited.reason.contains("no size limit"),
            "{unlimited:?}"
        );
        let mut behind = used(1, Some(100), true);
        behind.lagging = vec!["n3".to_owned()];
        let behind = check(&behind);
        assert!(
            !behind.ok && behind.reason.contains("behind: n3"),
            "{behind:?}"
        );
    }
}
