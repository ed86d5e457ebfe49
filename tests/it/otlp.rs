//! An OTLP/HTTP trace receiver inside the test process, standing in for Jaeger or a collector:
//! workers and producers export to [`OtlpReceiver::endpoint`] and tests assert on the spans.
//!
//! It speaks what opentelemetry-otlp's HTTP exporter sends: `POST /v1/traces` with an
//! `application/x-protobuf` `ExportTraceServiceRequest`, uncompressed (the workspace builds the
//! exporter without `gzip-http` or `zstd-http`, so it cannot compress), and answers with an empty
//! `ExportTraceServiceResponse`.
//! It is not a trace store: it keeps every span in memory, in arrival order, for one test.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::StatusCode as HttpStatus;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use tokio::sync::watch;

/// The content type of OTLP/HTTP protobuf requests and responses.
const PROTOBUF: &str = "application/x-protobuf";

/// The largest body accepted; actix-web's default (256 kB) is smaller than a full batch.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One span as it arrived, with the `service.name` of the resource it came under.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReceivedSpan {
    /// The resource's `service.name` (`OTEL_SERVICE_NAME`), or `""` when it has none.
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) kind: SpanKind,
    pub(crate) status: ReceivedStatus,
    pub(crate) links: Vec<ReceivedLink>,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: Attributes,
}

/// A span's status: its code and, for errors, the description.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReceivedStatus {
    pub(crate) code: StatusCode,
    pub(crate) message: String,
}

/// A link from a span to another span context, with the link's own attributes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReceivedLink {
    /// 32 lowercase hex digits.
    pub(crate) trace_id_hex: String,
    /// 16 lowercase hex digits.
    pub(crate) span_id_hex: String,
    attributes: Attributes,
}

/// Key-value attributes, their values rendered as strings.
#[derive(Debug, Clone, Default, PartialEq)]
struct Attributes(Vec<(String, Option<String>)>);

/// An OTLP/HTTP receiver on a free loopback port, served on a thread (and actix system) of its
/// own; it stops serving when dropped.
#[derive(Debug)]
pub(crate) struct OtlpReceiver {
    addr: SocketAddr,
    shared: web::Data<Shared>,
    server: actix_web::dev::ServerHandle,
}

/// What the handlers and the test share.
#[derive(Debug)]
struct Shared {
    received: watch::Sender<Received>,
    failing: AtomicBool,
}

/// Everything received so far; a change wakes every waiter.
#[derive(Debug, Clone, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    n_requests: usize,
    n_rejected: usize,
}

impl ReceivedSpan {
    /// The trace id: 32 lowercase hex digits, as in a `traceparent` header.
    pub(crate) fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id: 16 lowercase hex digits.
    pub(crate) fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The parent's span id, or `None` for a root span.
    pub(crate) fn parent_span_id_hex(&self) -> Option<String> {
        (!self.parent_span_id.is_empty()).then(|| hex(&self.parent_span_id))
    }

    /// The attribute `key` rendered as a string (strings as they are, integers in decimal, booleans
    /// as `true`/`false`), or `None` when the span lacks it or its value is of another type.
    pub(crate) fn attr(&self, key: &str) -> Option<String> {
        self.attributes.get(key)
    }

    fn from_proto(service: &str, span: Span) -> Self {
        let Status { message, code } = span.status.unwrap_or_default();
        Self {
            service: service.to_owned(),
            kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
            status: ReceivedStatus {
                code: StatusCode::try_from(code).unwrap_or(StatusCode::Unset),
                message,
            },
            links: span
                .links
                .into_iter()
                .map(ReceivedLink::from_proto)
                .collect(),
            attributes: Attributes::from_proto(&span.attributes),
            name: span.name,
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent_span_id,
        }
    }
}

impl ReceivedLink {
    /// The link's attribute `key`, rendered as by [`ReceivedSpan::attr`].
    pub(crate) fn attr(&self, key: &str) -> Option<String> {
        self.attributes.get(key)
    }

