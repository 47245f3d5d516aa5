//! The connection to Redis: one server (its replicas behind it), or a Redis Cluster, named by
//! `redis_url`. A cluster is written `redis+cluster://[user:password@]host:port,host:port,…`
//! (any of its nodes; the rest are found from them).

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// The scheme of a Redis Cluster's `redis_url`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A connection to Redis (cheap to clone; reconnects by itself).
#[derive(Clone)]
pub enum Connection {
    /// One server, through a connection manager that reconnects after errors.
    Single(ConnectionManager),
    /// A Redis Cluster: each command goes to the node of its key's slot, following the slot map
    /// through failovers (`MOVED`, `ASK`, refreshes).
    Cluster(ClusterConnection),
}

impl Connection {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The node URLs of a `redis+cluster://` URL (`None` for a single server's URL).
pub fn cluster_nodes(url: &str) -> redis::RedisResult<Option<Vec<String>>> {
    let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else { return Ok(None) };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(|h| format!("redis://{auth}{h}")).collect();
    if nodes.is_empty() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "redis_url names no cluster node",
            "write redis+cluster://host:port[,host:port…]".to_string(),
        )));
    }
    Ok(Some(nodes))
}

/// Opens a connection to `url`; each command waits for its answer up to `response_timeout`
/// (`None`: for as long as it takes, for blocking reads).
pub async fn open(url: &str, response_timeout: Option<Duration>) -> redis::RedisResult<Connection> {
    match cluster_nodes(url)? {
        Some(nodes) => {
            let mut b = ClusterClientBuilder::new(nodes).connection_timeout(Duration::from_secs(5));
            // The overall timeout covers retries through a failover: several response times.
            b = match response_timeout {
                Some(t) => b.response_timeout(t).overall_response_timeout(Some(t * 8)),
                None => b.overall_response_timeout(None),
            };
            Ok(Connection::Cluster(b.build()?.get_async_connection().await?))
        }
        None => {
            let client = redis::Client::open(url)?;
            let cfg = ConnectionManagerConfig::new().set_response_timeout(response_timeout);
            Ok(Connection::Single(ConnectionManager::new_with_config(client, cfg).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379").expect("parses"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").expect("parses"),
            Some(vec!["redis://127.0.0.1:7000".to_string(), "redis://127.0.0.1:7001".to_string()])
        );
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@a:1, b:2").expect("parses"),
            Some(vec!["redis://u:p@a:1".to_string(), "redis://u:p@b:2".to_string()])
        );
        let e = cluster_nodes("redis+cluster://").expect_err("no nodes");
        assert!(e.to_string().contains("redis_url"), "{e}");
    }
}
