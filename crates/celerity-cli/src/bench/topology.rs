//! Where the bench runs: one local nats-server, a local JetStream cluster (`--cluster`), or the
//! servers of `--nats-url`; and the checks that those servers keep every stream at the copies
//! `--replicas` asks for. It measures nothing.

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use celerity_testkit::{NatsCluster, NatsServer};

use super::args::BenchArgs;
use super::report::Topology;

/// The servers of a run: those the bench started (stopped when this is dropped), or those of
/// `--nats-url`.
pub(crate) struct Servers {
    started: Started,
    /// One server's URL, or a cluster's comma-separated.
    url: String,
}

/// What the bench started.
enum Started {
    /// Nothing: the servers are `--nats-url`'s.
    Nothing,
    /// One server (boxed: it is far larger than a cluster's handle).
    Server(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Servers {
    /// `--nats-url`, or a local cluster of `--cluster` nodes, or one local nats-server; the
    /// testkit picks free loopback ports and waits until they are ready (a cluster, until its
    /// JetStream meta group has a leader).
    pub(crate) async fn start(args: &BenchArgs) -> anyhow::Result<Self> {
        if let Some(url) = &args.nats_url {
            return Ok(Self {
                started: Started::Nothing,
                url: url.clone(),
            });
        }
        if let Some(nodes) = args.cluster {
            let cluster = tokio::task::spawn_blocking(move || NatsCluster::start(nodes))
                .await
                .context("the cluster start was cancelled")?
                .with_context(|| format!("cannot start a local cluster of {nodes} nats-servers"))?;
            return Ok(Self {
                url: cluster.url_list(),
                started: Started::Cluster(cluster),
            });
        }
        let server = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .context("the nats-server start was cancelled")?
            .context("cannot start a local nats-server (or pass --nats-url)")?;
        Ok(Self {
            url: server.url(),
            started: Started::Server(Box::new(server)),
        })
    }

    /// One server's URL, or a cluster's comma-separated (as `NatsConfig` and a worker's
    /// `--nats-url` take them; split it with [`server_list`] for `async_nats::connect`).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The process ids of the servers the bench started (every node of its cluster), whose CPU
    /// the bench reads; none for `--nats-url`.
    pub(crate) fn pids(&self) -> Vec<u32> {
        match &self.started {
            Started::Nothing => Vec::new(),
            Started::Server(server) => server.pid().into_iter().collect(),
            Started::Cluster(cluster) => {
                cluster.nodes().iter().filter_map(NatsServer::pid).collect()
            }
        }
    }

    /// What the report says of these servers, as the connected server describes itself.
    pub(crate) fn topology(
        &self,
        info: &async_nats::ServerInfo,
        replicas: usize,
    ) -> anyhow::Result<Topology> {
        if replicas > 1 && info.cluster.is_none() {
            bail!(
                "--replicas {replicas} needs a cluster, and the server at {} ({}) is not in one: \
                 use --cluster {}, or --nats-url with a cluster's servers",
                self.url,
                info.server_name,
                replicas.max(3)
            );
        }
        Ok(Topology {
            nodes: match &self.started {
                Started::Nothing => None,
                Started::Server(_) => Some(1),
                Started::Cluster(cluster) => Some(cluster.len()),
            },
            cluster: info.cluster.clone(),
            replicas,
        })
    }
}

/// `url`'s servers, as `async_nats::connect` takes a list: given one `&str` it parses a single
/// URL, so a cluster's comma-separated URLs must be split.
pub(crate) fn server_list(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}

/// Fails when one of `streams` exists with other than `replicas` copies. Celerity opens a stream
/// that exists as it is, so one left at other replicas by an earlier run on `--nats-url` would be
/// measured instead of the replicas asked for.
pub(crate) async fn check_replicas(
    js: &jetstream::Context,
    streams: &[String],
    replicas: usize,
) -> anyhow::Result<()> {
    for name in streams {
        let Ok(mut stream) = js.get_stream(name).await else {
            continue;
        };
        let info = stream
            .info()
            .await
            .with_context(|| format!("cannot read the stream {name}"))?;
        let copies = info.config.num_replicas.max(1);
        if copies != replicas {
            bail!(
                "the stream {name} keeps {copies} copies, not the {replicas} of --replicas: an \
                 earlier run made it so; delete the bench's streams (nats stream rm {name}) or \
                 use a fresh server"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_list_is_split_into_servers() {
        assert_eq!(
            server_list("nats://127.0.0.1:1,nats://127.0.0.1:2, nats://127.0.0.1:3"),
            [
                "nats://127.0.0.1:1",
                "nats://127.0.0.1:2",
                "nats://127.0.0.1:3"
            ]
        );
        assert_eq!(
            server_list("nats://127.0.0.1:4222"),
            ["nats://127.0.0.1:4222"]
        );
        assert_eq!(server_list("nats://a:1,"), ["nats://a:1"]);
    }
}
