//! What the connected nats-server can be relied on for, from its version.

/// The first nats-server release whose answer to a pull request that a message does not fit
/// (`409 Message Size Exceeds MaxBytes`) leaves the consumer as it was. Before it, such an answer
/// for a redelivery stepped the consumer's delivery sequence back (nats-server #5305, fixed in
/// 2.10.14, and commit 8272e749d, in 2.10.18): the redelivery was lost until the next AckWait,
/// and the message before it was delivered again as a first delivery, even while it still ran.
const BELL_REQUESTS_SINCE: (u64, u64, u64) = (2, 10, 18);

/// How a worker learns that a priority level has new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewTaskSignal {
    /// A long-poll pull request for at most one byte waits on each level not known to have work;
    /// the server answers it `409 Message Size Exceeds MaxBytes` when a task is there, without
    /// delivering it. Costs the server nothing per task. Needs nats-server 2.10.18 or later.
    BellRequests,
    /// The queue stream republishes the headers of every stored task to the level's doorbell
    /// subject, which the workers subscribe to. Works on every supported server; costs the server
    /// about as much per task as the task's own store.
    Doorbells,
}

impl NewTaskSignal {
    /// The signal to use with a server of `version` (as in its INFO, e.g. `2.10.18` or
    /// `2.11.0-RC.1`): bell requests where the server answers them safely, doorbells elsewhere,
    /// and for a version that cannot be read.
    pub fn for_server(version: &str) -> Self {
        match parse_version(version) {
            Some(found) if found >= BELL_REQUESTS_SINCE => Self::BellRequests,
            _ => Self::Doorbells,
        }
    }

    /// The signal to use with the server `client` is connected to.
    pub fn for_client(client: &async_nats::Client) -> Self {
        Self::for_server(&client.server_info().version)
    }
}

/// `major.minor.patch` of a server version; a pre-release or build suffix of the patch is
/// ignored (`2.11.0-RC.1` is 2.11.0).
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let version = version.trim().trim_start_matches('v');
    let mut parts = version.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?;
    let digits = patch
        .find(|c: char| !c.is_ascii_digit())
        .map_or(patch, |end| &patch[..end]);
    Some((major, minor, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bell_requests_from_2_10_18_on() {
        for (version, signal) in [
            ("2.9.10", NewTaskSignal::Doorbells),
            ("2.10.17", NewTaskSignal::Doorbells),
            ("2.10.18", NewTaskSignal::BellRequests),
            ("2.10.24", NewTaskSignal::BellRequests),
            ("2.11.0-RC.1", NewTaskSignal::BellRequests),
            ("v2.12.0-dev", NewTaskSignal::BellRequests),
            ("2.15.1", NewTaskSignal::BellRequests),
            ("3.0.0", NewTaskSignal::BellRequests),
            ("1.99.99", NewTaskSignal::Doorbells),
            ("", NewTaskSignal::Doorbells),
            ("2.x.1", NewTaskSignal::Doorbells),
            ("2.10", NewTaskSignal::Doorbells),
        ] {
            assert_eq!(NewTaskSignal::for_server(version), signal, "{version}");
        }
    }
}
