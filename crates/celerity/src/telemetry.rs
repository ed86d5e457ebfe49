//! OpenTelemetry traces: one trace per canvas, across producers and workers, exported over OTLP.
//!
//! Every task message carries a W3C `traceparent` (and `tracestate`) header. A producer opens a
//! `publish <task>` span (kind PRODUCER) for each send; a worker opens a `process <task>` span
//! (kind CONSUMER) for each delivery, whose parent is the span that sent it, and everything the
//! run sends (the next step of a chain, a retry, a chord member's completion) is sent inside it,
//! so a whole canvas is one trace. Applying a canvas opens one `apply <kind>` root span. A chord
//! body's publish links to its header members' run spans (at most [`MAX_CHORD_LINKS`]; the rest are
//! counted in `celerity.chord.links_dropped`). Spans follow the OpenTelemetry messaging semantic
//! conventions (`messaging.system = nats`, `messaging.destination.name`,
//! `messaging.operation.type` `send` / `process`, `messaging.message.id` = the task id) plus
//! `celerity.task.name`, `celerity.task.retries`, `celerity.queue`, `celerity.priority`.
//!
//! Configuration is the standard `OTEL_*` environment ([`Telemetry::from_env`], which
//! [`crate::AppBuilder::build`] calls unless [`crate::AppBuilder::telemetry`] was given one).
//! With no endpoint set, nothing is built: no span, no thread, no exporter, and the only work
//! left is copying a `traceparent` a message brought to the messages its run sends. Spans are
//! exported by one thread per process from a bounded queue ([`export`]); when the queue is full or
//! an export fails the spans are dropped and counted ([`Telemetry::spans_dropped`], the worker's
//! `celerity_spans_dropped_total`), and no task ever waits for an export.

mod export;

use std::borrow::Cow;
use std::sync::Arc;

use celerity_proto::{Envelope, QueueName};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use export::ExportError;

/// The most header members a chord body's span links to.
pub const MAX_CHORD_LINKS: usize = 128;

/// The service name spans carry when neither `OTEL_SERVICE_NAME` nor `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "celerity";

/// Why tracing could not be set up from the environment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `OTEL_TRACES_EXPORTER` names no exporter this build has (`otlp`, or `none`).
    #[error("OTEL_TRACES_EXPORTER={0:?} names no exporter this build has: use otlp or none")]
    Exporter(String),
    /// The exporter or its thread could not be built, or the protocol asked for is not in this
    /// build.
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// Where spans go: nowhere (the default without an `OTEL_*` endpoint), or an OTLP exporter.
///
/// Cheap to clone; clones share the exporter.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Enabled>>,
}

struct Enabled {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Telemetry {
    /// No tracing: spans are neither made nor exported (a `traceparent` a message brings is
    /// still passed on to the messages its run sends).
    ///
    /// ```
    /// use celerity::telemetry::Telemetry;
    /// let app = celerity::App::builder().telemetry(Telemetry::disabled()).build()?;
    /// assert!(!app.settings().telemetry().is_enabled());
    /// # Ok::<(), celerity::ConfigError>(())
    /// ```
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Tracing as the standard environment says: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (or `OTEL_TRACES_EXPORTER=otlp`), off when
    /// neither is, or with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter
    /// reads `OTEL_EXPORTER_OTLP_*` (endpoint, protocol `http/protobuf` by default or `grpc`
    /// with the `otlp-grpc` feature, headers, timeout), the sampler `OTEL_TRACES_SAMPLER` and
    /// `OTEL_TRACES_SAMPLER_ARG`, the resource `OTEL_SERVICE_NAME` and
    /// `OTEL_RESOURCE_ATTRIBUTES` (service name [`DEFAULT_SERVICE_NAME`] when unnamed), and the
    /// export queue `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` and
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
    ///
    /// ```
    /// // With no OTEL_EXPORTER_OTLP_ENDPOINT in the environment, tracing is off.
    /// # if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    /// #     && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    /// #     && std::env::var_os("OTEL_TRACES_EXPORTER").is_none() {
    /// let telemetry = celerity::telemetry::Telemetry::from_env()?;
    /// assert!(!telemetry.is_enabled());
    /// # }
    /// # Ok::<(), celerity::telemetry::TelemetryError>(())
    /// ```
    ///
    /// # Errors
    /// [`TelemetryError`] for an exporter or protocol this build does not have, or an exporter
    /// that cannot be built.
    pub fn from_env() -> Result<Self, TelemetryError> {
        let var = |name: &str| std::env::var(name).ok();
        match wanted(var)? {
            true => Self::exporting(export::Transport::from_env()?, None),
            false => Ok(Self::disabled()),
        }
    }

