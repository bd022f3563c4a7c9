//! The accept loop: bounded connections, TLS handshake under a timeout, HTTP/1.1 or
//! HTTP/2 by ALPN, and graceful shutdown (stop accepting, let in-flight requests
//! finish within the grace period).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, AppState, Peer};
use crate::config::Limits;
use crate::cork::InFlight;
use crate::tls::{peer_identity, TlsReloader};

/// Serves until `shutdown` turns true, then drains for at most the grace period.
pub async fn run(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = state.limits.clone();
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let mut connections = tokio::task::JoinSet::new();
    // Connections stop on `stop`, which follows `shutdown` after the drain delay.
    let (stop_tx, stop) = watch::channel(false);
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        let drain_over = async {
            match draining {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            _ = shutdown.changed(), if draining.is_none() => {
                state.ready.store(false, Ordering::Relaxed);
                draining = Some(tokio::time::Instant::now() + Limits::ms(limits.drain_delay_ms));
                continue;
            }
            _ = drain_over => break,
        };
        let Ok(permit) = permit else { break };
        let drain_over = async {
            match draining {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed(), if draining.is_none() => {
                state.ready.store(false, Ordering::Relaxed);
                draining = Some(tokio::time::Instant::now() + Limits::ms(limits.drain_delay_ms));
                continue;
            }
            _ = drain_over => break,
        };
        let (tcp, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Each connection uses the configuration in force when it was accepted.
        let acceptor = TlsAcceptor::from(tls.current());
        let state = state.clone();
        let ends = Ends {
            shutdown: stop.clone(),
            reloads: tls.reloads(),
        };
        let limits = limits.clone();
        connections.spawn(async move {
            serve_connection(tcp, acceptor, state, ends, &limits).await;
            drop(permit);
        });
    }
    state.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let grace = Limits::ms(limits.shutdown_grace_ms);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all)).await.is_err() {
        tracing::warn!("grace period over with connections still open; closing them");
    }
    // Whatever is left (idle clients that ignore GOAWAY) is cut, so that every
    // handle on the vault is released and the store closes cleanly.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// What ends a connection besides its client: the daemon's stop, and a TLS
/// reload (new certificates or CRLs), after which every connection is drained so
/// that a revoked certificate keeps none.
struct Ends {
    shutdown: watch::Receiver<bool>,
    reloads: watch::Receiver<u64>,
}

/// Why a connection is being drained.
#[derive(Debug, Clone, Copy)]
enum Drain {
    Shutdown,
    TlsReload,
    Idle,
    MaxAge,
}

impl Ends {
    /// Resolves when the connection should be drained: a stop, a TLS reload, no
    /// request in flight for `idle` (HTTP/2 only: `None` for HTTP/1.1, whose idle
    /// wait is hyper's header timeout), or its age passing `max_age`.
    async fn wait(&mut self, in_flight: &InFlight, idle: Option<Duration>, max_age: Duration) -> Drain {
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut reloads_open = true;
        // Since when every look found no request in flight and none started.
        let mut idle_since: Option<(tokio::time::Instant, u64)> = None;
        loop {
            tokio::select! {
                _ = self.shutdown.changed() => return Drain::Shutdown,
                changed = self.reloads.changed(), if reloads_open => match changed {
                    Ok(()) => return Drain::TlsReload,
                    // The reloader is gone (the daemon is stopping): no more reloads.
                    Err(_) => reloads_open = false,
                },
                now = tick.tick() => {
                    idle_since = match (in_flight.idle_mark(), idle_since) {
                        (Some(mark), Some((since, seen))) if mark == seen => Some((since, seen)),
                        (Some(mark), _) => Some((now, mark)),
                        (None, _) => None,
                    };
                    let idle_for = idle_since.map_or(Duration::ZERO, |(since, _)| now.duration_since(since));
                    if idle.is_some_and(|idle| idle_for >= idle) {
                        return Drain::Idle;
                    }
                    if started.elapsed() >= max_age {
                        return Drain::MaxAge;
                    }
                }
            }
        }
    }
}

/// Watches a connection from its own task (the connection's task then polls one
/// cheap receiver per wake-up, not the timers): the receiver resolves when the
/// connection should be drained. The watch ends when the returned guard drops.
fn watchdog(
    mut ends: Ends,
    in_flight: InFlight,
    idle: Option<Duration>,
    max_age: Duration,
) -> (tokio::sync::oneshot::Receiver<Drain>, AbortOnDrop) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let why = ends.wait(&in_flight, idle, max_age).await;
        let _ = tx.send(why);
    });
    (rx, AbortOnDrop(task))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, state: Arc<AppState>, ends: Ends, limits: &Limits) {
    let _ = tcp.set_nodelay(true);
    state.metrics.connection_opened();
    serve_tls(tcp, acceptor, &state, ends, limits).await;
    state.metrics.connection_closed();
}

async fn serve_tls(tcp: TcpStream, acceptor: TlsAcceptor, state: &Arc<AppState>, ends: Ends, limits: &Limits) {
    let handshake = tokio::time::timeout(Limits::ms(limits.handshake_timeout_ms), acceptor.accept(tcp)).await;
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = crate::metrics::handshake_reason(&e);
            state.metrics.handshake_failed(reason);
            tracing::debug!(reason, "TLS handshake failed");
            return;
        }
        Err(_) => {
            state.metrics.handshake_failed("timeout");
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let (_, session) = stream.get_ref();
    let identity = session.peer_certificates().and_then(peer_identity);
    let h2 = session.alpn_protocol() == Some(b"h2");
    let peer = Arc::new(Peer { identity });
    let max_age = Limits::ms(limits.max_connection_age_ms);
    let grace = Limits::ms(limits.shutdown_grace_ms);
    let state = state.clone();
    // Counts this connection's requests still being answered, so the cork waits
    // only when another response may join the one it holds.
    let in_flight = InFlight::default();
    let counter = in_flight.clone();
    let service = service_fn(move |request| {
        let answering = counter.enter();
        let response = api::handle(state.clone(), peer.clone(), request);
        async move {
            let response = response.await;
            drop(answering);
            response
        }
    });
    if h2 {
        // Responses made ready together leave in one TLS record and one write.
        let io = TokioIo::new(crate::cork::Corked::new(stream, in_flight.clone()));
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_h2_streams)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(Some(Limits::ms(limits.idle_timeout_ms)))
            .keep_alive_timeout(Limits::ms(limits.header_timeout_ms));
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let idle = Some(Limits::ms(limits.idle_timeout_ms));
        let (drain, _watchdog) = watchdog(ends, in_flight, idle, max_age);
        tokio::select! {
            biased;
            _ = conn.as_mut() => {}
            Ok(why) = drain => {
                tracing::debug!(reason = ?why, "draining an HTTP/2 connection");
                conn.as_mut().graceful_shutdown();
                // A client that reads nothing cannot hold the connection past the grace.
                let _ = tokio::time::timeout(grace, conn).await;
            }
        }
    } else {
        let io = TokioIo::new(stream);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Limits::ms(limits.header_timeout_ms))
            .max_buf_size(128 * 1024)
            .max_headers(256)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let (drain, _watchdog) = watchdog(ends, in_flight, None, max_age);
        tokio::select! {
            biased;
            _ = conn.as_mut() => {}
            Ok(why) = drain => {
                tracing::debug!(reason = ?why, "draining an HTTP/1.1 connection");
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(grace, conn).await;
            }
        }
    }
}
