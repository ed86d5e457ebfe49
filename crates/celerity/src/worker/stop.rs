//! How a worker is asked to stop: [`request`] (what `WorkerHandle::shutdown` calls), and the
//! signal handlers that turn SIGTERM and SIGINT into requests (the first warm, the next cold).

use actix::prelude::*;

use crate::worker::root;
use crate::worker::shutdown::Shutdown;

/// Asks the root actor to stop in `mode`.
pub(super) fn request(root: &Addr<root::Worker>, mode: Shutdown) {
    root.do_send(root::StopWorker(mode));
}

type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// Installs the SIGTERM and SIGINT handlers on `runtime` and forwards them to `root`; a worker
/// whose handlers cannot be installed logs it and runs on.
pub(super) fn forward_signals_on(runtime: &tokio::runtime::Runtime, root: &Addr<root::Worker>) {
    // INVARIANT: the handlers are installed before the worker starts consuming, so a SIGTERM
    // that arrives right after it reports ready is a warm shutdown, not the default kill.
    match runtime.block_on(async { install_signal_handlers() }) {
        Ok(signals) => drop(runtime.spawn(forward_signals(root.clone(), signals))),
        Err(error) => {
            tracing::error!(error = %error, "cannot install signal handlers; stop the worker with SIGKILL")
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers (inside a runtime).
fn install_signal_handlers() -> std::io::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    ))
}

/// Turns every SIGTERM or SIGINT into a shutdown request: the first warm, the next cold (the root
/// actor makes every request after the first cold).
async fn forward_signals(root: Addr<root::Worker>, (mut terminate, mut interrupt): Signals) {
    loop {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        request(&root, Shutdown::Warm);
    }
}
