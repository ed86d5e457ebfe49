//! The fault suite's lost/duplicate checker, after Jepsen's and nats-server's own: every task
//! has a unique id and runs `it.ledger`, whose body records `(id, delivery, worker)` in the
//! `IT_LEDGER` stream (file storage, replicated like Celerity's streams, so it survives the fault
//! being injected). At the end the checker reads the ledger and each acknowledged task's final
//! record, and reports what was attempted, acknowledged at publish, completed, **lost**
//! (acknowledged, never completed), **unexpected** (run or recorded, never attempted; or a final
//! record that is not the task's own success) and executed more than once, with ids.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use celerity::{ApplyOptions, Client, EnqueueError, TaskState};
use celerity_it::LedgerEntry;
use celerity_proto::{ContentType, ResultRecord};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

/// The ledger's stream.
pub(crate) const LEDGER_STREAM: &str = "IT_LEDGER";

/// A plain NATS connection to `urls` (one server, or a cluster's comma-separated list).
pub(crate) async fn connect(urls: &str) -> async_nats::Client {
    let servers: Vec<&str> = urls.split(',').collect();
    async_nats::connect(servers.as_slice())
        .await
        .expect("connects to NATS")
}

/// Makes the ledger's stream on the server at `url` with `replicas` copies.
pub(crate) async fn make_ledger(url: &str, replicas: usize) -> jetstream::stream::Stream {
    let nats = connect(url).await;
    jetstream::new(nats)
        .get_or_create_stream(stream::Config {
            name: LEDGER_STREAM.to_owned(),
            subjects: vec![celerity_it::LEDGER_SUBJECTS.to_owned()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .expect("the ledger stream")
}

/// What the checker has sent: ids attempted, and those whose publish was acknowledged.
#[derive(Default)]
pub(crate) struct Checker {
    attempted: Mutex<BTreeSet<String>>,
    acknowledged: Mutex<BTreeSet<String>>,
    /// Publishes that failed, by error text (the count of each).
    refused: Mutex<BTreeMap<String, usize>>,
}

/// The checker's findings.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) attempted: usize,
    pub(crate) acknowledged: usize,
    pub(crate) completed: usize,
    /// Acknowledged at publish and never completed.
    pub(crate) lost: Vec<String>,
    /// Run or recorded and never attempted, or recorded other than as the task's own success.
    pub(crate) unexpected: Vec<String>,
    /// Ids run more than once, with their number of runs.
    pub(crate) duplicates: Vec<(String, usize)>,
    /// Ids run on a redelivery of their message (a delivery after the first).
    pub(crate) redelivered: Vec<String>,
    /// Ids whose publish failed but which ran anyway (stored, the acknowledgement lost).
    pub(crate) unacknowledged_completed: Vec<String>,
    /// Publishes refused (each retried by `send_many`), by error.
    pub(crate) refused: BTreeMap<String, usize>,
}

impl Checker {
    /// Sends one `it.ledger` task with id `id` returning `n` after `sleep_ms`, and records its
    /// attempt and, when the server acknowledged it, its acknowledgement.
    ///
    /// # Errors
    /// The publish's error (recorded too).
    pub(crate) async fn send(
        &self,
        client: &Client,
        id: &str,
        n: u64,
        sleep_ms: u64,
    ) -> Result<(), EnqueueError> {
        self.attempted
            .lock()
            .expect("attempted")
            .insert(id.to_owned());
        let sent = client
            .send_task(
                "it.ledger",
                json!([n, sleep_ms]),
                Value::Null,
                ApplyOptions::new().task_id(id),
            )
            .await;
        match &sent {
            Ok(_) => {
                self.acknowledged
                    .lock()
                    .expect("acknowledged")
                    .insert(id.to_owned());
            }
            Err(error) => {
                *self
                    .refused
                    .lock()
                    .expect("refused")
                    .entry(error.to_string())
                    .or_default() += 1;
            }
        }
        sent.map(drop)
    }

    /// Sends `count` tasks with ids `<prefix>-<i>` (each returning `i`), retrying each refused
    /// publish until `retry_for` has passed since its first try (a producer riding out an
    /// outage), and returns how long publishes were refused in all.
    pub(crate) async fn send_many(
        &self,
        client: &Client,
        prefix: &str,
        count: u64,
        sleep_ms: u64,
        retry_for: Duration,
    ) -> Duration {
        let mut outage = Duration::ZERO;
        for i in 0..count {
            let id = format!("{prefix}-{i}");
            let first_try = Instant::now();
            while self.send(client, &id, i, sleep_ms).await.is_err() {
                if first_try.elapsed() > retry_for {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let waited = first_try.elapsed();
            if !self
                .acknowledged
                .lock()
                .expect("acknowledged")
                .contains(&id)
                || waited > Duration::from_millis(200)
            {
                outage += waited;
            }
        }
        outage
    }

    /// Waits up to `within` for every acknowledged task's final record, reads the ledger of the
    /// server at `url`, and reports.
    pub(crate) async fn report(&self, url: &str, within: Duration) -> Report {
        let attempted = self.attempted.lock().expect("attempted").clone();
        let acknowledged = self.acknowledged.lock().expect("acknowledged").clone();
        let records = final_records(url, &acknowledged, within).await;
        let runs = read_ledger(url).await;
        let mut report = Report {
            attempted: attempted.len(),
            acknowledged: acknowledged.len(),
            refused: self.refused.lock().expect("refused").clone(),
            ..Report::default()
        };
        for id in &attempted {
            let expected = id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok());
            match records.get(id) {
                Some(record)
                    if record.state == TaskState::Success
                        && record.result.as_ref().and_then(Value::as_u64) == expected =>
                {
                    report.completed += 1;
                    if !acknowledged.contains(id) {
                        report.unacknowledged_completed.push(id.clone());
                    }
                }
                Some(_) => report.unexpected.push(id.clone()),
                None if acknowledged.contains(id) => report.lost.push(id.clone()),
                None => {}
            }
        }
        // Records of the checker's task that it never sent (other tasks of the scenario are not
        // the checker's to judge).
        let ledger_task = |record: &ResultRecord| {
            record.task.as_ref().map(|task| task.as_str()) == Some("it.ledger")
        };
        for (id, _) in records
            .iter()
            .filter(|(id, record)| !attempted.contains(*id) && ledger_task(record))
        {
            report.unexpected.push(id.clone());
        }
        for (id, entries) in &runs {
            if !attempted.contains(id) {
                report.unexpected.push(id.clone());
            }
            if entries.len() > 1 {
                report.duplicates.push((id.clone(), entries.len()));
            }
            if entries.iter().any(|entry| entry.delivery > 1) {
                report.redelivered.push(id.clone());
            }
        }
        report.unexpected.sort();
        report.unexpected.dedup();
        report
    }
}

/// Every final record in the results bucket of the server at `url`, read with one watch of the
/// whole bucket (its history first, then what is stored next) until each of `awaited` has one or
/// `within` has passed.
async fn final_records(
    url: &str,
    awaited: &BTreeSet<String>,
    within: Duration,
) -> BTreeMap<String, ResultRecord> {
    let js = jetstream::new(connect(url).await);
    let mut watch = retried("a watch of the results bucket", || async {
        js.get_key_value("celerity_results")
            .await?
            .watch_with_history(">")
            .await
            .map_err(Into::into)
    })
    .await;
    let deadline = tokio::time::Instant::now() + within;
    let mut records = BTreeMap::new();
    let mut missing = awaited.len();
    while missing > 0 {
        let Ok(next) = tokio::time::timeout_at(deadline, watch.next()).await else {
            break;
        };
        let Some(entry) = next else { break };
        let entry = entry.expect("a results bucket entry");
        let Some(record) = ContentType::sniff(&entry.value)
            .and_then(|codec| codec.decode::<ResultRecord>(&entry.value).ok())
        else {
            continue;
        };
        if record.state.is_ready() {
            let newly = records.insert(entry.key.clone(), record).is_none();
            if newly && awaited.contains(&entry.key) {
                missing -= 1;
            }
        }
    }
    records
}

/// The value of `attempt`, tried again for up to 30 s while JetStream is not answering yet (a
/// cluster just whole again elects its leaders).
async fn retried<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, async_nats::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) if Instant::now() > deadline => panic!("{what}: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every run in the ledger, by task id.
pub(crate) async fn read_ledger(url: &str) -> BTreeMap<String, Vec<LedgerEntry>> {
    let js = jetstream::new(connect(url).await);
    let (last, consumer) = retried("an ordered consumer of the ledger", || async {
        let mut stream = js.get_stream(LEDGER_STREAM).await?;
        let last = stream.info().await?.state.last_sequence;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await?;
        Ok((last, consumer))
    })
    .await;
    let mut runs: BTreeMap<String, Vec<LedgerEntry>> = BTreeMap::new();
    if last == 0 {
        return runs;
    }
    let mut messages = consumer.messages().await.expect("the ledger's messages");
    while let Some(message) = messages.try_next().await.expect("a ledger message") {
        let entry: LedgerEntry = serde_json::from_slice(&message.payload).expect("a ledger entry");
        runs.entry(entry.id.clone()).or_default().push(entry);
        let sequence = message.info().expect("message info").stream_sequence;
        if sequence >= last {
            break;
        }
    }
    runs
}

impl Report {
    /// Appends the report as one JSON line to the file named by `CELERITY_FAULT_REPORT`, when it
    /// is set: how `docs/reliability.md`'s table of the last run is made.
    pub(crate) fn record(
        &self,
        scenario: &str,
        server: &str,
        faults: &str,
        outage: Option<Duration>,
    ) {
        let Ok(path) = std::env::var("CELERITY_FAULT_REPORT") else {
            return;
        };
        let line = json!({
            "scenario": scenario,
            "server": server,
            "tasks": self.attempted,
            "faults": faults,
            "acknowledged": self.acknowledged,
            "completed": self.completed,
            "lost": self.lost.len(),
            "unexpected": self.unexpected.len(),
            "duplicate_executions": self.duplicates.len(),
            "redelivered": self.redelivered.len(),
            "outage_ms": outage.map(|outage| outage.as_millis() as u64),
        });
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the fault report file");
        writeln!(file, "{line}").expect("a report line");
    }

    /// Panics, with the report, unless nothing was lost, nothing unexpected ran, and (when
    /// `once` is set) no task ran twice.
    pub(crate) fn assert_clean(&self, once: bool) {
        assert!(
            self.lost.is_empty() && self.unexpected.is_empty(),
            "the checker found losses or unexpected runs:\n{self}"
        );
        if once {
            assert!(
                self.duplicates.is_empty(),
                "the checker found duplicate executions:\n{self}"
            );
        }
    }
}

/// The first ids of a list, for a report.
fn some(ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
    match ids.len() > shown.len() {
        true => format!("{} (+{} more)", shown.join(", "), ids.len() - shown.len()),
        false => shown.join(", "),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let duplicates: Vec<String> = self
            .duplicates
            .iter()
            .map(|(id, runs)| format!("{id} x{runs}"))
            .collect();
        writeln!(
            f,
            "attempted {} acknowledged {} completed {} lost {} unexpected {} duplicate executions {} redelivered {}",
            self.attempted,
            self.acknowledged,
            self.completed,
            self.lost.len(),
            self.unexpected.len(),
            self.duplicates.len(),
            self.redelivered.len()
        )?;
        for (name, ids) in [
            ("lost", some(&self.lost)),
            ("unexpected", some(&self.unexpected)),
            ("duplicates", some(&duplicates)),
            ("redelivered", some(&self.redelivered)),
            (
                "completed without acknowledgement",
                some(&self.unacknowledged_completed),
            ),
        ] {
            if !ids.is_empty() {
                writeln!(f, "  {name}: {ids}")?;
            }
        }
        for (error, count) in &self.refused {
            writeln!(f, "  publish refused x{count}: {error}")?;
        }
        Ok(())
    }
}