    /// Tracing to the OTLP/HTTP collector at `endpoint` (`http://host:4318`; spans go to
    /// `<endpoint>/v1/traces`), whatever the `OTEL_EXPORTER_OTLP_*` variables say; the sampler,
    /// resource and queue still come from the environment.
    ///
    /// ```no_run
    /// use celerity::telemetry::Telemetry;
    /// let telemetry = Telemetry::otlp_http("http://127.0.0.1:4318")?;
    /// let app = celerity::App::builder().telemetry(telemetry).build()?;
    /// // ... send tasks; before the process exits:
    /// app.settings().telemetry().flush();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`TelemetryError::Export`] when the exporter cannot be built.
    pub fn otlp_http(endpoint: &str) -> Result<Self, TelemetryError> {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        Self::exporting(export::Transport::Http(Some(url)), None)
    }

    /// As [`Telemetry::otlp_http`], sampling a `ratio` (0 to 1) of the traces that start here
    /// and following the parent's decision for the others (`parentbased_traceidratio`).
    ///
    /// # Errors
    /// [`TelemetryError::Export`] when the exporter cannot be built.
    pub fn otlp_http_sampled(endpoint: &str, ratio: f64) -> Result<Self, TelemetryError> {
        use opentelemetry_sdk::trace::Sampler;
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
        Self::exporting(export::Transport::Http(Some(url)), Some(sampler))
    }

    /// Tracing through the OTLP exporter of `transport`, with `sampler` or the environment's.
    fn exporting(
        transport: export::Transport,
        sampler: Option<opentelemetry_sdk::trace::Sampler>,
    ) -> Result<Self, TelemetryError> {
        let (processor, dropped) =
            export::QueuedProcessor::start(transport, export::QueueConfig::from_env())?;
        let mut builder = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource());
        if let Some(sampler) = sampler {
            builder = builder.with_sampler(sampler);
        }
        Ok(Self::with_provider_and_drops(builder.build(), dropped))
    }

    /// Tracing through `provider`, one the application built (its spans then go wherever it
    /// sends them; [`Telemetry::spans_dropped`] counts nothing).
    pub fn with_provider(provider: SdkTracerProvider) -> Self {
        Self::with_provider_and_drops(provider, Arc::default())
    }

    fn with_provider_and_drops(
        provider: SdkTracerProvider,
        dropped: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let scope = opentelemetry::InstrumentationScope::builder("celerity")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Self {
            inner: Some(Arc::new(Enabled {
                provider,
                tracer,
                dropped,
            })),
        }
    }

    /// Whether spans are made.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Spans dropped so far: the export queue was full, or their export failed.
    pub fn spans_dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |inner| {
            inner.dropped.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Exports the spans ended so far, blocking the calling thread up to 2 s (from async code,
    /// call it in `tokio::task::spawn_blocking`); a worker does it as it stops.
    pub fn flush(&self) {
        if let Some(inner) = &self.inner
            && let Err(error) = inner.provider.force_flush()
        {
            tracing::debug!(error = %error, "cannot flush the spans");
        }
    }

    /// Starts the span of one publish of `envelope` to `subject` (queue `queue`): a child of the
    /// current context's span, else of the envelope's own `traceparent`, else a new trace; with
    /// the links of a chord body when the current context carries them. `None` when disabled.
    pub(crate) fn start_publish(
        &self,
        envelope: &Envelope,
        queue: &QueueName,
        subject: &str,
    ) -> Option<Context> {
        let inner = self.inner.as_ref()?;
        let current = Context::current();
        let parent = match current.has_active_span() {
            true => current,
            false => remote_parent(envelope).unwrap_or(current),
        };
        // Inside a trace sampled out: no span, the context is passed on as it is.
        if parent.has_active_span() && !parent.span().span_context().is_sampled() {
            return None;
        }
        let mut builder = inner
            .tracer
            .span_builder("publish")
            .with_kind(SpanKind::Producer);
        let links = parent.get::<ChordLinks>();
        if let Some(links) = links {
            builder = builder.with_links(links.links.clone());
        }
        let mut span = builder.start_with_context(&inner.tracer, &parent);
        // Attributes only for a span that is recorded: a trace sampled out costs no strings.
        if span.is_recording() {
            // Named once it is known to be recorded: a span sampled out costs no string.
            span.update_name(format!("publish {}", envelope.task));
            let mut attributes = task_attributes(envelope, queue, subject);
            attributes.push(KeyValue::new("messaging.operation.type", "send"));
            attributes.push(KeyValue::new("messaging.operation.name", "publish"));
            if let Some(links) = links {
                attributes.push(KeyValue::new("celerity.chord.size", i64::from(links.size)));
                attributes.push(KeyValue::new(
                    "celerity.chord.links_dropped",
                    i64::from(links.dropped),
                ));
            }
            span.set_attributes(attributes);
        }
        Some(parent.with_span(span))
    }

    /// The context of one delivery's run: a `process` span whose parent is the message's
    /// `traceparent` (a malformed or missing one starts a new trace). Disabled, the message's
    /// own context when it brought one, to pass on; else `None`.
    pub(crate) fn start_process(&self, delivery: &ProcessInfo<'_>) -> Option<Context> {
        let envelope = delivery.envelope;
        let Some(inner) = self.inner.as_ref() else {
            return remote_parent(envelope);
        };
        let parent = remote_parent(envelope).unwrap_or_default();
        // A trace sampled out stays out (a trace is sampled whole or not at all): the run makes
        // no span and passes the message's context on as it came.
        if parent.has_active_span() && !parent.span().span_context().is_sampled() {
            return Some(parent);
        }
        let mut span = inner
            .tracer
            .span_builder("process")
            .with_kind(SpanKind::Consumer)
            .start_with_context(&inner.tracer, &parent);
        if span.is_recording() {
            span.update_name(format!("process {}", envelope.task));
            let mut attributes = task_attributes(envelope, delivery.queue, delivery.subject);
            attributes.extend([
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new(
                    "messaging.consumer.group.name",
                    delivery.consumer.to_owned(),
                ),
                KeyValue::new("celerity.delivery", delivery.delivered as i64),
                KeyValue::new("celerity.worker", delivery.worker.to_owned()),
            ]);
            span.set_attributes(attributes);
        }
        Some(parent.with_span(span))
    }

    /// Starts an `apply <kind>` span, the root of a canvas's trace (a child of the current span,
    /// when there is one). `None` when disabled.
    pub(crate) fn start_canvas(&self, kind: &'static str, root_id: &str) -> Option<Context> {
        let inner = self.inner.as_ref()?;
        let parent = Context::current();
        let span = inner
            .tracer
            .span_builder(Cow::Owned(format!("apply {kind}")))
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("celerity.canvas", kind),
                KeyValue::new("celerity.root_id", root_id.to_owned()),
            ])
            .start_with_context(&inner.tracer, &parent);
        Some(parent.with_span(span))
    }
}

