//! What the connected nats-server can be relied on for, from its version.

/// The first nats-server release whose answer to a pull request that a message does not fit
/// (`409 Message Size Exceeds MaxBytes`) leaves the consumer as it was. Before it, such an answer
/// for a redelivery stepped the consumer's delivery sequence back (before 2.10.14, nats-server
/// #5305) or dropped the redelivery (2.10.14 and 2.10.15): the redelivery was lost until the next
/// AckWait, and the message before it could be delivered again as a first delivery while it still
/// ran. Fixed by "Fixed delivery counts on failed deliveries" (commit 5c1acc7bf, first tagged in
/// v2.10.16; 8272e749d on the main line, in 2.11.0).
const MAX_BYTES_PROBES_SINCE: (u64, u64, u64) = (2, 10, 16);

/// The environment variable that forces [`NewTaskSignal::Republish`], whatever the server's
/// version: `CELERITY_NEW_TASK_SIGNAL=republish` (`doorbells` is accepted as well; `auto` or an
/// empty value chooses by version). For a cluster whose servers are being upgraded across
/// 2.10.16: a pull request is served by the consumer's leader, which may run another version than
/// the server a worker connects to. Set it on every worker and producer, since a producer may be
/// the one that creates a queue's stream.
pub const NEW_TASK_SIGNAL_ENV: &str = "CELERITY_NEW_TASK_SIGNAL";

/// How a worker learns that a priority level has new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewTaskSignal {
    /// A max-bytes probe, a long-poll pull request for at most one byte, waits on each level not
    /// known to have work; the server answers it `409 Message Size Exceeds MaxBytes` when a task
    /// is there, without delivering it. Costs the server nothing per task. Needs nats-server
    /// 2.10.16 or later.
    MaxBytesProbe,
    /// The queue stream republishes the headers of every stored task to the level's doorbell
    /// subject, which the workers subscribe to. Works on every supported server; costs the server
    /// about as much per task as the task's own store.
    Republish,
}

impl NewTaskSignal {
    /// The signal to use with a server of `version` (as in its INFO, e.g. `2.10.16` or
    /// `2.11.0-RC.1`): max-bytes probes where the server answers them safely, the republish
    /// elsewhere, and for a version that cannot be read.
    pub fn for_server(version: &str) -> Self {
        match parse_version(version) {
            Some(found) if found >= MAX_BYTES_PROBES_SINCE => Self::MaxBytesProbe,
            _ => Self::Republish,
        }
    }

    /// The signal to use with the server `client` is connected to: the republish if
    /// [`NEW_TASK_SIGNAL_ENV`] says `republish` (or `doorbells`), else as
    /// [`NewTaskSignal::for_server`] decides.
    pub fn for_client(client: &async_nats::Client) -> Self {
        Self::chosen(
            std::env::var(NEW_TASK_SIGNAL_ENV).ok().as_deref(),
            &client.server_info().version,
        )
    }

    fn chosen(forced: Option<&str>, version: &str) -> Self {
        match forced.map(str::trim) {
            Some("republish" | "doorbells") => Self::Republish,
            None | Some("" | "auto") => Self::for_server(version),
            Some(other) => {
                tracing::warn!(
                    value = other,
                    "{NEW_TASK_SIGNAL_ENV} is neither `republish` (or `doorbells`) nor `auto`; ignored"
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
    fn max_bytes_probes_from_2_10_16_on() {
        for (version, signal) in [
            ("2.9.10", NewTaskSignal::Republish),
            ("2.10.14", NewTaskSignal::Republish),
            ("2.10.15", NewTaskSignal::Republish),
            ("2.10.16", NewTaskSignal::MaxBytesProbe),
            ("2.10.25", NewTaskSignal::MaxBytesProbe),
            ("2.11.0-RC.1", NewTaskSignal::MaxBytesProbe),
            ("v2.12.0-dev", NewTaskSignal::MaxBytesProbe),
            ("2.15.1", NewTaskSignal::MaxBytesProbe),
            ("3.0.0", NewTaskSignal::MaxBytesProbe),
            ("1.99.99", NewTaskSignal::Republish),
            ("", NewTaskSignal::Republish),
            ("2.x.1", NewTaskSignal::Republish),
            ("2.10", NewTaskSignal::Republish),
            ("2.10.16-beta.2", NewTaskSignal::MaxBytesProbe),
            ("2.10.15+build.7", NewTaskSignal::Republish),
            (" v2.10.16\n", NewTaskSignal::MaxBytesProbe),
        ] {
            assert_eq!(NewTaskSignal::for_server(version), signal, "{version}");
        }
    }

    #[test]
    fn the_republish_can_be_forced() {
        let chosen = |forced| NewTaskSignal::chosen(forced, "2.15.1");
        assert_eq!(chosen(Some("republish")), NewTaskSignal::Republish);
        assert_eq!(chosen(Some("doorbells")), NewTaskSignal::Republish);
        assert_eq!(chosen(Some(" doorbells\n")), NewTaskSignal::Republish);
        assert_eq!(chosen(None), NewTaskSignal::MaxBytesProbe);
        assert_eq!(chosen(Some("auto")), NewTaskSignal::MaxBytesProbe);
        assert_eq!(chosen(Some("bells")), NewTaskSignal::MaxBytesProbe);
        assert_eq!(
            chosen(Some("max-bytes-probe")),
            NewTaskSignal::MaxBytesProbe
        );
        // Max-bytes probes cannot be forced on a server that mishandles them.
        assert_eq!(
            NewTaskSignal::chosen(Some("max-bytes-probe"), "2.9.10"),
            NewTaskSignal::Republish
        );
    }

    #[test]
    fn the_old_value_doorbells_still_forces_the_republish() {
        for version in ["2.9.10", "2.15.1"] {
            let chosen = |forced| NewTaskSignal::chosen(forced, version);
            assert_eq!(chosen(Some("doorbells")), NewTaskSignal::Republish);
            assert_eq!(chosen(Some(" doorbells\n")), NewTaskSignal::Republish);
        }
    }
}
