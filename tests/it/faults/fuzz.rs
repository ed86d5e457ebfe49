//! Scenario 11: a fuzz of 10,000 mutated task messages (bad JSON and MessagePack, wrong and
//! unknown content types, unknown versions, missing and invalid ids and names, bad arguments,
//! bodies nested 10,000 deep, 1 MiB bodies, repeated headers and thousands of headers) mixed with
//! 1,000 valid `it.ledger` tasks on two workers: every bad message is dead-lettered with the
//! reason `docs/protocol.md` section 7 gives it, no worker panics or stops, and the checker loses
//! no valid task. Messages with non-UTF-8 header bytes are sent apart, after the checks, because
//! today they stop a worker's connection instead of being dead-lettered (a FIXME below).
//!
//! Bad messages are written as raw `PUB`/`HPUB` frames on a plain TCP connection, because
//! async-nats cannot put non-UTF-8 bytes or a repeated protocol header in the order we choose
//! into a `HeaderMap`; each is still a JetStream publish: its reply subject is an inbox this test
//! subscribes to, and the test waits for every `PubAck`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use celerity_proto::{DeadLetter, DeadLetterReason};
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::checker::{Checker, make_ledger};
use crate::support::{WorkerProcess, client, eventually, wait_until_queue_is_empty};

mod mutations;

use mutations::*;

/// How many bad messages are published.
const N_BAD: usize = 10_000;
/// How many valid `it.ledger` tasks the checker sends between them.
const N_VALID: usize = 1_000;
/// Bad messages published before the test waits for their `PubAck`s; the checker sends
/// `N_VALID * WINDOW / N_BAD` valid tasks after each window.
const WINDOW: usize = 100;
/// The default queue's priority-0 task subject.
const TASK_SUBJECT: &str = "celerity.q.default.0";
/// The size of a huge body: 1 MiB, which fits because the server is started with an 8 MiB
/// `max_payload` (its default, 1 MiB, would refuse the message with its headers).
const HUGE_BODY: usize = 1 << 20;
/// How deep the deeply nested bodies nest.
const DEEP: usize = 10_000;
/// How long each wait after the publishes may take.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mutated_messages_are_dead_lettered_with_their_reasons_and_lose_no_valid_task()
{
    let started = Instant::now();
    let server = celerity_testkit::NatsServer::builder()
        .max_payload(8 << 20)
        .start()
        .expect("nats-server starts (install it with `apt-get install -y nats-server`)");
    let url = server.url();
    let ledger = make_ledger(&url, 1).await;
    let mut workers = [
        WorkerProcess::start(&url, "fuzz-1", &["-c", "8"]),
        WorkerProcess::start(&url, "fuzz-2", &["-c", "8"]),
    ];
    let client = client(&url).await;
    let checker = Checker::default();
    let mut rng = Rng(0x5eed_f022_1111_0011);
    let mutations: Vec<Mutation> = (0..N_BAD)
        .map(|n| Kind::pick(&mut rng).mutate(n, &mut rng))
        .collect();
    let mut sender = BadSender::connect(&client, server.port()).await;

    // Windows of bad messages, each followed by a few valid tasks.
    let valid_per_window = N_VALID * WINDOW / N_BAD;
    let mut bad_by_sequence: HashMap<u64, usize> = HashMap::new();
    let mut n_refused = 0;
    for (index, window) in mutations.chunks(WINDOW).enumerate() {
        let first = index * WINDOW;
        for (n, stored) in sender.send(first, window).await {
            match stored {
                Some(sequence) => {
                    let other = bad_by_sequence.insert(sequence, n);
                    assert!(
                        other.is_none(),
                        "bad messages {other:?} and {n} share a sequence"
                    );
                }
                None => n_refused += 1,
            }
        }
        for i in index * valid_per_window..(index + 1) * valid_per_window {
            // A refused publish is counted by the checker (acknowledged stays short).
            let _ = checker
                .send(&client, &format!("fuzzok-{i}"), i as u64, 0)
                .await;
        }
    }
    let n_expected_letters = mutations
        .iter()
        .filter(|mutation| mutation.fate == Fate::Letter)
        .count();
    eprintln!(
        "fuzz: published {N_BAD} bad messages ({n_refused} refused by the server) and {N_VALID} \
         valid tasks in {:?}",
        started.elapsed()
    );

    let letters = wait_for_letters(&client, &url, n_expected_letters).await;
    eprintln!(
        "fuzz: {} dead letters after {:?}",
        letters.len(),
        started.elapsed()
    );
    let mut findings = check_letters(&mutations, &bad_by_sequence, &letters);
    check_given_up(&client, &workers, &mutations, &mut findings.wrong).await;
    eprintln!("fuzz: dead letters by reason: {:?}", findings.by_reason);
    eprintln!("fuzz: dead letters by mutation kind and reason:");
    for ((kind, reason), count) in &findings.histogram {
        eprintln!("  {kind:<20} {reason:<20} {count}");
    }

    let mut report = checker.report(&url, WAIT).await;
    // The checker counts every final record it did not send as unexpected, and each bad message
    // with a valid id has one: its `celerity::DeadLettered` FAILURE (7). A bad message that ran
    // instead would add a ledger entry, which the count of runs below catches.
    report.unexpected.retain(|id| !id.starts_with("fz-"));
    eprintln!("fuzz: checker after {:?}: {report}", started.elapsed());
    report.record(
        "11 fuzz",
        &super::single::version(),
        "10,000 mutated messages",
        None,
    );

    assert_workers_are_well(&mut workers, &client).await;
    assert!(
        findings.missing.is_empty(),
        "bad messages never dead-lettered (kind/variant, count, first ones): {:?}",
        findings.missing
    );
    assert!(
        findings.wrong.is_empty(),
        "{} bad messages ended wrong, the first:\n{}",
        findings.wrong.len(),
        findings.wrong[..findings.wrong.len().min(20)].join("\n")
    );
    assert_eq!(
        letters.len(),
        n_expected_letters,
        "one letter per bad message"
    );
    wait_until_queue_is_empty(&client, WAIT).await;
    assert_eq!(report.acknowledged, N_VALID, "{report}");
    assert_eq!(report.completed, N_VALID, "{report}");
    report.assert_clean(true);
    let n_runs = ledger.get_info().await.expect("ledger info").state.messages;
    assert_eq!(
        n_runs, N_VALID as u64,
        "only the valid tasks ran, once each"
    );

    non_utf8_headers_are_not_dead_lettered_today(&client, &mut sender, &workers, letters.len())
        .await;
    assert_workers_are_well(&mut workers, &client).await;
    eprintln!("fuzz: done in {:?}", started.elapsed());
}