/// Whether the variables `var` reads ask for tracing (see [`Telemetry::from_env`]).
fn wanted(var: impl Fn(&str) -> Option<String>) -> Result<bool, TelemetryError> {
    let var = |name: &str| var(name).filter(|value| !value.is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    // A list (`otlp,console`) is allowed; Celerity exports to the OTLP one.
    let explicit = match var("OTEL_TRACES_EXPORTER") {
        None => false,
        Some(list) => {
            let names: Vec<&str> = list.split(',').map(str::trim).collect();
            if names.contains(&"otlp") {
                true
            } else if names.iter().all(|name| *name == "none") {
                return Ok(false);
            } else {
                return Err(TelemetryError::Exporter(list));
            }
        }
    };
    let endpoint =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    Ok(endpoint.is_some() || explicit)
}

/// What a delivery's `process` span records of it.
pub(crate) struct ProcessInfo<'a> {
    pub(crate) envelope: &'a Envelope,
    pub(crate) queue: &'a QueueName,
    /// The message's subject.
    pub(crate) subject: &'a str,
    /// The durable consumer it came from.
    pub(crate) consumer: &'a str,
    pub(crate) delivered: u64,
    pub(crate) worker: &'a str,
}

/// The attributes a task's publish and process spans share.
fn task_attributes(envelope: &Envelope, queue: &QueueName, subject: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.destination.name", subject.to_owned()),
        KeyValue::new("messaging.message.id", envelope.id.to_string()),
        KeyValue::new("celerity.task.name", envelope.task.to_string()),
        KeyValue::new("celerity.task.retries", i64::from(envelope.retries)),
        KeyValue::new("celerity.queue", queue.to_string()),
        KeyValue::new("celerity.priority", i64::from(envelope.priority.get())),
    ]
}

/// The resource of every span: the environment's, named [`DEFAULT_SERVICE_NAME`] when it names no
/// service.
fn resource() -> opentelemetry_sdk::Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|name| !name.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    let builder = opentelemetry_sdk::Resource::builder();
    match named {
        true => builder.build(),
        false => builder.with_service_name(DEFAULT_SERVICE_NAME).build(),
    }
}

/// The header members' run spans a chord body's publish links to, carried in the context the
/// body is sent in.
#[derive(Debug, Clone)]
pub(crate) struct ChordLinks {
    links: Vec<Link>,
    size: u32,
    dropped: u32,
}

impl ChordLinks {
    /// Links to the members whose `traceparent`s were kept (at most [`MAX_CHORD_LINKS`]), of a
    /// chord of `size` members.
    pub(crate) fn new<'a>(traceparents: impl Iterator<Item = &'a str>, size: u32) -> Self {
        let links: Vec<Link> = traceparents
            .filter_map(|traceparent| span_context_of(traceparent, None))
            .take(MAX_CHORD_LINKS)
            .map(Link::with_context)
            .collect();
        let dropped = size.saturating_sub(links.len() as u32);
        Self {
            links,
            size,
            dropped,
        }
    }
}

