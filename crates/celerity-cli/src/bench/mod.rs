//! `celerity bench`: each Celerity figure measured beside the raw JetStream figure for the same
//! work, in one run and one process (the worker apart, so its memory can be read), so machine
//! noise cancels in the ratio. `docs/performance.md` has the results and what bounds each figure.

mod args;
mod cpu;
mod raw;
mod report;
mod sink;
pub(crate) mod tasks;
mod topology;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use celerity::{ApplyOptions, AsyncResult, Chain, Chord, Client, Group, NatsConfig};
use celerity_proto::{Layout, QueueName};
use futures_util::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};

pub(crate) use self::args::BenchArgs;
use self::args::Part;
use self::cpu::{PerTask, Processes, Used};
use self::raw::{Raw, Results};
use self::report::{Figure, Report, Sizes, Target};
use self::tasks::{WorkerProcess, memory, noop, noop_ignored, now_us, one, stamp, step, total};
use self::topology::Servers;

/// How long any one result may take.
const RESULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Steps in each chain of the latency figure.
const CHAIN_STEPS: usize = 10;
/// Turns of raw publishes and Celerity sends in the publish figure.
const PUBLISH_ROUNDS: usize = 10;
/// Priority-9 probes sent behind the backlog.
const PROBES: usize = 25;

/// Runs the bench; prints the table and writes the JSON. Returns false only on failure.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    let sizes = args.sizes()?;
    if cfg!(debug_assertions) && !sizes.quick {
        eprintln!("warning: this is a debug build; build with --release for meaningful figures");
    }
    let servers = Servers::start(&args).await?;
    let url = servers.url();
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let sink = sizes.trace.map(|_| sink::TraceSink::start()).transpose()?;
    let tracing = sink
        .as_ref()
        .zip(sizes.trace)
        .map(|(sink, ratio)| sink::Tracing {
            endpoint: sink.endpoint().to_owned(),
            ratio,
        });
    let (mut bench, mut report) = Bench::connect(&servers, sizes, tracing).await?;
    bench.check_replicas().await?;
    bench.provision_queues().await?;
    bench.clean_queues().await?;
    bench.measure(&args, &mut report, dir.path(), url).await?;
    bench.check_replicas().await?;
    bench.clean_queues().await?;
    if let (Some(sink), Some(ratio)) = (&sink, sizes.trace) {
        println!(
            "tracing: {ratio} of tasks sampled; {} OTLP exports taken by the bench's sink",
            sink.exports()
        );
    }

    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json()?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    drop(servers);
    Ok(true)
}

/// What every figure needs.
struct Bench {
    client: Client,
    raw: Raw,
    js: async_nats::jetstream::Context,
    layout: Layout,
    sizes: Sizes,
    /// Whose CPU time the throughput figures are split into.
    processes: Processes,
    /// Where the producer and the worker export their spans (`--trace`).
    tracing: Option<sink::Tracing>,
}

impl Bench {
    /// Connects the bench's Celerity client and its raw client to `servers`; the report starts
    /// with the server's version and the servers' topology.
    async fn connect(
        servers: &Servers,
        sizes: Sizes,
        tracing: Option<sink::Tracing>,
    ) -> anyhow::Result<(Self, Report)> {
        let app = tasks::app_with(sizes.events, sizes.replicas, tracing.as_ref())?;
        let client = app
            .client(&NatsConfig::new(servers.url()))
            .await
            .context("the bench client cannot connect")?;
        let nats = async_nats::connect(topology::server_list(servers.url()).as_slice())
            .await
            .context("the raw client cannot connect")?;
        let info = nats.server_info();
        let topology = servers.topology(&info, sizes.replicas)?;
        let report = Report::new(sizes, info.version.clone(), topology);
        let bench = Bench {
            client,
            raw: Raw::new(nats.clone(), sizes.replicas),
            js: async_nats::jetstream::new(nats),
            layout: Layout::new(app.settings().namespace.clone()),
            sizes,
            processes: Processes {
                servers: servers.pids(),
                worker: None,
            },
            tracing,
        };
        Ok((bench, report))
    }