/// FIXME(non-UTF-8 headers): a message whose header block holds a byte that is not UTF-8 is
/// neither dead-lettered nor run. async-nats 0.51 refuses such an `HMSG` while parsing it
/// (`header isn't valid utf-8`, `io::ErrorKind::InvalidInput`) and drops the whole connection, so
/// the worker that is delivered it (and, on servers before 2.10.16, every worker that hears its
/// doorbell) reconnects, its in-flight fetches and acks fail, and the message, never
/// acknowledged, is delivered again every AckWait without end (the consumers set no
/// `max_deliver`). Once workers dead-letter it, this should expect letters instead: `bad_envelope`
/// for a bad `Celerity-Id` or `Celerity-Task`, `unsupported_version` for a bad
/// `Celerity-Version`, and whatever protocol.md then says for a bad user header.
async fn non_utf8_headers_are_not_dead_lettered_today(
    client: &celerity::Client,
    sender: &mut BadSender,
    workers: &[WorkerProcess],
    n_letters: usize,
) {
    let mutations: Vec<Mutation> = (0..4)
        .map(|variant| {
            let mut mutation = Mutation::valid(Kind::NonUtf8Header, N_BAD + variant);
            mutation.non_utf8(variant, N_BAD + variant);
            mutation
        })
        .collect();
    let disconnects = || -> usize {
        workers
            .iter()
            .map(|worker| worker.log().matches("event: disconnected").count())
            .sum()
    };
    let disconnects_before = disconnects();
    for (n, stored) in sender.send(N_BAD, &mutations).await {
        assert!(stored.is_some(), "non-UTF-8 message {n} is stored");
    }
    eventually(
        "a worker's connection drops on a non-UTF-8 header (FIXME: it should dead-letter it)",
        Duration::from_secs(20),
        || async { disconnects() > disconnects_before },
    )
    .await;
    let js = jetstream::new(client.nats().clone());
    let mut dlq = js
        .get_stream("CELERITY_DLQ")
        .await
        .expect("the dead-letter stream");
    let letters_now = dlq.info().await.expect("dead-letter info").state.messages;
    assert_eq!(
        letters_now, n_letters as u64,
        "FIXME: no non-UTF-8 message is dead-lettered"
    );
    let mut queue = js
        .get_stream("CELERITY_Q_default")
        .await
        .expect("the queue");
    let queued = queue.info().await.expect("queue info").state.messages;
    assert_eq!(
        queued, 4,
        "FIXME: the non-UTF-8 messages stay in the queue, unacknowledged"
    );
    eprintln!(
        "fuzz: FIXME non-UTF-8 headers: {} worker disconnects, 0 letters, {queued} left queued",
        disconnects() - disconnects_before
    );
}

