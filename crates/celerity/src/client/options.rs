//! [`ApplyOptions`]: the options of one call, and their check into what an envelope carries.
//!
//! Checking is pure (the time is passed in), so its rules are unit tested here; routing and
//! publishing are the client's.

use std::time::{Duration, SystemTime};

use celerity_proto::{ContentType, Priority, QueueName, TaskId};

use crate::clock::unix_ms;
use crate::error::EnqueueError;
use crate::nats::headers::check_user_header;

/// Options of one call, as in Celery's `apply_async`.
///
/// ```
/// use celerity::ApplyOptions;
/// let options = ApplyOptions::new().queue("high").priority(9).header("X-Tenant", "acme");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    task_id: Option<String>,
    queue: Option<String>,
    priority: Option<u8>,
    headers: Vec<(String, String)>,
    content_type: Option<ContentType>,
    ignore_result: Option<bool>,
    eta: Option<EtaSpec>,
    expires: Option<EtaSpec>,
}

/// When a task may start.
#[derive(Debug, Clone, Copy)]
enum EtaSpec {
    /// This long after it is sent.
    Countdown(Duration),
    /// At this time.
    At(SystemTime),
}

/// How far in the past an `eta` may be before it is refused as a mistake (clock skew between
/// hosts is expected to be smaller).
pub const ETA_PAST_TOLERANCE: Duration = Duration::from_secs(60);

impl ApplyOptions {
    /// Default options: a fresh UUIDv7 id, the task's queue, priority 0, no extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `id` as the task id (checked when the task is sent).
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }

    /// Sends to `queue` instead of the task's own or the default queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the priority, 0 (lowest, the default) to 9 (highest).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Adds a user header, passed to the task in `TaskContext::headers`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Encodes this task's body and result as `content_type`.
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = Some(content_type);
        self
    }

    /// Starts the task no sooner than `countdown` after it is sent (it waits in the delayed
    /// stream, not in a worker).
    pub fn countdown(mut self, countdown: Duration) -> Self {
        self.eta = Some(EtaSpec::Countdown(countdown));
        self
    }

    /// Starts the task no sooner than `eta`. An `eta` more than [`ETA_PAST_TOLERANCE`] in the
    /// past is refused when sending; a smaller one means now.
    pub fn eta(mut self, eta: SystemTime) -> Self {
        self.eta = Some(EtaSpec::At(eta));
        self
    }

    /// A task not started within `expires` of being sent is not run: it ends REVOKED with reason
    /// `expired`.
    pub fn expires(mut self, expires: Duration) -> Self {
        self.expires = Some(EtaSpec::Countdown(expires));
        self
    }

    /// A task not started by `expires` is not run: it ends REVOKED with reason `expired`.
    pub fn expires_at(mut self, expires: SystemTime) -> Self {
        self.expires = Some(EtaSpec::At(expires));
        self
    }

    /// Stores no result for this call (for `send_task`, where the task's own option is unknown).
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = Some(ignore);
        self
    }
}

/// The options of one call, checked: what the client routes and puts in the envelope.
#[derive(Debug)]
pub(crate) struct CheckedOptions {
    pub(crate) task_id: TaskId,
    /// The queue named at the call, which beats every route.
    pub(crate) queue: Option<QueueName>,
    pub(crate) priority: Option<Priority>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content_type: Option<ContentType>,
    pub(crate) eta_ms: Option<u64>,
    pub(crate) expires_ms: Option<u64>,
}

impl ApplyOptions {
    /// Whether this call stores no result, when the call says so.
    pub(crate) fn ignores_result(&self) -> Option<bool> {
        self.ignore_result
    }

