//! Response corking for HTTP/2 connections: one write to the socket for the
//! responses that become ready together, instead of one per response.
//!
//! The commit syncer answers a whole group of requests at once (every request one
//! fsync covered), and a connection's requests that arrive in one read are started
//! together. Each finished request makes its HTTP/2 stream send a response, and the
//! connection task, run right after it, would encrypt that one response into its
//! own TLS record and `writev` it: on loopback that syscall also runs the peer's
//! receive path, and it was the largest single cost per request.
//!
//! `Corked` sits between hyper's HTTP/2 connection and the TLS stream. Writes are
//! buffered. The first flush of buffered data does not go to the socket: it wakes
//! its own task and returns `Pending`, which puts the connection task at the back
//! of its worker's run queue (where another worker may also take it), behind the
//! stream tasks that are already runnable. Those add their responses meanwhile,
//! and the next flush sends them all in one TLS record and one syscall. So a flush
//! is put off once, by one pass over the ready tasks, never more. It is put off
//! only while another request on the connection is still being answered
//! (`InFlight`): a lone response, with nothing to wait for, leaves at once instead
//! of waiting behind whatever else the worker has queued. When that pass was slow (a worker
//! busy with long polls, such as large batches), waiting buys little and costs
//! latency, most of all for responses over 1 KiB, which h2 flushes one by one:
//! after a deferral of more than `SLOW_DEFERRAL` the connection flushes at once
//! for `PLAIN_FOR`.
//!
//! The buffer holds plaintext responses, detokenized values among them: it grows
//! only by copying into a new allocation and wiping the old one, is wiped after
//! every drain, after a failed write and on drop, and never holds more than
//! `MAX_BUFFERED` bytes. After the drain that ends a burst (no other request on
//! the connection being answered) it is cut back to 4 KiB, wiped.
//!
//! HTTP/1.1 connections are not corked: hyper reads the next request only after
//! the previous response was flushed, so there is never a second response to wait
//! for.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zeroize::Zeroize;

/// Most bytes buffered; a write beyond it waits for the buffer to drain.
const MAX_BUFFERED: usize = 64 * 1024;
/// Smallest allocation, and the largest one kept between drains of one burst.
const MIN_CAPACITY: usize = 4 * 1024;
const KEPT_CAPACITY: usize = 16 * 1024;
/// A deferral longer than this means the worker is busy.
const SLOW_DEFERRAL: Duration = Duration::from_millis(1);
/// How long a connection then flushes without deferring.
const PLAIN_FOR: Duration = Duration::from_millis(10);

/// The requests of one connection whose responses are not made yet: the service
/// holds an `InFlightGuard` while it answers one.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Activity>);

#[derive(Default)]
struct Activity {
    /// Requests being answered now.
    count: AtomicUsize,
    /// Requests ever started: unchanged between two looks means none started.
    started: AtomicU64,
}

impl InFlight {
    /// Counts a request until the guard is dropped (answered or abandoned).
    pub fn enter(&self) -> InFlightGuard {
        self.0.started.fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    fn any(&self) -> bool {
        self.0.count.load(Ordering::Acquire) > 0
    }

    /// A mark that changes whenever a request starts, or `None` while one is in
    /// flight: the connection was idle between two looks that saw the same mark.
    pub fn idle_mark(&self) -> Option<u64> {
        let started = self.0.started.load(Ordering::Acquire);
        (!self.any()).then_some(started)
    }
}

/// One request being answered; dropping it ends the count.
pub struct InFlightGuard(Arc<Activity>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream whose writes are gathered until the tasks ready now have run.
pub struct Corked<S> {
    inner: S,
    /// Requests still being answered on this connection: a flush waits only
    /// when another response may join it.
    in_flight: InFlight,
    buf: Vec<u8>,
    /// How much of `buf` the inner stream has already taken.
    sent: usize,
    /// The flush of what is buffered has been put off once already.
    deferred: bool,
    /// When the last deferral began, until its flush measures it.
    deferred_at: Option<Instant>,
    /// No deferral before this time (set after a slow one).
    plain_until: Option<Instant>,
}

impl<S> Corked<S> {
    pub fn new(inner: S, in_flight: InFlight) -> Self {
        Corked {
            inner,
            in_flight,
            buf: Vec::new(),
            sent: 0,
            deferred: false,
            deferred_at: None,
            plain_until: None,
        }
    }

    /// True when this flush may be put off: not already, not with a full buffer,
    /// not when no other response can join it, and not shortly after a slow
    /// deferral.
    fn may_defer(&mut self) -> bool {
        if self.deferred || self.buf.len() >= MAX_BUFFERED || !self.in_flight.any() {
            return false;
        }
        match self.plain_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                self.plain_until = None;
                true
            }
            None => true,
        }
    }

