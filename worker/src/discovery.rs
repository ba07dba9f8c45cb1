//! Finds scheduler nodes: reads and then watches `{prefix}nodes/` in etcd, where each node
//! registers its worker-facing gRPC URL under its lease, and keeps one stream per live node;
//! or, given fixed URLs (standalone mode), keeps one stream to each of them.
//!
//! It watches rather than polls, reconnects to etcd with backoff, and never opens two streams
//! to one node.

use std::{collections::HashMap, time::Duration};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::Schedulers;
use crate::connection::{self, Shared};

/// The registry key prefix of scheduler nodes under the cluster prefix.
pub fn nodes_prefix(prefix: &str) -> String {
    format!("{prefix}nodes/")
}

struct Node {
    url: String,
    stop: CancellationToken,
}

/// Keeps streams to every registered scheduler until `stop`; connection tasks go on `tasks`.
pub async fn run(shared: Shared, tasks: TaskTracker, stop: CancellationToken) {
    let (endpoints, prefix) = match &shared.config.schedulers {
        Schedulers::Etcd { endpoints, prefix } => (endpoints.clone(), prefix.clone()),
        Schedulers::Fixed(urls) => {
            for url in urls {
                tracing::info!(scheduler = %url, "scheduler configured");
                // Each stream reconnects on its own until `stop`.
                tasks.spawn(connection::maintain(
                    url.clone(),
                    shared.clone(),
                    stop.clone(),
                ));
            }
            return;
        }
    };
    let mut nodes: HashMap<String, Node> = HashMap::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        match follow(&shared, &endpoints, &prefix, &tasks, &stop, &mut nodes).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "scheduler discovery lost etcd")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    for node in nodes.values() {
        node.stop.cancel();
    }
}

async fn follow(
    shared: &Shared,
    endpoints: &[String],
    prefix: &str,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    nodes: &mut HashMap<String, Node>,
) -> Result<(), etcd_client::Error> {
    let prefix = nodes_prefix(prefix);
    let mut client = Client::connect(endpoints, None).await?;
    let snapshot = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = snapshot.header().map_or(0, |h| h.revision());
    let mut live: HashMap<String, String> = HashMap::new();
    for kv in snapshot.kvs() {
        if let (Ok(key), Ok(url)) = (kv.key_str(), kv.value_str()) {
            live.insert(
                key.trim_start_matches(prefix.as_str()).to_owned(),
                url.to_owned(),
            );
        }
    }
    // Reconcile with what we had before a reconnect.
    nodes.retain(|id, node| {
        let keep = live.get(id) == Some(&node.url);
        if !keep {
            node.stop.cancel();
        }
        keep
    });
    for (id, url) in live {
        upsert(shared, tasks, nodes, id, url);
    }

    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut events = client.watch(prefix.as_str(), Some(options)).await?;
    loop {
        let response = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = events.message() => r?,
        };
        let Some(response) = response else {
            return Err(etcd_client::Error::WatchError("watch closed".into()));
        };
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let id = key.trim_start_matches(prefix.as_str()).to_owned();
            match event.event_type() {
                EventType::Put => {
                    if let Ok(url) = kv.value_str() {
                        upsert(shared, tasks, nodes, id, url.to_owned());
                    }
                }
                EventType::Delete => {
                    if let Some(node) = nodes.remove(&id) {
                        tracing::info!(node_id = %id, "scheduler left");
                        node.stop.cancel();
                    }
                }
            }
        }
    }
}

fn upsert(
    shared: &Shared,
    tasks: &TaskTracker,
    nodes: &mut HashMap<String, Node>,
    id: String,
    url: String,
) {
    if nodes.get(&id).is_some_and(|n| n.url == url) {
        return;
    }
    if let Some(old) = nodes.remove(&id) {
        old.stop.cancel();
    }
    tracing::info!(node_id = %id, scheduler = %url, "scheduler found");
    let stop = CancellationToken::new();
    tasks.spawn(connection::maintain(
        url.clone(),
        shared.clone(),
        stop.clone(),
    ));
    nodes.insert(id, Node { url, stop });
}