/// The context a chord body is sent in: the chord's own (the `traceparent` its definition
/// recorded), carrying the links to its members.
pub(crate) fn chord_body_context(traceparent: Option<&str>, links: ChordLinks) -> Context {
    let parent = traceparent
        .and_then(|traceparent| span_context_of(traceparent, None))
        .map_or_else(Context::new, |context| {
            Context::new().with_remote_span_context(context)
        });
    parent.with_value(links)
}

/// Ends the span of `context` (a publish or a run), as an error when `error` says why.
pub(crate) fn end(context: &Context, error: Option<&str>) {
    let span = context.span();
    if let Some(error) = error {
        span.set_status(Status::error(error.to_owned()));
    }
    span.end();
}

/// Records on the current run's span how the task ended.
pub(crate) fn record_state(state: &str, error: Option<&str>) {
    let context = Context::current();
    let span = context.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new("celerity.task.state", state.to_owned()));
    if let Some(error) = error {
        span.set_status(Status::error(error.to_owned()));
    }
}

/// The `traceparent` (and `tracestate`) of `context`'s span, when it has a valid one.
pub(crate) fn traceparent_of(context: &Context) -> Option<(String, Option<String>)> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut fields = Fields::default();
    TraceContextPropagator::new().inject_context(context, &mut fields);
    fields
        .traceparent
        .map(|traceparent| (traceparent, fields.tracestate))
}

/// The `traceparent` of the current context's span (a run's, a publish's), if any.
pub(crate) fn current_traceparent() -> Option<String> {
    traceparent_of(&Context::current()).map(|(traceparent, _)| traceparent)
}

/// The trace id (32 hex digits) of the current context's span, if it is in a sampled trace (one
/// a trace viewer will have: a record names no trace that was sampled out).
pub(crate) fn current_trace_id() -> Option<String> {
    let context = Context::current();
    let span = context.span();
    let span_context = span.span_context();
    (span_context.is_valid() && span_context.is_sampled())
        .then(|| span_context.trace_id().to_string())
}

/// The context an envelope's `traceparent` names (`None` when it has none, or a malformed one).
fn remote_parent(envelope: &Envelope) -> Option<Context> {
    let traceparent = envelope.traceparent.as_deref()?;
    let context = span_context_of(traceparent, envelope.tracestate.as_deref())?;
    Some(Context::new().with_remote_span_context(context))
}

/// The span context a `traceparent` (and `tracestate`) names, if valid.
fn span_context_of(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let fields = Fields {
        traceparent: Some(traceparent.to_owned()),
        tracestate: tracestate.map(str::to_owned),
    };
    let context = TraceContextPropagator::new().extract(&fields);
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The two W3C trace context fields, as the propagator reads and writes them.
#[derive(Default)]
struct Fields {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Fields {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_is_read_and_a_malformed_one_is_not() {
        let context = span_context_of(PARENT, Some("vendor=value")).unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(context.is_remote() && context.is_sampled());
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ] {
            assert!(span_context_of(bad, None).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_context_is_written_back_as_the_traceparent_it_was_read_from() {
        let context =
            Context::new().with_remote_span_context(span_context_of(PARENT, None).unwrap());
        assert_eq!(traceparent_of(&context), Some((PARENT.to_owned(), None)));
        assert_eq!(traceparent_of(&Context::new()), None);
    }

    #[test]
    fn chord_links_are_bounded_and_the_rest_counted() {
        let many = vec![PARENT; MAX_CHORD_LINKS + 10];
        let links = ChordLinks::new(many.into_iter(), 1_000);
        assert_eq!(links.links.len(), MAX_CHORD_LINKS);
        assert_eq!(links.dropped, 1_000 - MAX_CHORD_LINKS as u32);
    }

    #[test]
    fn the_environment_turns_tracing_on_only_with_an_endpoint_or_otlp() {
        let with = |pairs: &'static [(&'static str, &'static str)]| {
            wanted(move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        };
        assert!(!with(&[]).unwrap());
        assert!(!with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap());
        assert!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap());
        assert!(
            with(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )])
            .unwrap()
        );
        assert!(with(&[("OTEL_TRACES_EXPORTER", "otlp,console")]).unwrap());
        const OFF: [(&str, &str); 2] = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert!(!with(&OFF).unwrap());
        assert!(
            !with(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_EXPORTER", "none")
            ])
            .unwrap()
        );
        let zipkin = with(&[("OTEL_TRACES_EXPORTER", "zipkin")])
            .unwrap_err()
            .to_string();
        assert!(
            zipkin.contains("zipkin") && zipkin.contains("use otlp or none"),
            "{zipkin}"
        );
    }
}