    /// Fails when a stream or bucket of the bench's namespace keeps other than `--replicas`
    /// copies; run before the figures (a stream an earlier run left) and after (every stream the
    /// run made).
    async fn check_replicas(&self) -> anyhow::Result<()> {
        let mut streams = vec![
            self.queue_stream("default")?,
            self.queue_stream(tasks::PUBLISH_QUEUE)?,
        ];
        streams.extend(celerity::shared_streams(&self.layout));
        topology::check_replicas(&self.js, &streams, self.sizes.replicas).await
    }

    /// Measures every part `--only` asks for (all by default) into `report`, with a worker
    /// process of its own, and the worker's memory.
    async fn measure(
        &mut self,
        args: &BenchArgs,
        report: &mut Report,
        dir: &Path,
        url: &str,
    ) -> anyhow::Result<()> {
        let sizes = self.sizes;
        let mut worker =
            WorkerProcess::start(url, &sizes, dir, &self.client, self.tracing.as_ref()).await?;
        let idle = memory(worker.pid()).map(|(rss, _)| rss);
        self.processes.worker = Some(worker.pid());

        let only = |part: Part| args.only.as_ref().is_none_or(|only| only.contains(&part));
        if only(Part::Publish) {
            let (figure, cpu) = self.publish().await?;
            report.add(figure);
            report.add_cpu(cpu);
            worker.check_alive()?;
            if args.breakdown {
                report.add_publish_costs(self.publish_costs().await?, sizes.tasks);
            }
        }
        let mut peak = None;
        let parts = [
            (Part::E2eResults, Results::Stored),
            (Part::E2eIgnoreResult, Results::Ignored),
        ];
        for (part, results) in parts {
            if only(part) {
                let (figure, cpu) = self.end_to_end(results).await?;
                report.add(figure);
                report.add_cpu(cpu);
                worker.check_alive()?;
                if results == Results::Stored {
                    peak = memory(worker.pid()).map(|(_, hwm)| hwm);
                }
            }
        }
        if only(Part::Chain) {
            let (p50, p99) = self.chain_steps().await?;
            report.add(p50);
            report.add(p99);
            worker.check_alive()?;
        }
        if only(Part::Chord) {
            report.add(self.chord().await?);
            worker.check_alive()?;
        }
        drop(worker);
        if only(Part::Priority) {
            report.add(self.priority_start(dir, url).await?);
        }
        report.add(Figure::memory(
            "worker_rss_idle",
            "worker RSS, idle",
            idle,
            20.0,
        ));
        if peak.is_some() {
            report.add(Figure::memory(
                "worker_rss_peak",
                "worker RSS, peak over the runs with results",
                peak,
                64.0,
            ));
        }
        Ok(())
    }

    /// A progress bar of `len` steps for `what` (drawn only on a terminal).
    fn bar(what: &str, len: usize) -> ProgressBar {
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }

    fn queue_stream(&self, queue: &str) -> anyhow::Result<String> {
        let queue = QueueName::new(queue).map_err(|error| anyhow!("{error}"))?;
        Ok(self.layout.queue_stream(&queue))
    }

