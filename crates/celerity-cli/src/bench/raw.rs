//! The raw JetStream references: the same work as each Celerity figure, done with async-nats
//! directly in this process, on streams and a bucket of their own.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;

use super::cpu::{Processes, Used};
use super::tasks::now_us;

const STREAM: &str = "BENCH_RAW";
const SUBJECT: &str = "bench.raw.tasks";
const HOP_STREAM: &str = "BENCH_RAW_HOPS";
const BUCKET: &str = "bench_raw_results";

/// Whether a raw publish-cost stream republishes a doorbell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doorbell {
    Republish,
    None,
}

/// Whether an end-to-end figure stores each task's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Results {
    /// A result per task, waited for by the producer.
    Stored,
    /// None (`ignore_result`): done when the queue is empty.
    Ignored,
}
/// How often completion is polled where it is read from the server.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// The raw references' JetStream context.
pub(crate) struct Raw {
    js: jetstream::Context,
    /// Copies of each stream and bucket: those of Celerity's in the same run.
    replicas: usize,
}

impl Raw {
    pub(crate) fn new(client: async_nats::Client, replicas: usize) -> Self {
        Self {
            js: jetstream::new(client),
            replicas,
        }
    }

    /// A new, empty work-queue stream named `name` on `subjects`.
    async fn fresh_stream(
        &self,
        name: &str,
        subjects: Vec<String>,
    ) -> anyhow::Result<stream::Stream> {
        let _ = self.js.delete_stream(name).await;
        self.js
            .create_stream(stream::Config {
                name: name.to_owned(),
                subjects,
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the stream {name}"))
    }

    /// A new, empty KV bucket configured as Celerity's results bucket. It is made as a stream
    /// because async-nats's `create_key_value` fails on nats-server 2.9 (STACK.md section 4).
    async fn fresh_bucket(&self) -> anyhow::Result<kv::Store> {
        let stream = format!("KV_{BUCKET}");
        let _ = self.js.delete_stream(&stream).await;
        self.js
            .create_stream(stream::Config {
                name: stream,
                subjects: vec![format!("$KV.{BUCKET}.>")],
                max_messages_per_subject: 1,
                duplicate_window: Duration::from_secs(120),
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await
            .context("cannot create the raw results bucket")?;
        self.js
            .get_key_value(BUCKET)
            .await
            .context("cannot open the raw results bucket")
    }

    /// A pull consumer on `stream` for `filter` that may hold `in_flight` unacknowledged messages.
    async fn consumer(
        stream: &stream::Stream,
        name: &str,
        filter: &str,
        in_flight: usize,
    ) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: filter.to_owned(),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: in_flight as i64,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the consumer {name}"))
    }

    /// Publishes `n` messages of 100 B to `subject`, with up to `window` acknowledgements awaited at
    /// once.
    async fn publish(
        &self,
        subject: &str,
        n: usize,
        window: usize,
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let payload = bytes::Bytes::from(vec![b'x'; 100]);
        futures_util::stream::iter(0..n)
            .map(|_| {
                let payload = payload.clone();
                async move {
                    let acked = self.js.publish(subject.to_owned(), payload).await?.await;
                    bar.inc(1);
                    acked.map(drop).map_err(anyhow::Error::from)
                }
            })
            .buffer_unordered(window)
            .try_collect::<()>()
            .await
            .context("a raw publish failed")
    }

    /// Starts the raw publish figure: a fresh stream that [`Raw::publish_part`] fills.
    pub(crate) async fn publish_begin(&self) -> anyhow::Result<()> {
        self.fresh_stream(STREAM, vec![SUBJECT.to_owned()])
            .await
            .map(drop)
    }

    /// Publishes `n` messages of 100 B with `window` acknowledgements in flight to the stream of
    /// [`Raw::publish_begin`], which keeps them; returns the time.
    pub(crate) async fn publish_part(
        &self,
        n: usize,
        window: usize,
        bar: &ProgressBar,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.publish(SUBJECT, n, window, bar).await?;
        Ok(started.elapsed())
    }

    /// Ends the raw publish figure: deletes its stream.
    pub(crate) async fn publish_end(&self) {
        self.js.delete_stream(STREAM).await.ok();
    }

    /// What one `delay()` costs the server, piece by piece: `n` publishes with `window` in flight
    /// of 100 B alone, with a task's headers (`headers`, with its `Nats-Msg-Id`) on a stream that
    /// de-duplicates, with the doorbell (a headers-only republish) as well, a PENDING create alone,
    /// and what `delay()` does on this server: the task's publish and its PENDING create at once,
    /// with the doorbell where queue streams republish it (nats-server before 2.10.16, see
    /// `celerity::NewTaskSignal`). Returns (id, label, publishes per second, CPU each process used).
    pub(crate) async fn publish_costs(
        &self,
        n: usize,
        window: usize,
        headers: &async_nats::HeaderMap,
        processes: &Processes,
        bar: &ProgressBar,
    ) -> anyhow::Result<Vec<(&'static str, &'static str, f64, Used)>> {
        const STEPS: [(&str, &str); 5] = [
            ("plain", "100 B, no headers (the raw publish figure)"),
            (
                "headers",
                "+ a task's headers and Nats-Msg-Id, de-duplicated",
            ),
            ("doorbell", "+ the doorbell (headers-only republish)"),
            ("pending", "a PENDING create alone (KV create)"),
            ("delay", ""),
        ];
        let doorbells = celerity::NewTaskSignal::for_client(&self.js.client())
            == celerity::NewTaskSignal::Republish;
        let mut rates = Vec::new();
        for (id, label) in STEPS {
            let label = match id {
                "delay" if doorbells => "the last two at once, as delay() does here",
                "delay" => "task (no doorbell) + PENDING at once, as delay() does here",
                _ => label,
            };
            bar.set_position(0);
            bar.set_message(format!("publish costs: {id}"));
            let republish = match id == "doorbell" || (id == "delay" && doorbells) {
                true => Doorbell::Republish,
                false => Doorbell::None,
            };
            self.fresh_cost_stream(republish).await?;
            let bucket = self.fresh_bucket().await?;
            let before = processes.read();
            let started = Instant::now();
            self.publish_cost_step(id, n, window, headers, &bucket, bar)
                .await?;
            let elapsed = started.elapsed();
            rates.push((
                id,
                label,
                n as f64 / elapsed.as_secs_f64().max(1e-9),
                before.until(&processes.read()),
            ));
        }
        self.js.delete_stream(STREAM).await.ok();
        self.js.delete_stream(format!("KV_{BUCKET}")).await.ok();
        Ok(rates)
    }

    /// A fresh stream for one step of [`Raw::publish_costs`], de-duplicating, with the doorbell
    /// (a headers-only republish) when asked.
    async fn fresh_cost_stream(&self, doorbell: Doorbell) -> anyhow::Result<()> {
        let _ = self.js.delete_stream(STREAM).await;
        self.js
            .create_stream(stream::Config {
                name: STREAM.to_owned(),
                subjects: vec![format!("{SUBJECT}.*")],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: Duration::from_secs(120),
                republish: (doorbell == Doorbell::Republish).then(|| stream::Republish {
                    source: format!("{SUBJECT}.*"),
                    destination: "bench.raw.bell.{{wildcard(1)}}".to_owned(),
                    headers_only: true,
                }),
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await
            .context("cannot create the raw stream")?;
        Ok(())
    }

    /// The `n` publishes of step `id` of [`Raw::publish_costs`], `window` in flight: 100 B (with
    /// the task's `headers` but for `plain`), each with a PENDING create in `bucket` for `pending`
    /// (alone) and `delay`.
    async fn publish_cost_step(
        &self,
        id: &'static str,
        n: usize,
        window: usize,
        headers: &async_nats::HeaderMap,
        bucket: &kv::Store,
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let payload = bytes::Bytes::from(vec![b'x'; 100]);
        let record = bytes::Bytes::from(vec![b'p'; 120]);
        futures_util::stream::iter(0..n)
            .map(|_| {
                let (payload, record) = (payload.clone(), record.clone());
                let task_id = uuid::Uuid::now_v7().to_string();
                let mut headers = headers.clone();
                async move {
                    let publish = async {
                        if id == "pending" {
                            return Ok(());
                        }
                        let mut message =
                            jetstream::message::PublishMessage::build().payload(payload);
                        if id != "plain" {
                            headers.insert("Celerity-Id", task_id.as_str());
                            headers.insert("Nats-Msg-Id", task_id.as_str());
                            message = message.headers(headers);
                        }
                        self.js
                            .send_publish(format!("{SUBJECT}.5"), message)
                            .await?
                            .await
                            .map(drop)
                            .map_err(anyhow::Error::from)
                    };
                    let create = async {
                        if matches!(id, "pending" | "delay") {
                            bucket.create(&task_id, record).await?;
                        }
                        Ok::<_, anyhow::Error>(())
                    };
                    let done = tokio::try_join!(publish, create).map(drop);
                    bar.inc(1);
                    done
                }
            })
            .buffer_unordered(window)
            .try_collect::<()>()
            .await
            .with_context(|| format!("a raw publish ({id}) failed"))
    }

    /// `n` messages published and consumed with `in_flight` at once: pull, (with `results`) a KV put
    /// of about 50 B, ack. Done when a client watching the bucket has seen every put, or (without
    /// results) when the stream is empty. Returns the time from the first publish.
    pub(crate) async fn end_to_end(
        &self,
        n: usize,
        window: usize,
        in_flight: usize,
        results: Results,
        bar: &ProgressBar,
    ) -> anyhow::Result<Duration> {
        let stream = self.fresh_stream(STREAM, vec![SUBJECT.to_owned()]).await?;
        let bucket = self.fresh_bucket().await?;
        let consumer = Self::consumer(&stream, "raw-worker", SUBJECT, in_flight).await?;
        let watcher = if results == Results::Stored {
            let mut watch = bucket
                .watch_all()
                .await
                .context("cannot watch the raw bucket")?;
            Some(tokio::spawn(async move {
                let mut seen = 0;
                while seen < n {
                    match watch.next().await {
                        Some(Ok(_)) => seen += 1,
                        Some(Err(error)) => return Err(anyhow!("the raw watch failed: {error}")),
                        None => return Err(anyhow!("the raw watch ended")),
                    }
                }
                Ok(())
            }))
        } else {
            None
        };
        let value = bytes::Bytes::from(vec![b'r'; 50]);
        let worker = tokio::spawn(async move {
            let messages = consumer.messages().await.context("cannot pull")?;
            messages
                .map_err(anyhow::Error::from)
                .try_for_each_concurrent(in_flight, |message| {
                    let bucket = bucket.clone();
                    let value = value.clone();
                    async move {
                        if results == Results::Stored {
                            let key = message
                                .info()
                                .map_err(|error| anyhow!("{error}"))?
                                .stream_sequence
                                .to_string();
                            bucket.put(key, value).await?;
                        }
                        message.ack().await.map_err(|error| anyhow!("{error}"))
                    }
                })
                .await
        });
        let started = Instant::now();
        self.publish(SUBJECT, n, window, bar).await?;
        match watcher {
            Some(watcher) => watcher.await.context("the raw watcher panicked")??,
            None => wait_empty(&self.js, STREAM).await?,
        }
        let elapsed = started.elapsed();
        worker.abort();
        self.js.delete_stream(STREAM).await.ok();
        self.js.delete_stream(format!("KV_{BUCKET}")).await.ok();
        Ok(elapsed)
    }

    /// Chains of `steps` hops, run by [`Hops::run`]: each hop receives the message, acks it and
    /// publishes the next (awaiting its acknowledgement), and the next hop receives it.
    pub(crate) async fn hops(&self, steps: usize) -> anyhow::Result<Hops> {
        let stream = self
            .fresh_stream(HOP_STREAM, vec!["bench.raw.hop.*".to_owned()])
            .await?;
        let (done_tx, done_rx) = tokio::sync::mpsc::channel::<Vec<u64>>(1);
        let mut hops = Vec::new();
        for step in 0..steps {
            let consumer = Self::consumer(
                &stream,
                &format!("hop-{step}"),
                &format!("bench.raw.hop.{step}"),
                1,
            )
            .await?;
            let js = self.js.clone();
            let done = done_tx.clone();
            let last = step + 1 == steps;
            hops.push(tokio::spawn(async move {
                let mut messages = consumer.messages().await.context("cannot pull")?;
                while let Some(message) = messages.next().await {
                    let message = message.map_err(|error| anyhow!("{error}"))?;
                    let mut received: Vec<u64> = serde_json::from_slice(&message.payload)?;
                    received.push(now_us());
                    message.ack().await.map_err(|error| anyhow!("{error}"))?;
                    if last {
                        let _ = done.send(received).await;
                    } else {
                        let payload = serde_json::to_vec(&received)?;
                        js.publish(format!("bench.raw.hop.{}", step + 1), payload.into())
                            .await?
                            .await?;
                    }
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        Ok(Hops {
            js: self.js.clone(),
            done: done_rx,
            hops,
        })
    }
}

/// The raw hops' consumers, waiting for chains; stopped and deleted on drop.
pub(crate) struct Hops {
    js: jetstream::Context,
    done: tokio::sync::mpsc::Receiver<Vec<u64>>,
    hops: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Hops {
    /// Runs one chain; returns its hop times, receive to receive.
    pub(crate) async fn run(&mut self) -> anyhow::Result<Vec<Duration>> {
        self.js
            .publish("bench.raw.hop.0", bytes::Bytes::from_static(b"[]"))
            .await?
            .await?;
        let received = tokio::time::timeout(Duration::from_secs(30), self.done.recv())
            .await
            .map_err(|_| anyhow!("a raw chain did not finish within 30 s"))?
            .ok_or_else(|| anyhow!("the raw hops stopped"))?;
        Ok(gaps(&received).collect())
    }

    /// Stops the hops and deletes their stream.
    pub(crate) async fn finish(self) {
        for hop in &self.hops {
            hop.abort();
        }
        self.js.delete_stream(HOP_STREAM).await.ok();
    }
}

/// The time between consecutive timestamps (microseconds).
pub(crate) fn gaps(stamps: &[u64]) -> impl Iterator<Item = Duration> + '_ {
    stamps
        .windows(2)
        .map(|pair| Duration::from_micros(pair[1].saturating_sub(pair[0])))
}

/// Waits until stream `name` holds no message (every one acknowledged, in a work-queue stream).
pub(crate) async fn wait_empty(js: &jetstream::Context, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut stream = js
        .get_stream(name)
        .await
        .with_context(|| format!("cannot read the stream {name}"))?;
    loop {
        if stream.info().await?.state.messages == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the stream {name} was not emptied within 10 minutes"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
