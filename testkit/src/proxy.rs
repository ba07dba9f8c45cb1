//! A loopback TCP proxy that a test puts between a process and a server, so it can cut the link
//! like a network partition and heal it; it never touches the bytes it carries.
//!
//! Cutting freezes the link rather than closing it: established connections stop carrying bytes
//! in both directions but stay open (as when packets are dropped, so a peer learns of it only
//! through its own timeouts), and new connections are accepted but never reach the server.
//! Healing closes what was frozen (as the peers' timeouts eventually would) and forwards new
//! connections again.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// A running proxy; it stops, dropping every connection, when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free `127.0.0.1` port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr().context("reading the proxy address")?;
        let (cut, cut_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, upstream, cut_rx));
        Ok(Self { addr, cut, accept })
    }

    /// Forwards to the server an `http://host:port` URL points at (such as an etcd endpoint).
    pub async fn for_url(url: &str) -> anyhow::Result<Self> {
        let authority = url
            .split("://")
            .nth(1)
            .unwrap_or(url)
            .split('/')
            .next()
            .unwrap_or_default();
        let upstream = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to no address"))?;
        Self::start(upstream).await
    }

    /// The address to connect to instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Freezes every connection and holds new ones: the link is partitioned.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Closes what was frozen and forwards new connections again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it drops them all.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, cut: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                connections.spawn(carry(client, upstream, cut.clone()));
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn carry(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow() {
        // Accepted during a partition: never reaches the server, closed once healed.
        let _ = cut.wait_for(|cut| !*cut).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let frozen = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        cut = cut.wait_for(|cut| *cut) => cut.is_ok(),
    };
    if frozen {
        // Both sockets stay open and silent until the partition heals.
        let _ = cut.wait_for(|cut| !*cut).await;
    }
}