    fn from_proto(link: Link) -> Self {
        Self {
            trace_id_hex: hex(&link.trace_id),
            span_id_hex: hex(&link.span_id),
            attributes: Attributes::from_proto(&link.attributes),
        }
    }
}

impl Attributes {
    fn from_proto(attributes: &[KeyValue]) -> Self {
        let rendered = attributes.iter().map(|attribute| {
            let value = attribute
                .value
                .as_ref()
                .and_then(|value| match &value.value {
                    Some(any_value::Value::StringValue(text)) => Some(text.clone()),
                    Some(any_value::Value::IntValue(number)) => Some(number.to_string()),
                    Some(any_value::Value::BoolValue(flag)) => Some(flag.to_string()),
                    _ => None,
                });
            (attribute.key.clone(), value)
        });
        Self(rendered.collect())
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .and_then(|(_, value)| value.clone())
    }
}

impl OtlpReceiver {
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = web::Data::new(Shared {
            received: watch::Sender::new(Received::default()),
            failing: AtomicBool::new(false),
        });
        let served = shared.clone();
        let (started, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("it-otlp-receiver".to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let server = serve(listener, served);
                    let _ = started.send(server.handle());
                    server
                        .await
                        .expect("the OTLP receiver serves until stopped");
                });
            })
            .expect("the OTLP receiver's thread starts");
        let server = handle.recv().expect("the OTLP receiver starts serving");
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: the value for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter adds
    /// `/v1/traces`).
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub(crate) fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.received.borrow().spans.clone()
    }

    /// How many export requests arrived, answered or not (rejected and 503 ones included).
    pub(crate) fn n_requests(&self) -> usize {
        self.shared.received.borrow().n_requests
    }

    /// How many export requests were refused as malformed (400) or in a form it does not read
    /// (415).
    pub(crate) fn n_rejected(&self) -> usize {
        self.shared.received.borrow().n_rejected
    }

    /// While `failing`, every request gets 503 and nothing is stored: an endpoint that is down.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Waits until `predicate` holds for the spans received so far and returns them.
    ///
    /// # Panics
    /// When it does not hold within `within`, naming `what` and listing the spans received.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        predicate: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        self.wait_until(what, within, |received| predicate(&received.spans))
            .await
            .spans
    }

    /// Waits until at least `n_requests` export requests have arrived (answered or not).
    ///
    /// # Panics
    /// When they do not within `within`, naming `what`.
    pub(crate) async fn wait_for_requests(&self, what: &str, within: Duration, n_requests: usize) {
        self.wait_until(what, within, |received| received.n_requests >= n_requests)
            .await;
    }

    async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        mut condition: impl FnMut(&Received) -> bool,
    ) -> Received {
        let mut changes = self.shared.received.subscribe();
        let waited = tokio::time::timeout(within, async {
            let received = changes
                .wait_for(&mut condition)
                .await
                .expect("the receiver's state outlives its waiters");
            received.clone()
        })
        .await;
        match waited {
            Ok(received) => received,
            Err(_) => panic!(
                "{what} never happened within {within:?}; the OTLP receiver {}",
                self.shared.received.borrow().summary()
            ),
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        // NOTE: `stop` sends the command before it returns; the thread ends once the server has
        // stopped, and nothing waits for it, so a test never blocks in drop.
        drop(self.server.stop(false));
    }
}

impl Received {
    fn summary(&self) -> String {
        let spans: Vec<String> = self
            .spans
            .iter()
            .map(|span| format!("{}/{} ({:?})", span.service, span.name, span.kind))
            .collect();
        format!(
            "had {} export requests ({} rejected) and {} spans: {spans:?}",
            self.n_requests,
            self.n_rejected,
            spans.len()
        )
    }
}

fn serve(listener: TcpListener, shared: web::Data<Shared>) -> actix_web::dev::Server {
    HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route("/v1/traces", web::post().to(export))
            .default_service(web::to(elsewhere))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("actix-web takes the bound listener")
    .run()
}