/// No worker logged a panic or exited, and both answer a ping (within `WAIT`, as a worker may be
/// reconnecting).
async fn assert_workers_are_well(workers: &mut [WorkerProcess], client: &celerity::Client) {
    for worker in workers.iter_mut() {
        let log = worker.log();
        let panics: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("panicked"))
            .collect();
        assert!(
            panics.is_empty(),
            "worker {} panicked:\n{}",
            worker.hostname,
            panics.join("\n")
        );
        assert!(
            !worker.has_exited(),
            "worker {} exited; log:\n{log}",
            worker.hostname
        );
    }
    eventually("both workers answer a ping", WAIT, || async {
        let Ok(replies) = client.control().ping(None, Duration::from_secs(1)).await else {
            return false;
        };
        let mut answered: Vec<&str> = replies.iter().map(|reply| reply.worker.as_str()).collect();
        answered.sort_unstable();
        answered == ["fuzz-1", "fuzz-2"]
    })
    .await;
}

/// A dead letter as read back: its headers, and its body's size.
#[derive(Debug)]
struct Letter {
    letter: DeadLetter,
    body_len: usize,
    body_dropped: bool,
}

/// Waits until the dead-letter stream holds `count` letters (or `WAIT` has passed), then reads
/// every letter it holds.
async fn wait_for_letters(client: &celerity::Client, url: &str, count: usize) -> Vec<Letter> {
    let js = jetstream::new(client.nats().clone());
    let dlq = js
        .get_stream("CELERITY_DLQ")
        .await
        .expect("the dead-letter stream exists");
    let deadline = Instant::now() + WAIT;
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = dlq
            .get_info()
            .await
            .map(|info| info.state.messages)
            .unwrap_or(0);
        if stored >= count as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The count is short when some message was never dead-lettered: the checks name them.
    read_letters(url, stored).await
}

/// What the letters say, against what each mutation expects.
#[derive(Default)]
struct Findings {
    /// Letters by (mutation kind, reason).
    histogram: BTreeMap<(String, &'static str), usize>,
    by_reason: BTreeMap<&'static str, usize>,
    /// Bad messages that ended otherwise than expected, in words.
    wrong: Vec<String>,
    /// Bad messages with no letter, by kind and variant: the count and the first indices.
    missing: BTreeMap<String, (usize, Vec<usize>)>,
}

fn check_letters(
    mutations: &[Mutation],
    bad_by_sequence: &HashMap<u64, usize>,
    letters: &[Letter],
) -> Findings {
    let mut findings = Findings::default();
    let mut lettered = vec![false; mutations.len()];
    for Letter {
        letter,
        body_len,
        body_dropped,
    } in letters
    {
        let Some(&n) = bad_by_sequence.get(&letter.stream_sequence) else {
            findings
                .wrong
                .push(format!("a letter of a valid task: {letter:?}"));
            continue;
        };
        let mutation = &mutations[n];
        let what = format!("bad message {n} ({:?}/{})", mutation.kind, mutation.variant);
        if std::mem::replace(&mut lettered[n], true) {
            findings
                .wrong
                .push(format!("{what} was dead-lettered twice"));
        }
        *findings
            .histogram
            .entry((format!("{:?}", mutation.kind), letter.reason.code()))
            .or_default() += 1;
        *findings.by_reason.entry(letter.reason.code()).or_default() += 1;
        if mutation.fate != Fate::Letter {
            findings
                .wrong
                .push(format!("{what} has a letter: {letter:?}"));
        }
        if letter.reason != mutation.expected {
            findings.wrong.push(format!(
                "{what} went to {} instead of {}: {}",
                letter.reason, mutation.expected, letter.error
            ));
        }
        if letter.subject != TASK_SUBJECT {
            findings.wrong.push(format!("{what}'s letter: {letter:?}"));
        }
        if *body_dropped || *body_len != mutation.body.len() {
            findings.wrong.push(format!(
                "{what}'s letter has {body_len} body bytes of {} (dropped: {body_dropped})",
                mutation.body.len()
            ));
        }
    }
    for (n, mutation) in mutations.iter().enumerate() {
        if !lettered[n] && mutation.fate == Fate::Letter {
            let (count, first) = findings
                .missing
                .entry(format!("{:?}/{}", mutation.kind, mutation.variant))
                .or_default();
            *count += 1;
            if first.len() < 5 {
                first.push(n);
            }
        }
    }
    findings
}

/// A message whose letter cannot be stored even without its body is given up (7.1): its FAILURE
/// record names the reason, and a worker logs it at error level.
async fn check_given_up(
    client: &celerity::Client,
    workers: &[WorkerProcess],
    mutations: &[Mutation],
    wrong: &mut Vec<String>,
) {
    let logs: String = workers.iter().map(WorkerProcess::log).collect();
    let deadline = Instant::now() + WAIT;
    for (n, mutation) in mutations.iter().enumerate() {
        if mutation.fate != Fate::GivenUp {
            continue;
        }
        let id = format!("fz-{n}");
        let result = client.async_result::<u64>(&id).expect("a valid task id");
        let within = deadline.saturating_duration_since(Instant::now());
        match result.get(within.max(Duration::from_millis(1))).await {
            Err(celerity::ResultError::Failed { error, .. })
                if error.kind == "celerity::DeadLettered"
                    && error.message.starts_with(mutation.expected.code()) => {}
            other => wrong.push(format!("given-up bad message {n} has the result {other:?}")),
        }
        let logged = logs.lines().any(|line| {
            line.contains("giving up a dead letter") && line.contains(&format!("task_id=\"{id}\""))
        });
        if !logged {
            wrong.push(format!("given-up bad message {n} was not logged"));
        }
    }
}

/// Sends bad messages with a [`RawPublisher`] and collects their `PubAck`s on an inbox
/// subscription of the test's client.
struct BadSender {
    publisher: RawPublisher,
    acks: async_nats::Subscriber,
}

impl BadSender {
    async fn connect(client: &celerity::Client, port: u16) -> BadSender {
        let acks = client
            .nats()
            .subscribe("_INBOX.fuzz.>")
            .await
            .expect("a subscription for the PubAcks");
        client
            .nats()
            .flush()
            .await
            .expect("the subscription is set");
        BadSender {
            publisher: RawPublisher::connect(port).await,
            acks,
        }
    }

