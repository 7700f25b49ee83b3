//! The resource bounds of the coordinator's listener: how many connections may be open (in all and per node),
//! how long a handshake may take, and how many HTTP/2 streams and bytes one connection may hold.
//!
//! With these limits, what one admitted node can make the coordinator buffer before its handlers run is at most
//! `max_connections_per_node × max_streams_per_connection × MAX_MESSAGE_BYTES` (2 × 16 × 4 MiB by default), and
//! a peer that is not admitted holds at most one handshake's state until the handshake timeout.

use cohort_core::NodeName;
use cohort_core::config::AdmissionSection;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection caps and the handshake timeout, shared by the accept loop's tasks (cheap to clone).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_connections: usize,
    connections: Arc<Semaphore>,
    max_per_node: usize,
    per_node: Mutex<HashMap<NodeName, usize>>,
    handshake_timeout: Duration,
}

/// One place under the global connection cap, held from the TCP accept until the connection closes.
#[derive(Debug)]
pub struct ConnectionSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// A connection's places under both caps; dropping it (when the connection closes) frees them.
#[derive(Debug)]
pub struct NodeSlot {
    _connection: ConnectionSlot,
    name: NodeName,
    limits: Arc<Inner>,
}

impl Drop for NodeSlot {
    fn drop(&mut self) {
        let mut per_node = self.limits.per_node.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = per_node.get_mut(&self.name) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                per_node.remove(&self.name);
            }
        }
    }
}

impl ConnectionLimits {
    /// The limits of a coordinator's `[admission]` section.
    pub fn new(section: &AdmissionSection) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_connections: section.max_connections,
                connections: Arc::new(Semaphore::new(section.max_connections)),
                max_per_node: section.max_connections_per_node,
                per_node: Mutex::new(HashMap::new()),
                handshake_timeout: Duration::from_secs(section.handshake_timeout_secs),
            }),
        }
    }

    /// The global cap.
    pub fn max_connections(&self) -> usize {
        self.inner.max_connections
    }

    /// How long a TLS handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// A place for a new connection, or None when the coordinator already holds its maximum.
    pub fn connection_slot(&self) -> Option<ConnectionSlot> {
        self.inner.connections.clone().try_acquire_owned().ok().map(ConnectionSlot)
    }

    /// Counts an admitted connection against its node's cap.
    ///
    /// # Errors
    /// The number of connections the node already holds, when that is the cap.
    pub fn node_slot(&self, name: &NodeName, connection: ConnectionSlot) -> Result<NodeSlot, usize> {
        let mut per_node = self.inner.per_node.lock().unwrap_or_else(PoisonError::into_inner);
        let open = per_node.entry(name.clone()).or_insert(0);
        if *open >= self.inner.max_per_node {
            return Err(*open);
        }
        *open += 1;
        if *open > 1 {
            tracing::info!(node = %name, open = *open, "node {name} opened another connection while one is open");
        }
        Ok(NodeSlot { _connection: connection, name: name.clone(), limits: self.inner.clone() })
    }

    /// How many connections `name` holds now.
    pub fn open_for(&self, name: &NodeName) -> usize {
        self.inner.per_node.lock().unwrap_or_else(PoisonError::into_inner).get(name).copied().unwrap_or(0)
    }
}

/// A connection that holds its [`NodeSlot`] until it is dropped (when the gRPC server closes it). Reads, writes
/// and connection info pass through to the inner stream.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    _slot: NodeSlot,
}

impl<T> Counted<T> {
    /// Wraps a stream with its slot.
    pub fn new(inner: T, slot: NodeSlot) -> Self {
        Self { inner, _slot: slot }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The HTTP/2 limits of the gRPC server.
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    /// Concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS); further streams are refused.
    pub max_concurrent_streams: u32,
}

/// Per-stream flow-control window: 1 MiB, hyper's default, set explicitly.
pub const STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Per-connection flow-control window.
pub const CONNECTION_WINDOW_BYTES: u32 = 2 << 20;
/// The largest HTTP/2 frame accepted (the protocol's minimum, 16 KiB).
pub const MAX_FRAME_BYTES: u32 = 16 << 10;
/// The largest header list accepted.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Streams a client may open and reset before the server accepted them (the "rapid reset" bound).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 32;
/// Streams the server may reset for a peer's protocol errors before it closes the connection.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 64;

impl Http2Limits {
    /// The limits of a coordinator's `[admission]` section.
    pub fn new(section: &AdmissionSection) -> Self {
        Self { max_concurrent_streams: section.max_streams_per_connection }
    }

    /// Applies the limits (and keep-alive pings, so a vanished peer's connection and slot are freed) to a tonic
    /// server builder.
    pub fn apply<L>(self, server: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
        server
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .accept_http1(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_are_enforced_and_freed() {
        let section =
            AdmissionSection { max_connections: 3, max_connections_per_node: 2, ..AdmissionSection::default() };
        let limits = ConnectionLimits::new(&section);
        let a = NodeName::from("hospital-a");
        let s1 = limits.node_slot(&a, limits.connection_slot().unwrap()).unwrap();
        let s2 = limits.node_slot(&a, limits.connection_slot().unwrap()).unwrap();
        assert_eq!(limits.node_slot(&a, limits.connection_slot().unwrap()).unwrap_err(), 2);
        let b = limits.node_slot(&NodeName::from("hospital-b"), limits.connection_slot().unwrap()).unwrap();
        assert!(limits.connection_slot().is_none(), "the global cap holds");
        drop(s1);
        assert_eq!(limits.open_for(&a), 1);
        let s3 = limits.node_slot(&a, limits.connection_slot().unwrap()).unwrap();
        drop((s2, s3, b));
        assert_eq!(limits.open_for(&a), 0);
        assert!(limits.connection_slot().is_some());
    }
}