    /// Sends one task to each of the bench's queues, so their streams exist before any figure's
    /// clock starts. Otherwise the publish figure's first sends, 1,024 at once, would each make
    /// the stream, and on a cluster some of them found no stream while it was being made (every
    /// `--quick --cluster 3` run failed so). A send that finds none here is tried again for up to
    /// 10 s.
    async fn provision_queues(&self) -> anyhow::Result<()> {
        for queue in ["default", tasks::PUBLISH_QUEUE] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let sent = self
                    .client
                    .apply(&noop_ignored, (), ApplyOptions::new().queue(queue))
                    .await;
                match sent {
                    Ok(_) => break,
                    Err(error) if Instant::now() > deadline => {
                        return Err(error).with_context(|| format!("cannot send to queue {queue}"));
                    }
                    // A deadline bounds the loop; there is no event to await for a stream that a
                    // server of the cluster does not know yet.
                    Err(_) => tokio::time::sleep(raw::POLL).await,
                }
            }
        }
        Ok(())
    }

    /// Deletes what earlier runs may have left in the bench's queues.
    async fn clean_queues(&self) -> anyhow::Result<()> {
        for queue in ["default", tasks::PUBLISH_QUEUE] {
            let name = self.queue_stream(queue)?;
            if let Ok(mut stream) = self.js.get_stream(&name).await
                && stream
                    .info()
                    .await
                    .is_ok_and(|info| info.state.messages > 0)
            {
                stream
                    .purge()
                    .await
                    .with_context(|| format!("cannot purge {name}"))?;
            }
        }
        Ok(())
    }

    /// `n` sends of `send`, `window` at once.
    async fn send_all<F, Fut, T>(
        &self,
        n: usize,
        bar: &ProgressBar,
        send: F,
    ) -> anyhow::Result<Vec<T>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, celerity::EnqueueError>>,
    {
        futures_util::stream::iter(0..n)
            .map(|_| {
                let sent = send();
                async move {
                    let sent = sent.await;
                    bar.inc(1);
                    sent
                }
            })
            .buffer_unordered(self.sizes.window)
            .try_collect()
            .await
            .context("a task could not be sent")
    }

    async fn publish(&self) -> anyhow::Result<(Figure, [PerTask; 2])> {
        let n = self.sizes.tasks;
        let bar = Self::bar("publish: raw and celerity delay(), in turn", 2 * n);
        let options = || ApplyOptions::new().queue(tasks::PUBLISH_QUEUE);
        // In PUBLISH_ROUNDS turns of raw then Celerity, so the machine's ups and downs hit both
        // alike; each side's stream keeps what it was sent, and ends up holding `n` messages.
        self.raw.publish_begin().await?;
        let (mut raw, mut celerity) = (Duration::ZERO, Duration::ZERO);
        let (mut raw_cpu, mut celerity_cpu) = (Used::ZERO, Used::ZERO);
        for round in 0..PUBLISH_ROUNDS {
            let part = n / PUBLISH_ROUNDS + usize::from(round < n % PUBLISH_ROUNDS);
            let before = self.processes.read();
            raw += self.raw.publish_part(part, self.sizes.window, &bar).await?;
            let between = self.processes.read();
            raw_cpu = raw_cpu.plus(before.until(&between));
            let started = Instant::now();
            self.send_all(part, &bar, || self.client.apply(&noop, (), options()))
                .await?;
            celerity += started.elapsed();
            celerity_cpu = celerity_cpu.plus(between.until(&self.processes.read()));
        }
        self.raw.publish_end().await;
        bar.finish_and_clear();
        self.clean_queues().await?;
        Ok((
            Figure::rate(
                "publish",
                "publish, delay() of no-op tasks",
                n,
                celerity,
                raw,
            ),
            [
                PerTask::new("publish", "raw", raw_cpu, n),
                PerTask::new("publish", "celerity", celerity_cpu, n),
            ],
        ))
    }

    /// The publish cost breakdown, with the headers a `delay()` of the no-op task carries.
    async fn publish_costs(&self) -> anyhow::Result<Vec<(&'static str, &'static str, f64, Used)>> {
        let n = self.sizes.tasks;
        let id = celerity_proto::TaskId::new(uuid::Uuid::now_v7().to_string())
            .map_err(|error| anyhow!("{error}"))?;
        let name = celerity_proto::TaskName::new(<noop as celerity::Task>::NAME)
            .map_err(|error| anyhow!("{error}"))?;
        let mut envelope = celerity_proto::Envelope::new(id, name);
        envelope.sent_at_ms = Some(now_us() / 1000);
        envelope.reply_to = Some(
            self.layout
                .reply_subject("0123456789abcdef0123456789abcdef"),
        );
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in envelope.to_headers() {
            headers.insert(name, value.as_str());
        }
        let bar = Self::bar("publish costs", n);
        let costs = self
            .raw
            .publish_costs(n, self.sizes.window, &headers, &self.processes, &bar)
            .await?;
        bar.finish_and_clear();
        Ok(costs)
    }

    /// No-op tasks end to end: with results, until the client has every result; with
    /// `ignore_result`, until the queue is empty.
    async fn end_to_end(&self, results: Results) -> anyhow::Result<(Figure, [PerTask; 2])> {
        let n = self.sizes.tasks;
        let what = match results {
            Results::Stored => "results",
            Results::Ignored => "ignore_result",
        };
        let bar = Self::bar(&format!("end to end ({what}): raw"), n);
        let before = self.processes.read();
        let raw = self
            .raw
            .end_to_end(n, self.sizes.window, self.sizes.concurrency, results, &bar)
            .await?;
        bar.finish_and_clear();
        let between = self.processes.read();
        let bar = Self::bar(&format!("end to end ({what}): celerity"), n);
        let started = Instant::now();
        if results == Results::Stored {
            let sent: Vec<AsyncResult<()>> =
                self.send_all(n, &bar, || noop.delay(&self.client)).await?;
            bar.set_position(0);
            futures_util::stream::iter(sent)
                .map(|result| {
                    let bar = &bar;
                    async move {
                        result.wait(RESULT_TIMEOUT).await?;
                        bar.inc(1);
                        Ok::<_, celerity::ResultError>(())
                    }
                })
                .buffer_unordered(n)
                .try_collect::<()>()
                .await
                .context("a no-op task did not finish")?;
        } else {
            self.send_all(n, &bar, || noop_ignored.delay(&self.client))
                .await?;
            raw::wait_empty(&self.js, &self.queue_stream("default")?).await?;
        }
        let celerity = started.elapsed();
        let after = self.processes.read();
        bar.finish_and_clear();
        let (id, label) = if results == Results::Stored {
            ("e2e_results", "no-op tasks end to end, with results")
        } else {
            ("e2e_ignore_result", "no-op tasks end to end, ignore_result")
        };
        Ok((
            Figure::rate(id, label, n, celerity, raw),
            [
                PerTask::new(id, "raw", before.until(&between), n),
                PerTask::new(id, "celerity", between.until(&after), n),
            ],
        ))
    }

    /// Chain step latency, p50 and p99: sequential 10-step chains, one raw and one Celerity in turn,
    /// start to start of each step.
    async fn chain_steps(&self) -> anyhow::Result<(Figure, Figure)> {
        let chains = self.sizes.chains;
        let mut hops = self.raw.hops(CHAIN_STEPS).await?;
        let bar = Self::bar("chain steps: raw and celerity, in turn", chains);
        let mut raw = Vec::with_capacity(chains * (CHAIN_STEPS - 1));
        let mut celerity = Vec::with_capacity(chains * (CHAIN_STEPS - 1));
        // One raw chain, then one Celerity chain: the machine's ups and downs hit both alike.
        for _ in 0..chains {
            raw.extend(hops.run().await?);
            let mut chain = Chain::start(step.s((Vec::<u64>::new(),)));
            for _ in 1..CHAIN_STEPS {
                chain = chain.then(step.s(()));
            }
            let started = chain
                .apply_async(&self.client)
                .await?
                .get(RESULT_TIMEOUT)
                .await?;
            celerity.extend(raw::gaps(&started));
            bar.inc(1);
        }
        hops.finish().await;
        bar.finish_and_clear();
        raw.sort();
        celerity.sort();
        Ok((
            Figure::latency(
                "chain_step_p50",
                "chain step latency, p50",
                percentile(&celerity, 50),
                percentile(&raw, 50),
                Target::RatioAtMost(2.0),
            ),
            Figure::latency(
                "chain_step_p99",
                "chain step latency, p99",
                percentile(&celerity, 99),
                percentile(&raw, 99),
                Target::None,
            ),
        ))
    }

    /// A chord of `chord` no-op members, from publish to the body's result, beside a group of as
    /// many, to its last result.
    async fn chord(&self) -> anyhow::Result<Figure> {
        let k = self.sizes.chord;
        let bar = Self::bar(&format!("group of {k}"), 1);
        let started = Instant::now();
        let group = Group::new((0..k).map(|_| one.s(())))
            .apply_async(&self.client)
            .await?;
        let ones = group.get(RESULT_TIMEOUT).await?;
        let group_time = started.elapsed();
        if ones.len() != k {
            bail!("the group returned {} results, not {k}", ones.len());
        }
        bar.finish_and_clear();
        let bar = Self::bar(&format!("chord of {k}"), 1);
        let started = Instant::now();
        let sum = Chord::new((0..k).map(|_| one.s(())), total.s(()))
            .apply_async(&self.client)
            .await?
            .get(RESULT_TIMEOUT)
            .await?;
        let chord_time = started.elapsed();
        if sum != k as u64 {
            bail!("the chord's body returned {sum}, not {k}");
        }
        bar.finish_and_clear();
        Ok(Figure::ratio_of_times(
            "chord_10k",
            &format!("chord of {k}, publish to body result (raw: group of {k})"),
            chord_time,
            group_time,
            Target::RatioAtMost(1.3),
        ))
    }

    /// The time a priority-9 task takes to start behind a backlog of priority-0 tasks: the backlog
    /// is queued with no worker running, then a fresh worker starts and the probes are sent one by
    /// one (the median counts).
    async fn priority_start(&self, dir: &std::path::Path, url: &str) -> anyhow::Result<Figure> {
        let n = self.sizes.tasks;
        let bar = Self::bar("priority: backlog", n);
        let backlog = || ApplyOptions::new().priority(0);
        self.send_all(n, &bar, || self.client.apply(&noop_ignored, (), backlog()))
            .await?;
        bar.finish_and_clear();
        let queue = self.queue_stream("default")?;
        let mut stream = self.js.get_stream(&queue).await?;
        let worker =
            WorkerProcess::start(url, &self.sizes, dir, &self.client, self.tracing.as_ref())
                .await?;
        let mut probes = Vec::with_capacity(PROBES);
        let mut behind = Vec::with_capacity(PROBES);
        for _ in 0..PROBES {
            let queued = stream.info().await?.state.messages;
            if queued < 2 * self.sizes.concurrency as u64 {
                break;
            }
            let sent = now_us();
            let started = self
                .client
                .apply(&stamp, (), ApplyOptions::new().priority(9))
                .await?
                .get(RESULT_TIMEOUT)
                .await?;
            probes.push(Duration::from_micros(started.saturating_sub(sent)));
            behind.push(queued);
        }
        raw::wait_empty(&self.js, &queue).await?;
        drop(worker);
        if probes.is_empty() {
            bail!("the backlog of {n} drained before a probe could be sent: raise --tasks");
        }
        probes.sort();
        let median = probes[probes.len() / 2];
        Ok(Figure::priority(
            &format!(
                "priority-9 time to start behind {} queued priority-0 tasks (median of {})",
                behind.iter().min().copied().unwrap_or(0),
                probes.len()
            ),
            median,
        ))
    }
}

/// The `p`th percentile of sorted `values` (nearest rank).
fn percentile(values: &[Duration], p: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = (values.len() * p).div_ceil(100).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99), Duration::from_millis(99));
        assert_eq!(percentile(&values[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