    /// Buffers what fits under `MAX_BUFFERED` and returns how much that was. The
    /// buffer never reallocates in place: a larger one is made, and the old one
    /// wiped before it is freed.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(MAX_BUFFERED.saturating_sub(self.buf.len()));
        let need = self.buf.len() + n;
        if need > self.buf.capacity() {
            let mut grown = Vec::with_capacity(need.next_power_of_two().clamp(MIN_CAPACITY, MAX_BUFFERED));
            grown.extend_from_slice(&self.buf);
            self.buf.zeroize();
            self.buf = grown;
        }
        self.buf.extend_from_slice(data.get(..n).unwrap_or_default());
        n
    }

    /// Wipes what was sent. The buffer is kept for the rest of a burst (another
    /// request still being answered) unless it grew past `KEPT_CAPACITY`; at the
    /// end of a burst anything past `MIN_CAPACITY` is freed, so an idle
    /// connection holds at most 4 KiB, wiped. (Freeing that too costs every
    /// burst a fresh allocation, which on these VMs may fault in new pages.)
    fn wipe(&mut self) {
        self.buf.zeroize();
        self.trim(if self.in_flight.any() {
            KEPT_CAPACITY
        } else {
            MIN_CAPACITY
        });
        self.sent = 0;
    }

    /// Frees an (already wiped, empty) buffer larger than `keep`.
    fn trim(&mut self, keep: usize) {
        if self.buf.capacity() > keep {
            self.buf = Vec::new();
        }
    }

    /// After a failed write the connection is done: nothing buffered is kept
    /// until the connection is dropped.
    fn discard(&mut self) {
        self.buf.zeroize();
        self.trim(0);
        self.sent = 0;
        self.deferred = false;
        self.deferred_at = None;
    }
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    /// Hands the whole buffer to the inner stream, then wipes it. On a failed
    /// write the buffer is wiped at once.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self.buf.get(self.sent..).filter(|rest| !rest.is_empty()) {
            let written = match ready!(Pin::new(&mut self.inner).poll_write(cx, rest)) {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                other => other,
            };
            match written {
                Ok(n) => self.sent += n,
                Err(e) => {
                    self.discard();
                    return Poll::Ready(Err(e));
                }
            }
        }
        self.wipe();
        Poll::Ready(Ok(()))
    }
}

impl<S> Drop for Corked<S> {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.buf.len() >= MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(self.push(data)))
    }

    /// Not vectored: h2 then copies small DATA payloads into its own frame buffer
    /// and hands over many frames per write. With vectored writes it keeps each
    /// payload over 256 bytes as a separate piece, counts its buffer as full after
    /// every response, and flushes (so defers) once per one or two responses.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() {
            // Nothing new since the last drain: the burst is over. The buffer
            // was wiped then; give back all but the smallest allocation.
            this.deferred = false;
            this.trim(MIN_CAPACITY);
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if this.may_defer() {
            // Back of the run queue: the tasks that are ready now run first.
            this.deferred = true;
            this.deferred_at = Some(Instant::now());
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(at) = this.deferred_at.take() {
            let now = Instant::now();
            if now.duration_since(at) > SLOW_DEFERRAL {
                this.plain_until = Some(now + PLAIN_FOR);
            }
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.deferred = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
