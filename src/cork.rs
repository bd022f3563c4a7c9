//! Response corking: one write to the socket for the responses that become ready
//! together, instead of one per response.
//!
//! The commit syncer answers a whole group of requests at once (every request one
//! fsync covered). Each answered request makes its HTTP/2 stream send a response,
//! and the connection task, run right after it, would encrypt that one response
//! into its own TLS record and `writev` it: on loopback that syscall also runs the
//! peer's whole receive path, and it was the largest single cost per request.
//!
//! `Corked` sits between hyper and the TLS stream. Writes are buffered; a flush
//! while the buffer holds data does not go to the socket at once but asks the
//! runtime to wake the task again once the worker has run the other tasks that are
//! ready (`tokio::task::yield_now`'s deferred wake). The responses made ready by the
//! same group of answers land in the buffer in between, and the deferred flush
//! sends them in one TLS record and one syscall. An idle worker runs the deferred
//! wake at once, so a lone response is not delayed; a busy one runs it at its next
//! scheduler maintenance (every 61 task polls). A flush is never put off more than
//! `MAX_DEFERRALS` times in a row, nor with more than `MAX_BUFFERED` bytes waiting.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes buffered before a write goes to the socket whatever else is pending.
const MAX_BUFFERED: usize = 64 * 1024;
/// Capacity a connection keeps between bursts.
const KEPT_CAPACITY: usize = 16 * 1024;
/// Flushes put off in a row before one is done at once.
const MAX_DEFERRALS: u32 = 32;

/// The deferred wake: marks the flush as due, then wakes the connection's task.
#[derive(Default)]
struct Due {
    ready: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Wake for Due {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        let waker = self.waker.lock().ok().and_then(|mut slot| slot.take());
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A stream whose writes are gathered until the runtime has nothing else ready.
pub struct Corked<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` the inner stream has already taken.
    sent: usize,
    due: Arc<Due>,
    /// A deferred wake is outstanding.
    deferred: bool,
    deferrals: u32,
}

impl<S> Corked<S> {
    pub fn new(inner: S) -> Self {
        Corked {
            inner,
            buf: Vec::new(),
            sent: 0,
            due: Arc::new(Due::default()),
            deferred: false,
            deferrals: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    /// Hands the whole buffer to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self.buf.get(self.sent..).filter(|rest| !rest.is_empty()) {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.buf.shrink_to(KEPT_CAPACITY);
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// True when this flush may wait for the deferred wake.
    fn may_defer(&self) -> bool {
        !self.due.ready.load(Ordering::Acquire) && self.deferrals < MAX_DEFERRALS && self.buf.len() < MAX_BUFFERED
    }

    fn defer(&mut self, cx: &mut Context<'_>) {
        if let Ok(mut slot) = self.due.waker.lock() {
            match slot.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        if !self.deferred {
            self.deferred = true;
            // The first poll of `yield_now` hands its waker to the runtime, which
            // calls it after running the tasks that are ready now.
            let waker = Waker::from(self.due.clone());
            let _ = pin!(tokio::task::yield_now()).poll(&mut Context::from_waker(&waker));
        }
        self.deferrals += 1;
    }

    fn reset(&mut self) {
        self.deferred = false;
        self.deferrals = 0;
        self.due.ready.store(false, Ordering::Release);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.buf.len() >= MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() >= MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            self.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buf.is_empty() {
            this.reset();
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if this.may_defer() {
            this.defer(cx);
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.reset();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Everything written comes out in order, whether flushed at once (no other
    /// task ready) or after being put off.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_arrive_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut corked = Corked::new(a);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = b.read_to_end(&mut all).await;
            all
        });
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk = i.to_be_bytes().repeat((i % 50) as usize + 1);
            expected.extend_from_slice(&chunk);
            assert!(corked.write_all(&chunk).await.is_ok());
            if i % 3 == 0 {
                assert!(corked.flush().await.is_ok());
            }
        }
        assert!(corked.shutdown().await.is_ok());
        drop(corked);
        assert_eq!(reader.await.ok(), Some(expected));
    }

    /// A flush completes even when nothing else ever wakes the task: the deferred
    /// wake alone brings it back.
    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_flush_completes() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut corked = Corked::new(a);
        assert!(corked.write_all(b"hello").await.is_ok());
        let flushed = tokio::time::timeout(std::time::Duration::from_secs(5), corked.flush()).await;
        assert!(matches!(flushed, Ok(Ok(()))));
        let mut got = [0u8; 5];
        assert!(b.read_exact(&mut got).await.is_ok());
        assert_eq!(&got, b"hello");
    }

    /// Nothing reaches the peer before the flush is due, then it all goes at once.
    #[tokio::test(flavor = "current_thread")]
    async fn writes_wait_for_the_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut corked = Corked::new(a);
        assert!(corked.write_all(b"one ").await.is_ok());
        assert!(corked.write_all(b"two").await.is_ok());
        let mut probe = [0u8; 16];
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut probe)).await;
        assert!(early.is_err(), "bytes left before any flush");
        assert!(corked.flush().await.is_ok());
        let mut got = [0u8; 7];
        assert!(b.read_exact(&mut got).await.is_ok());
        assert_eq!(&got, b"one two");
    }
}
