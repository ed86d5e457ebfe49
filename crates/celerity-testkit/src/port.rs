//! Picking a free loopback port before a server starts, for a caller that must know the port
//! first (e.g. to start a worker before the server it connects to).
//!
//! The port is only free at the moment it is read; another process may take it before the server
//! binds it. A server started without [`NatsServerBuilder::port`](crate::NatsServerBuilder::port)
//! does not use this: it picks its port itself.

use std::net::{Ipv4Addr, TcpListener};

use crate::TestkitError;

/// Returns a port that is free on 127.0.0.1 right now.
///
/// Binds 127.0.0.1:0, reads the port the kernel picked and closes the listener again.
///
/// # Errors
///
/// [`TestkitError::Io`] when binding or reading the local address fails.
pub fn reserve_port() -> Result<u16, TestkitError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(TestkitError::io("bind a free port on 127.0.0.1"))?;
    let address = listener.local_addr().map_err(TestkitError::io(
        "read the address of a free port on 127.0.0.1",
    ))?;
    Ok(address.port())
}

/// Returns `n_ports` different ports that are free on 127.0.0.1 right now, for a cluster whose
/// nodes must know each other's ports before any of them starts.
///
/// All listeners stay open until every port is read, so the kernel cannot hand out one port twice.
pub(crate) fn reserve_ports(n_ports: usize) -> Result<Vec<u16>, TestkitError> {
    let mut listeners = Vec::with_capacity(n_ports);
    for _ in 0..n_ports {
        listeners.push(
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(TestkitError::io("bind a free port on 127.0.0.1"))?,
        );
    }
    listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .map(|address| address.port())
                .map_err(TestkitError::io(
                    "read the address of a free port on 127.0.0.1",
                ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_port_can_be_bound_again() {
        let port = reserve_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn reserved_ports_differ() {
        let mut ports = reserve_ports(9).unwrap();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 9);
    }
}
