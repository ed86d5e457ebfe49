//! The bench's OTLP sink (`--trace`): an OTLP/HTTP endpoint on loopback that takes every export
//! (`POST /v1/traces`) and answers it as a collector does, so tracing is measured exporting for
//! real, over HTTP, without a collector to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;

/// What the producer and the worker trace with: the sink's endpoint and the sampled ratio.
#[derive(Debug, Clone)]
pub(crate) struct Tracing {
    pub(crate) endpoint: String,
    pub(crate) ratio: f64,
}

/// The running sink; it stops when dropped.
pub(crate) struct TraceSink {
    endpoint: String,
    handle: actix_web::dev::ServerHandle,
    exports: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TraceSink {
    /// Serves on a free loopback port, on a thread of its own.
    pub(crate) fn start() -> anyhow::Result<Self> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind the OTLP sink")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let exports = Arc::new(AtomicU64::new(0));
        let counted = exports.clone();
        let (started, handle) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bench-otlp-sink".to_owned())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let counted = web::Data::new(counted);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(counted.clone())
                            .app_data(web::PayloadConfig::new(64 << 20))
                            .route("/v1/traces", web::post().to(take))
                    })
                    .workers(1)
                    .listen(listener)
                    .map(HttpServer::run);
                    match server {
                        Ok(server) => {
                            let _ = started.send(Ok(server.handle()));
                            let _ = server.await;
                        }
                        Err(error) => {
                            let _ = started.send(Err(error));
                        }
                    }
                });
            })
            .context("cannot start the OTLP sink's thread")?;
        let handle = handle
            .recv()
            .context("the OTLP sink's thread ended")?
            .context("cannot serve the OTLP sink")?;
        Ok(Self {
            endpoint,
            handle,
            exports,
            thread: Some(thread),
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Export requests taken so far.
    pub(crate) fn exports(&self) -> u64 {
        self.exports.load(Ordering::Relaxed)
    }
}

impl Drop for TraceSink {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Takes one export: an empty `ExportTraceServiceResponse` (zero bytes of protobuf) says all
/// spans were accepted.
async fn take(exports: web::Data<Arc<AtomicU64>>, _body: web::Bytes) -> HttpResponse {
    exports.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}