    /// Publishes `mutations` as bad messages `first..`, waits for each one's `PubAck`, and
    /// returns each one's stream sequence, or `None` where the server refused it as its
    /// [`Fate::Refused`] expects.
    async fn send(&mut self, first: usize, mutations: &[Mutation]) -> Vec<(usize, Option<u64>)> {
        for (offset, mutation) in mutations.iter().enumerate() {
            let reply = format!("_INBOX.fuzz.{}", first + offset);
            self.publisher.publish(&reply, mutation).await;
        }
        self.publisher.flush().await;
        let mut stored = Vec::with_capacity(mutations.len());
        for _ in mutations {
            let ack = tokio::time::timeout(Duration::from_secs(30), self.acks.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no PubAck for a bad message within 30 s; raw connection errors: {:?}",
                        self.publisher.errors()
                    )
                })
                .expect("the PubAck subscription goes on");
            let n: usize = ack
                .subject
                .rsplit('.')
                .next()
                .and_then(|token| token.parse().ok())
                .expect("a PubAck inbox ends with the message's index");
            let reply: serde_json::Value =
                serde_json::from_slice(&ack.payload).expect("a PubAck is JSON");
            let mutation = &mutations[n - first];
            let sequence = match (mutation.fate, reply["seq"].as_u64()) {
                (Fate::Refused, _) if reply["error"]["err_code"] == 10097 => None,
                (Fate::Letter | Fate::GivenUp, Some(sequence)) if reply.get("error").is_none() => {
                    Some(sequence)
                }
                _ => panic!(
                    "bad message {n} ({:?}/{}, {:?}) got the PubAck {reply}",
                    mutation.kind, mutation.variant, mutation.fate
                ),
            };
            stored.push((n, sequence));
        }
        stored
    }
}

/// The first `count` dead letters, read with an ordered consumer.
async fn read_letters(url: &str, count: u64) -> Vec<Letter> {
    let mut letters = Vec::new();
    if count == 0 {
        return letters;
    }
    let nats = async_nats::connect(url).await.expect("connects");
    let stream = jetstream::new(nats)
        .get_stream("CELERITY_DLQ")
        .await
        .expect("the dead-letter stream");
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer of the dead letters");
    let mut messages = consumer.messages().await.expect("the dead letters");
    while (letters.len() as u64) < count {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the next dead letter arrives")
            .expect("the dead letters go on")
            .expect("a dead letter");
        let pairs: Vec<(String, String)> = message
            .headers
            .iter()
            .flat_map(|headers| headers.iter())
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |value| (name.to_string(), value.as_str().to_owned()))
            })
            .collect();
        let body_dropped = pairs
            .iter()
            .any(|(name, _)| name == "Celerity-Dlq-Body-Dropped");
        letters.push(Letter {
            letter: DeadLetter::from_headers(pairs.as_slice()).expect("dead-letter headers"),
            body_len: message.payload.len(),
            body_dropped,
        });
    }
    letters
}
