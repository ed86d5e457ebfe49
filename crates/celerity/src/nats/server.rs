//! What the connected nats-server can be relied on for, from its version.

/// The first nats-server release whose answer to a pull request that a message does not fit
/// (`409 Message Size Exceeds MaxBytes`) leaves the consumer as it was. Before it, such an answer
/// for a redelivery stepped the consumer's delivery sequence back (before 2.10.14, nats-server
/// #5305) or dropped the redelivery (2.10.14 and 2.10.15): the redelivery was lost until the next
/// AckWait, and the message before it could be delivered again as a first delivery while it still
/// ran. Fixed by "Fixed delivery counts on failed deliveries" (commit 5c1acc7bf, first tagged in
/// v2.10.16; 8272e749d on the main line, in 2.11.0).
const BELL_REQUESTS_SINCE: (u64, u64, u64) = (2, 10, 16);

/// The environment variable that forces doorbells, whatever the server's version:
/// `CELERITY_NEW_TASK_SIGNAL=doorbells`. For a cluster whose servers are being upgraded across
/// 2.10.16: a pull request is served by the consumer's leader, which may run another version than
/// the server a worker connects to. Set it on every worker and producer, since a producer may be
/// the one that creates a queue's stream.
pub const NEW_TASK_SIGNAL_ENV: &str = "CELERITY_NEW_TASK_SIGNAL";

/// How a worker learns that a priority level has new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewTaskSignal {
    /// A long-poll pull request for at most one byte waits on each level not known to have work;
    /// the server answers it `409 Message Size Exceeds MaxBytes` when a task is there, without
    /// delivering it. Costs the server nothing per task. Needs nats-server 2.10.16 or later.
    BellRequests,
    /// The queue stream republishes the headers of every stored task to the level's doorbell
    /// subject, which the workers subscribe to. Works on every supported server; costs the server
    /// about as much per task as the task's own store.
    Doorbells,
}

impl NewTaskSignal {
    /// The signal to use with a server of `version` (as in its INFO, e.g. `2.10.16` or
    /// `2.11.0-RC.1`): bell requests where the server answers them safely, doorbells elsewhere,
    /// and for a version that cannot be read.
    pub fn for_server(version: &str) -> Self {
        match parse_version(version) {
            Some(found) if found >= BELL_REQUESTS_SINCE => Self::BellRequests,
            _ => Self::Doorbells,
        }
    }

    /// The signal to use with the server `client` is connected to: doorbells if
    /// [`NEW_TASK_SIGNAL_ENV`] says `doorbells`, else as [`NewTaskSignal::for_server`] decides.
    pub fn for_client(client: &async_nats::Client) -> Self {
        Self::chosen(
            std::env::var(NEW_TASK_SIGNAL_ENV).ok().as_deref(),
            &client.server_info().version,
        )
    }

    fn chosen(forced: Option<&str>, version: &str) -> Self {
        match forced.map(str::trim) {
            Some("doorbells") => Self::Doorbells,
            None | Some("" | "auto") => Self::for_server(version),
            Some(other) => {
                tracing::warn!(
                    value = other,
                    "{NEW_TASK_SIGNAL_ENV} is neither `doorbells` nor `auto`; ignored"
                );
                Self::for_server(version)
            }
        }
    }
}

/// `major.minor.patch` of a server version (semver, with or without a leading `v`); a pre-release
/// or build suffix is ignored (`2.11.0-RC.1` is 2.11.0).
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let version = version.trim();
    let version = version.strip_prefix('v').unwrap_or(version);
    let parsed = semver::Version::parse(version).ok()?;
    Some((parsed.major, parsed.minor, parsed.patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bell_requests_from_2_10_16_on() {
        for (version, signal) in [
            ("2.9.10", NewTaskSignal::Doorbells),
            ("2.10.14", NewTaskSignal::Doorbells),
            ("2.10.15", NewTaskSignal::Doorbells),
            ("2.10.16", NewTaskSignal::BellRequests),
            ("2.10.25", NewTaskSignal::BellRequests),
            ("2.11.0-RC.1", NewTaskSignal::BellRequests),
            ("v2.12.0-dev", NewTaskSignal::BellRequests),
            ("2.15.1", NewTaskSignal::BellRequests),
            ("3.0.0", NewTaskSignal::BellRequests),
            ("1.99.99", NewTaskSignal::Doorbells),
            ("", NewTaskSignal::Doorbells),
            ("2.x.1", NewTaskSignal::Doorbells),
            ("2.10", NewTaskSignal::Doorbells),
            ("2.10.16-beta.2", NewTaskSignal::BellRequests),
            ("2.10.15+build.7", NewTaskSignal::Doorbells),
            (" v2.10.16\n", NewTaskSignal::BellRequests),
        ] {
            assert_eq!(NewTaskSignal::for_server(version), signal, "{version}");
        }
    }

    #[test]
    fn doorbells_can_be_forced() {
        let chosen = |forced| NewTaskSignal::chosen(forced, "2.15.1");
        assert_eq!(chosen(Some("doorbells")), NewTaskSignal::Doorbells);
        assert_eq!(chosen(Some(" doorbells\n")), NewTaskSignal::Doorbells);
        assert_eq!(chosen(None), NewTaskSignal::BellRequests);
        assert_eq!(chosen(Some("auto")), NewTaskSignal::BellRequests);
        assert_eq!(chosen(Some("bells")), NewTaskSignal::BellRequests);
        // Bell requests cannot be forced on a server that mishandles them.
        assert_eq!(
            NewTaskSignal::chosen(Some("bell-requests"), "2.9.10"),
            NewTaskSignal::Doorbells
        );
    }
}
