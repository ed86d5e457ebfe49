//! [`QueuedProcessor`]: the span processor that hands ended spans to one export thread through a
//! bounded queue, and counts every span it drops.
//!
//! It does what the SDK's `BatchSpanProcessor` does (batches of up to 512, every 5 s or when a
//! batch is full, one export at a time), with one difference that the metrics need: the number of
//! spans dropped, because the queue was full or their export failed, is readable
//! (`celerity_spans_dropped_total`); the SDK keeps its count private. A task never waits for an
//! export: `on_end` only tries to push onto the queue.
//!
//! The OTLP exporter is built and run on the export thread: over HTTP with a blocking client
//! (driven by `futures_executor::block_on`, outside any async runtime, which the blocking client
//! requires), or, with the `otlp-grpc` feature, over gRPC inside a current-thread tokio runtime of
//! the thread's own (tonic needs one, and must not share the actix runtime).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};

/// How long a flush or a shutdown waits for the export thread, at most.
const WAIT_FOR_EXPORT: Duration = Duration::from_secs(2);

/// Why the exporter could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The OTLP exporter could not be built (a malformed endpoint, for one).
    #[error("cannot build the OTLP span exporter")]
    Build(#[source] opentelemetry_otlp::ExporterBuildError),
    /// The export thread could not start.
    #[error("cannot start the span export thread")]
    Thread(#[source] std::io::Error),
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (or its `_TRACES_` form) names a protocol this build lacks.
    #[error(
        "{variable}={value:?} is not a protocol this build exports: use http/protobuf{grpc}",
        grpc = if cfg!(feature = "otlp-grpc") { " or grpc" } else { " (grpc needs the celerity crate's otlp-grpc feature)" }
    )]
    Protocol {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
}

/// How spans travel to the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Transport {
    /// OTLP over HTTP with protobuf bodies, to the environment's endpoint or to this URL (the
    /// whole URL, `/v1/traces` included).
    Http(Option<String>),
    /// OTLP over gRPC.
    #[cfg(feature = "otlp-grpc")]
    Grpc,
}

impl Transport {
    /// The transport `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL` names
    /// (HTTP/protobuf when neither does).
    pub(super) fn from_env() -> Result<Self, ExportError> {
        for variable in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            let Some(value) = std::env::var(variable)
                .ok()
                .filter(|value| !value.is_empty())
            else {
                continue;
            };
            return match value.as_str() {
                "http/protobuf" => Ok(Self::Http(None)),
                #[cfg(feature = "otlp-grpc")]
                "grpc" => Ok(Self::Grpc),
                _ => Err(ExportError::Protocol { variable, value }),
            };
        }
        Ok(Self::Http(None))
    }
}

/// The export queue's bounds, from the `OTEL_BSP_*` variables the SDK's batch processor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QueueConfig {
    /// Spans the queue holds (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048).
    max_queue: usize,
    /// The longest a span waits for its batch (`OTEL_BSP_SCHEDULE_DELAY`, 5000 ms).
    delay: Duration,
    /// Spans per export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, 512, at most the queue).
    max_batch: usize,
}

impl QueueConfig {
    pub(super) fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.parse::<u64>().ok())
                .filter(|value| *value > 0)
                .unwrap_or(default)
        };
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048) as usize;
        Self {
            max_queue,
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)),
            max_batch: (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize).min(max_queue),
        }
    }
}

/// What the export thread is sent.
enum Message {
    Span(Box<SpanData>),
    /// The provider's resource, which the exporter sends with every batch.
    Resource(Box<opentelemetry_sdk::Resource>),
    /// Export what is queued, then say so.
    Flush(SyncSender<()>),
    /// Export what is queued, shut the exporter down, say so and end.
    Shutdown(SyncSender<()>),
}

/// Hands ended, sampled spans to the export thread.
#[derive(Debug)]
pub(super) struct QueuedProcessor {
    sender: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl QueuedProcessor {
    /// Starts the export thread, which builds the exporter for `transport`; returns the
    /// processor and its count of dropped spans.
    pub(super) fn start(
        transport: Transport,
        config: QueueConfig,
    ) -> Result<(Self, Arc<AtomicU64>), ExportError> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.max_queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let (built, started) = std::sync::mpsc::sync_channel(1);
        let counted = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("celerity-otlp".to_owned())
            .spawn(move || run_exports(transport, config, receiver, counted, built))
            .map_err(ExportError::Thread)?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(ExportError::Build(error)),
            Err(_) => {
                return Err(ExportError::Thread(std::io::Error::other(
                    "the export thread ended before it started",
                )));
            }
        }
        let processor = Self {
            sender,
            dropped: dropped.clone(),
            thread: Mutex::new(Some(thread)),
        };
        Ok((processor, dropped))
    }

    /// Sends `message` and waits (up to [`WAIT_FOR_EXPORT`]) for its answer.
    fn ask(&self, message: impl FnOnce(SyncSender<()>) -> Message) -> OTelSdkResult {
        let (done, answered) = std::sync::mpsc::sync_channel(1);
        // Never blocks: with the queue full (an exporter that cannot keep up), the caller does not
        // wait for it.
        self.sender
            .try_send(message(done))
            .map_err(|error| match error {
                TrySendError::Full(_) => OTelSdkError::Timeout(Duration::ZERO),
                TrySendError::Disconnected(_) => OTelSdkError::AlreadyShutdown,
            })?;
        answered
            .recv_timeout(WAIT_FOR_EXPORT)
            .map_err(|_| OTelSdkError::Timeout(WAIT_FOR_EXPORT))
    }
}