/// `POST /v1/traces`.
async fn export(request: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if shared.failing.load(Ordering::SeqCst) {
        shared
            .received
            .send_modify(|received| received.n_requests += 1);
        return HttpResponse::ServiceUnavailable().body("the receiver is set to fail\n");
    }
    match decode(request.headers(), &body) {
        Ok(export) => {
            let spans = spans_of(export);
            shared.received.send_modify(|received| {
                received.n_requests += 1;
                received.spans.extend(spans);
            });
            HttpResponse::Ok()
                .content_type(PROTOBUF)
                .body(ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err((status, reason)) => {
            shared.received.send_modify(|received| {
                received.n_requests += 1;
                received.n_rejected += 1;
            });
            HttpResponse::build(status).body(format!("{reason}\n"))
        }
    }
}

/// Any other path or method: 404, or 503 while failing.
async fn elsewhere(shared: web::Data<Shared>) -> HttpResponse {
    if shared.failing.load(Ordering::SeqCst) {
        HttpResponse::ServiceUnavailable().finish()
    } else {
        HttpResponse::NotFound().finish()
    }
}

/// The request's body as an export request, or the status and reason that refuse it.
fn decode(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ExportTraceServiceRequest, (HttpStatus, String)> {
    let content_type = header_text(headers, &header::CONTENT_TYPE);
    if content_type.split(';').next().map(str::trim) != Some(PROTOBUF) {
        let reason = format!("content type {content_type:?} is not {PROTOBUF}");
        return Err((HttpStatus::UNSUPPORTED_MEDIA_TYPE, reason));
    }
    let encoding = header_text(headers, &header::CONTENT_ENCODING);
    if !(encoding.is_empty() || encoding.eq_ignore_ascii_case("identity")) {
        let reason = format!("content encoding {encoding:?} is not read here");
        return Err((HttpStatus::UNSUPPORTED_MEDIA_TYPE, reason));
    }
    ExportTraceServiceRequest::decode(body).map_err(|error| {
        let reason = format!("not an ExportTraceServiceRequest: {error}");
        (HttpStatus::BAD_REQUEST, reason)
    })
}

fn header_text(headers: &HeaderMap, name: &header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Every span of `export`, each with its resource's `service.name`.
fn spans_of(export: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let service = Attributes::from_proto(&resource.attributes)
            .get("service.name")
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            spans.extend(
                scope_spans
                    .spans
                    .into_iter()
                    .map(|span| ReceivedSpan::from_proto(&service, span)),
            );
        }
    }
    spans
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    use super::*;

    /// What the receiver answered.
    struct Answer {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    }

    fn post(receiver: &OtlpReceiver, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let url = format!("{}{path}", receiver.endpoint());
        let mut request = agent.post(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body).expect("the receiver answers");
        Answer {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            body: response
                .body_mut()
                .read_to_vec()
                .expect("the answer's body"),
        }
    }

    /// `POST /v1/traces` with `headers` and `body`.
    fn post_traces(receiver: &OtlpReceiver, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        post(receiver, "/v1/traces", headers, body)
    }

    /// Asserts that the receiver got `n_requests` requests, rejected each and stored no span.
    fn assert_all_rejected(receiver: &OtlpReceiver, n_requests: usize) {
        assert_eq!(
            (receiver.n_requests(), receiver.n_rejected()),
            (n_requests, n_requests)
        );
        assert_eq!(receiver.spans(), Vec::new());
    }

    fn attribute(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn text(key: &str, value: &str) -> KeyValue {
        attribute(key, any_value::Value::StringValue(value.to_owned()))
    }

    /// An export request of `spans` under a resource named `service`, encoded.
    fn export_body(service: &str, spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![text("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn root_span() -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            name: "send add".to_owned(),
            kind: SpanKind::Producer as i32,
            ..Default::default()
        }
    }

    fn child_span() -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x02; 8],
            parent_span_id: vec![0x01; 8],
            name: "run add".to_owned(),
            kind: SpanKind::Consumer as i32,
            attributes: vec![
                text("messaging.message.id", "t-1"),
                attribute("celerity.retries", any_value::Value::IntValue(2)),
                attribute("celerity.eager", any_value::Value::BoolValue(true)),
                attribute("celerity.ratio", any_value::Value::DoubleValue(0.5)),
            ],
            links: vec![Link {
                trace_id: vec![0xcd; 16],
                span_id: vec![0x03; 8],
                attributes: vec![text("celerity.link", "chord member")],
                ..Default::default()
            }],
            status: Some(Status {
                message: "boom".to_owned(),
                code: StatusCode::Error as i32,
            }),
            ..Default::default()
        }
    }

    const PROTOBUF_BODY: (&str, &str) = ("Content-Type", PROTOBUF);

    #[tokio::test]
    async fn receiver_stores_exported_spans_with_their_service_attributes_links_and_status() {
        let receiver = OtlpReceiver::start();
        let body = export_body("it-service", vec![root_span(), child_span()]);

        let answer = post_traces(&receiver, &[PROTOBUF_BODY], &body);

        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.content_type, PROTOBUF);
        let response = ExportTraceServiceResponse::decode(answer.body.as_slice())
            .expect("the answer is an ExportTraceServiceResponse");
        assert_eq!(response, ExportTraceServiceResponse::default());
        let spans = receiver
            .wait_for("both spans arrive", Duration::from_secs(5), |spans| {
                spans.len() == 2
            })
            .await;
        assert_eq!(spans, receiver.spans());
        let [root, child] = spans.as_slice() else {
            panic!("two spans: {spans:?}")
        };
        assert_eq!(
            (root.service.as_str(), root.name.as_str(), root.kind),
            ("it-service", "send add", SpanKind::Producer)
        );
        assert_eq!(root.trace_id_hex(), "ab".repeat(16));
        assert_eq!(root.span_id_hex(), "0101010101010101");
        assert_eq!(root.parent_span_id_hex(), None);
        assert_eq!(root.status.code, StatusCode::Unset);
        assert_eq!(
            (child.name.as_str(), child.kind),
            ("run add", SpanKind::Consumer)
        );
        assert_eq!(child.parent_span_id_hex(), Some(root.span_id_hex()));
        assert_eq!(child.attr("messaging.message.id").as_deref(), Some("t-1"));
        assert_eq!(child.attr("celerity.retries").as_deref(), Some("2"));
        assert_eq!(child.attr("celerity.eager").as_deref(), Some("true"));
        assert_eq!(
            child.attr("celerity.ratio"),
            None,
            "doubles are not rendered"
        );
        assert_eq!(child.attr("celerity.missing"), None);
        let [link] = child.links.as_slice() else {
            panic!("one link: {:?}", child.links)
        };
        assert_eq!(link.trace_id_hex, "cd".repeat(16));
        assert_eq!(link.span_id_hex, "0303030303030303");
        assert_eq!(link.attr("celerity.link").as_deref(), Some("chord member"));
        assert_eq!(
            child.status,
            ReceivedStatus {
                code: StatusCode::Error,
                message: "boom".to_owned()
            }
        );
        assert_eq!((receiver.n_requests(), receiver.n_rejected()), (1, 0));
    }

    #[tokio::test]
    async fn receiver_answers_400_to_a_body_that_is_not_an_export_request_and_counts_it() {
        let receiver = OtlpReceiver::start();

        let answer = post_traces(&receiver, &[PROTOBUF_BODY], &[0xff; 12]);

        assert_eq!(
            answer.status,
            400,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_all_rejected(&receiver, 1);
    }

    #[tokio::test]
    async fn receiver_answers_415_to_compressed_or_non_protobuf_bodies_and_counts_them() {
        let receiver = OtlpReceiver::start();
        let body = export_body("it-service", vec![root_span()]);

        let gzip = post_traces(
            &receiver,
            &[PROTOBUF_BODY, ("Content-Encoding", "gzip")],
            &body,
        );
        let json = post_traces(&receiver, &[("Content-Type", "application/json")], b"{}");

        assert_eq!((gzip.status, json.status), (415, 415));
        assert_all_rejected(&receiver, 2);
    }

    #[tokio::test]
    async fn failing_receiver_answers_503_to_everything_until_it_recovers() {
        let receiver = OtlpReceiver::start();
        let body = export_body("it-service", vec![root_span()]);
        receiver.set_failing(true);

        let refused = post_traces(&receiver, &[PROTOBUF_BODY], &body);
        let elsewhere = post(&receiver, "/", &[PROTOBUF_BODY], &body);
        receiver
            .wait_for_requests("the refused export is counted", Duration::from_secs(5), 1)
            .await;
        receiver.set_failing(false);
        let accepted = post_traces(&receiver, &[PROTOBUF_BODY], &body);

        assert_eq!(
            (refused.status, elsewhere.status, accepted.status),
            (503, 503, 200)
        );
        let spans = receiver
            .wait_for(
                "the span sent after recovery",
                Duration::from_secs(5),
                |spans| !spans.is_empty(),
            )
            .await;
        assert_eq!(spans.len(), 1, "{spans:?}");
        assert_eq!((receiver.n_requests(), receiver.n_rejected()), (2, 0));
    }

    /// Exports one producer span through opentelemetry-otlp's HTTP exporter, as the worker and
    /// the producer do, and shuts the exporter down.
    fn export_with_the_sdk(endpoint: &str) {
        use opentelemetry::trace::{
            Span as _, SpanKind as SdkSpanKind, Tracer as _, TracerProvider,
        };
        use opentelemetry_otlp::WithExportConfig;

        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            // NOTE: `with_endpoint` is the whole URL; `OTEL_EXPORTER_OTLP_ENDPOINT` is a base.
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .build()
            .expect("the OTLP/HTTP exporter builds");
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("it-sdk")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("celerity-it");
        let mut span = tracer
            .span_builder("send add")
            .with_kind(SdkSpanKind::Producer)
            .with_attributes([opentelemetry::KeyValue::new("messaging.message.id", "t-9")])
            .start(&tracer);
        span.end();
        provider.force_flush().expect("the exporter flushes");
        provider.shutdown().expect("the exporter shuts down");
    }

    #[tokio::test]
    async fn receiver_reads_what_the_opentelemetry_otlp_http_exporter_sends() {
        let receiver = OtlpReceiver::start();
        let endpoint = receiver.endpoint();

        tokio::task::spawn_blocking(move || export_with_the_sdk(&endpoint))
            .await
            .expect("the export finishes");

        let spans = receiver
            .wait_for("the SDK's span", Duration::from_secs(10), |spans| {
                !spans.is_empty()
            })
            .await;
        let [span] = spans.as_slice() else {
            panic!("one span: {spans:?}")
        };
        assert_eq!(
            (span.service.as_str(), span.name.as_str(), span.kind),
            ("it-sdk", "send add", SpanKind::Producer)
        );
        assert_eq!(span.attr("messaging.message.id").as_deref(), Some("t-9"));
        assert_eq!(span.trace_id_hex().len(), 32);
        assert_eq!(span.parent_span_id_hex(), None);
        assert_eq!(receiver.n_rejected(), 0);
    }

    #[tokio::test]
    async fn waiting_for_spans_that_never_come_names_what_was_awaited() {
        let receiver = OtlpReceiver::start();

        let waited = tokio::spawn(async move {
            receiver
                .wait_for("the worker's span", Duration::from_millis(100), |spans| {
                    !spans.is_empty()
                })
                .await
        })
        .await;

        let panic = waited.expect_err("the wait times out").into_panic();
        let message = panic
            .downcast_ref::<String>()
            .expect("the panic carries a formatted message");
        assert!(
            message.starts_with("the worker's span never happened within 100ms"),
            "{message}"
        );
    }
}