    /// Checks every option against its rule, with `now_ms` as the time of sending; a call without
    /// a task id gets a fresh UUIDv7.
    ///
    /// # Errors
    /// [`EnqueueError::InvalidOption`] for an invalid task id, queue or priority,
    /// [`EnqueueError::InvalidHeader`] for a reserved or malformed header, and
    /// [`EnqueueError::EtaInPast`] for an `eta` too far in the past.
    pub(crate) fn check(self, now_ms: u64) -> Result<CheckedOptions, EnqueueError> {
        let task_id = self
            .task_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let task_id =
            TaskId::new(task_id).map_err(|error| EnqueueError::invalid("task id", error))?;
        let queue = self
            .queue
            .as_deref()
            .map(QueueName::new)
            .transpose()
            .map_err(|error| EnqueueError::invalid("queue", error))?;
        let priority = self
            .priority
            .map(Priority::new)
            .transpose()
            .map_err(|error| EnqueueError::invalid("priority", error))?;
        for (name, value) in &self.headers {
            check_user_header(name, value).map_err(|reason| EnqueueError::InvalidHeader {
                name: name.clone(),
                reason,
            })?;
        }
        Ok(CheckedOptions {
            task_id,
            queue,
            priority,
            headers: self.headers,
            content_type: self.content_type,
            eta_ms: self.eta.map(|eta| eta_ms(eta, now_ms)).transpose()?,
            expires_ms: self.expires.map(|expires| expires.at_ms(now_ms)),
        })
    }
}

impl EtaSpec {
    /// The time this names, in milliseconds since the epoch, for a call sent at `now_ms`.
    fn at_ms(self, now_ms: u64) -> u64 {
        match self {
            EtaSpec::Countdown(after) => now_ms.saturating_add(after.as_millis() as u64),
            EtaSpec::At(at) => unix_ms(at),
        }
    }
}

/// When a task may start, refusing an `eta` more than [`ETA_PAST_TOLERANCE`] before `now_ms`.
fn eta_ms(eta: EtaSpec, now_ms: u64) -> Result<u64, EnqueueError> {
    let eta_ms = eta.at_ms(now_ms);
    let tolerance_ms = ETA_PAST_TOLERANCE.as_millis() as u64;
    if matches!(eta, EtaSpec::At(_)) && eta_ms.saturating_add(tolerance_ms) < now_ms {
        return Err(EnqueueError::EtaInPast {
            eta_ms,
            late_by: Duration::from_millis(now_ms - eta_ms),
            tolerance: ETA_PAST_TOLERANCE,
        });
    }
    Ok(eta_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;

    #[test]
    fn a_countdown_counts_from_the_time_of_sending() {
        let checked = ApplyOptions::new()
            .countdown(Duration::from_secs(5))
            .expires(Duration::from_secs(60))
            .check(NOW_MS)
            .expect("the options are valid");
        assert_eq!(checked.eta_ms, Some(NOW_MS + 5_000));
        assert_eq!(checked.expires_ms, Some(NOW_MS + 60_000));
    }

    #[test]
    fn an_eta_within_the_tolerance_is_kept_and_one_beyond_it_is_refused() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let recent = NOW_MS - 1_000;
        let checked = ApplyOptions::new()
            .eta(at(recent))
            .check(NOW_MS)
            .expect("an eta a second ago is within the tolerance");
        assert_eq!(checked.eta_ms, Some(recent));
        let stale = NOW_MS - ETA_PAST_TOLERANCE.as_millis() as u64 - 1;
        let error = ApplyOptions::new()
            .eta(at(stale))
            .check(NOW_MS)
            .expect_err("an eta past the tolerance is refused");
        assert!(
            matches!(error, EnqueueError::EtaInPast { eta_ms, .. } if eta_ms == stale),
            "{error}"
        );
    }

    #[test]
    fn each_invalid_option_names_its_kind() {
        let error = ApplyOptions::new().priority(10).check(NOW_MS).unwrap_err();
        assert!(
            matches!(
                error,
                EnqueueError::InvalidOption {
                    option: "priority",
                    ..
                }
            ),
            "{error}"
        );
        let error = ApplyOptions::new()
            .queue("no.dots")
            .check(NOW_MS)
            .unwrap_err();
        assert!(
            matches!(
                error,
                EnqueueError::InvalidOption {
                    option: "queue",
                    ..
                }
            ),
            "{error}"
        );
        let error = ApplyOptions::new()
            .header("Celerity-Id", "x")
            .check(NOW_MS)
            .unwrap_err();
        assert!(
            matches!(error, EnqueueError::InvalidHeader { ref name, .. } if name == "Celerity-Id"),
            "{error}"
        );
    }

    #[test]
    fn a_call_without_a_task_id_gets_a_fresh_one() {
        let first = ApplyOptions::new()
            .check(NOW_MS)
            .expect("no options are valid");
        let second = ApplyOptions::new()
            .check(NOW_MS)
            .expect("no options are valid");
        assert_ne!(first.task_id, second.task_id);
    }
}