impl SpanProcessor for QueuedProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.sender.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        // Sent before any span (the provider sets it as it is built), so no batch goes without.
        let _ = self
            .sender
            .send(Message::Resource(Box::new(resource.clone())));
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let asked = self.ask(Message::Shutdown);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if asked.is_ok()
            && let Some(thread) = thread
        {
            let _ = thread.join();
        }
        asked
    }
}

/// The OTLP exporter, and what drives its futures.
enum Exporter {
    Http(opentelemetry_otlp::SpanExporter),
    #[cfg(feature = "otlp-grpc")]
    Grpc(opentelemetry_otlp::SpanExporter, tokio::runtime::Runtime),
}

impl Exporter {
    fn build(transport: Transport) -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
        use opentelemetry_otlp::WithExportConfig as _;
        match transport {
            Transport::Http(endpoint) => {
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                let builder = match endpoint {
                    Some(endpoint) => builder.with_endpoint(endpoint),
                    None => builder,
                };
                builder.build().map(Self::Http)
            }
            #[cfg(feature = "otlp-grpc")]
            Transport::Grpc => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| {
                        opentelemetry_otlp::ExporterBuildError::InternalFailure(error.to_string())
                    })?;
                let exporter = runtime.block_on(async {
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .build()
                })?;
                Ok(Self::Grpc(exporter, runtime))
            }
        }
    }

    fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            Exporter::Http(exporter) => futures_executor::block_on(exporter.export(batch)),
            #[cfg(feature = "otlp-grpc")]
            Exporter::Grpc(exporter, runtime) => runtime.block_on(exporter.export(batch)),
        }
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        match self {
            Exporter::Http(exporter) => exporter.set_resource(resource),
            #[cfg(feature = "otlp-grpc")]
            Exporter::Grpc(exporter, _) => exporter.set_resource(resource),
        }
    }

    fn shutdown(&mut self) {
        let _ = match self {
            Exporter::Http(exporter) => exporter.shutdown(),
            #[cfg(feature = "otlp-grpc")]
            Exporter::Grpc(exporter, _) => exporter.shutdown(),
        };
    }
}

/// The export thread: builds the exporter (telling `built` how that went), then exports batches
/// until shut down or until the processor is gone.
fn run_exports(
    transport: Transport,
    config: QueueConfig,
    receiver: Receiver<Message>,
    dropped: Arc<AtomicU64>,
    built: SyncSender<Result<(), opentelemetry_otlp::ExporterBuildError>>,
) {
    let mut exporter = match Exporter::build(transport) {
        Ok(exporter) => {
            let _ = built.send(Ok(()));
            exporter
        }
        Err(error) => {
            let _ = built.send(Err(error));
            return;
        }
    };
    let mut batch = Vec::with_capacity(config.max_batch);
    let export = |batch: &mut Vec<SpanData>, exporter: &Exporter| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(config.max_batch));
        let n = spans.len() as u64;
        if let Err(error) = exporter.export(spans) {
            dropped.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(error = %error, spans = n, "cannot export spans; they are dropped");
        }
    };
    let mut due = Instant::now() + config.delay;
    loop {
        match receiver.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(Message::Span(span)) => {
                batch.push(*span);
                if batch.len() >= config.max_batch {
                    export(&mut batch, &exporter);
                }
            }
            Ok(Message::Resource(resource)) => exporter.set_resource(&resource),
            Ok(Message::Flush(done)) => {
                export(&mut batch, &exporter);
                let _ = done.send(());
            }
            Ok(Message::Shutdown(done)) => {
                export(&mut batch, &exporter);
                exporter.shutdown();
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&mut batch, &exporter);
                due = Instant::now() + config.delay;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&mut batch, &exporter);
                exporter.shutdown();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_bounds_come_from_the_bsp_variables_or_their_defaults() {
        if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
            let config = QueueConfig::from_env();
            assert_eq!(config.max_queue, 2048);
            assert!(config.max_batch <= config.max_queue);
        }
    }
}
