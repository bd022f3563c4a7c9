use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connection with another request still being answered (the guard held), so
/// that its flushes may be put off.
fn busy() -> (InFlight, InFlightGuard) {
    let in_flight = InFlight::default();
    let guard = in_flight.enter();
    (in_flight, guard)
}

/// Everything written comes out in order, whether flushed or not, on a worker
/// thread where the deferral really goes through the run queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_arrive_whole_and_in_order() {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let _ = b.read_to_end(&mut all).await;
        all
    });
    let writer = tokio::spawn(async move {
        let (in_flight, _answering) = busy();
        let mut corked = Corked::new(a, in_flight);
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk = i.to_be_bytes().repeat((i % 50) as usize + 1);
            expected.extend_from_slice(&chunk);
            assert!(corked.write_all(&chunk).await.is_ok());
            if i % 3 == 0 {
                assert!(corked.flush().await.is_ok());
            }
        }
        // One write far larger than the buffer: taken in parts, none lost.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        expected.extend_from_slice(&big);
        assert!(corked.write_all(&big).await.is_ok());
        assert!(corked.shutdown().await.is_ok());
        expected
    });
    let expected = writer.await.ok();
    assert_eq!(reader.await.ok(), expected);
}

/// A flush completes even when nothing else ever wakes the task.
#[tokio::test(flavor = "current_thread")]
async fn a_lone_flush_completes() {
    let (a, mut b) = tokio::io::duplex(1024);
    let (in_flight, _answering) = busy();
    let mut corked = Corked::new(a, in_flight);
    assert!(corked.write_all(b"hello").await.is_ok());
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(5), corked.flush()).await;
    assert!(matches!(flushed, Ok(Ok(()))));
    let mut got = [0u8; 5];
    assert!(b.read_exact(&mut got).await.is_ok());
    assert_eq!(&got, b"hello");
}

/// Nothing reaches the peer before a flush, then it all goes at once.
#[tokio::test(flavor = "current_thread")]
async fn writes_wait_for_the_flush() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let (in_flight, _answering) = busy();
    let mut corked = Corked::new(a, in_flight);
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

/// A peer that stops reading cannot make the buffer grow past its bound: writes
/// wait instead.
#[tokio::test(flavor = "current_thread")]
async fn the_buffer_is_bounded_when_the_peer_stops_reading() {
    let (a, _b) = tokio::io::duplex(1024);
    let (in_flight, _answering) = busy();
    let mut corked = Corked::new(a, in_flight);
    let big = vec![7u8; 1 << 20];
    let wrote = tokio::time::timeout(std::time::Duration::from_millis(100), corked.write_all(&big)).await;
    assert!(
        wrote.is_err(),
        "a megabyte was taken by a stream whose peer reads nothing"
    );
    assert!(corked.buf.len() <= MAX_BUFFERED);
    assert!(corked.buf.capacity() <= MAX_BUFFERED);
}

/// What was sent does not stay behind in the connection's buffer: a response may
/// hold a detokenized PAN.
#[tokio::test(flavor = "current_thread")]
async fn sent_plaintext_is_wiped() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let (in_flight, _answering) = busy();
    let mut corked = Corked::new(a, in_flight);
    let body = br#"{"card":{"number":"4111111111111111","cvc":"123"}}"#;
    assert!(corked.write_all(body).await.is_ok());
    assert!(corked.flush().await.is_ok());
    let mut got = vec![0u8; body.len()];
    assert!(b.read_exact(&mut got).await.is_ok());
    assert!(corked.buf.is_empty());
    assert!(corked.buf.capacity() >= body.len());
    let spare = corked.buf.spare_capacity_mut();
    let left: Vec<u8> = spare
        .iter()
        .take(body.len())
        // SAFETY: test only. These bytes were initialised, first by the write and
        // then by the wipe (zeroize writes the whole capacity); `clear` only set the
        // length to zero.
        .map(|byte| {
            #[allow(unsafe_code)]
            unsafe {
                byte.assume_init()
            }
        })
        .collect();
    assert!(left.iter().all(|b| *b == 0), "sent bytes left in the buffer");
}

/// Counts the writes that reach the "socket".
struct Counting<S>(S, Arc<AtomicUsize>);

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, b)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.0).poll_write(cx, b);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Writes to the "socket" for `n` HTTP/2 responses of `body_len` bytes released
/// together from another thread (as the commit syncer does), on real hyper.
async fn group_writes(corked: bool, n: usize, body_len: usize) -> usize {
    let (srv, cli) = tokio::io::duplex(1 << 22);
    let writes = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let counted = arrived.clone();
    let in_flight = InFlight::default();
    let counter = in_flight.clone();
    let service = hyper::service::service_fn(move |_req| {
        let mut gate = gate.clone();
        let answering = counter.enter();
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = gate.wait_for(|open| *open).await;
            drop(answering);
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(vec![b'x'; body_len]))))
        }
    });
    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let socket = Counting(srv, writes.clone());
    if corked {
        tokio::spawn(builder.serve_connection(TokioIo::new(Corked::new(socket, in_flight)), service));
    } else {
        tokio::spawn(builder.serve_connection(TokioIo::new(socket), service));
    }
    let Ok((sender, conn)) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(cli)).await
    else {
        unreachable!("client handshake")
    };
    tokio::spawn(conn);
    let mut calls = Vec::new();
    for _ in 0..n {
        let mut sender = sender.clone();
        calls.push(tokio::spawn(async move {
            let Ok(request) = hyper::Request::get("http://x/").body(Empty::<Bytes>::new()) else {
                return 0;
            };
            match sender.send_request(request).await {
                Ok(response) => response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0),
                Err(_) => 0,
            }
        }));
    }
    while arrived.load(Ordering::SeqCst) < n {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before = writes.load(Ordering::SeqCst);
    let opener = std::thread::spawn(move || gate_tx.send(true));
    for call in calls {
        assert_eq!(call.await.ok(), Some(body_len));
    }
    assert!(matches!(opener.join(), Ok(Ok(()))));
    writes.load(Ordering::SeqCst) - before
}

/// The point of corking: responses released together leave in a few writes, not
/// one (or more) each.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn responses_released_together_leave_together() {
    let n = 32;
    for body_len in [40, 300, 900] {
        let plain = group_writes(false, n, body_len).await;
        let corked = group_writes(true, n, body_len).await;
        eprintln!("{body_len} B bodies, {n} responses: {plain} writes uncorked, {corked} corked");
        assert!(plain >= n, "{body_len} B: {plain} writes uncorked");
        assert!(
            corked <= n / 4,
            "{body_len} B: {corked} writes corked (uncorked: {plain})"
        );
    }
}

/// The logic of the slow-deferral guard, polled by hand: the first flush is put
/// off once; after a deferral that took longer than `SLOW_DEFERRAL`, flushes go
/// at once for `PLAIN_FOR`; after a quick one, they are put off again.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_deferral_turns_deferring_off_for_a_while() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let (in_flight, _answering) = busy();
    let mut corked = Corked::new(a, in_flight);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut flush = |corked: &mut Corked<tokio::io::DuplexStream>, pause: std::time::Duration| {
        assert!(matches!(
            Pin::new(&mut *corked).poll_write(&mut cx, b"response"),
            Poll::Ready(Ok(8))
        ));
        let first = Pin::new(&mut *corked).poll_flush(&mut cx);
        if first.is_ready() {
            return false;
        }
        std::thread::sleep(pause);
        assert!(matches!(
            Pin::new(&mut *corked).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        true
    };
    let quick = std::time::Duration::ZERO;
    assert!(flush(&mut corked, quick), "the first flush is put off once");
    assert!(flush(&mut corked, quick), "after a quick deferral, deferring goes on");
    assert!(flush(&mut corked, SLOW_DEFERRAL * 3), "still put off");
    assert!(
        !flush(&mut corked, quick),
        "right after a slow deferral, a flush goes at once"
    );
    corked.plain_until = Some(Instant::now());
    assert!(flush(&mut corked, quick), "after the plain period, deferring resumes");
}

/// With no other request being answered on the connection there is nothing to
/// wait for: the first flush sends at once. While one is, the flush is put off
/// once. An abandoned request (its future dropped) ends its count too.
#[tokio::test(flavor = "current_thread")]
async fn a_lone_response_leaves_at_once() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let in_flight = InFlight::default();
    let mut corked = Corked::new(a, in_flight.clone());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(
        Pin::new(&mut corked).poll_write(&mut cx, b"alone"),
        Poll::Ready(Ok(5))
    ));
    assert!(matches!(Pin::new(&mut corked).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    let mut got = [0u8; 5];
    assert!(b.read_exact(&mut got).await.is_ok());
    assert_eq!(&got, b"alone");

    let other = in_flight.enter();
    assert!(matches!(
        Pin::new(&mut corked).poll_write(&mut cx, b"first"),
        Poll::Ready(Ok(5))
    ));
    assert!(
        Pin::new(&mut corked).poll_flush(&mut cx).is_pending(),
        "another response may join"
    );
    assert!(matches!(Pin::new(&mut corked).poll_flush(&mut cx), Poll::Ready(Ok(()))));
    drop(other);
    assert!(!in_flight.any());
    assert!(matches!(
        Pin::new(&mut corked).poll_write(&mut cx, b"again"),
        Poll::Ready(Ok(5))
    ));
    assert!(matches!(Pin::new(&mut corked).poll_flush(&mut cx), Poll::Ready(Ok(()))));
}

/// A stream that takes `left` bytes, then fails every write.
struct Failing {
    left: usize,
}

impl AsyncWrite for Failing {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = b.len().min(self.left);
        self.left -= n;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A write that fails part-way (the peer went away) leaves no plaintext behind
/// until the connection is dropped, and the error reaches the caller.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_write_wipes_the_buffer() {
    let mut corked = Corked::new(Failing { left: 10 }, InFlight::default());
    let body = br#"{"card":{"number":"4111111111111111"}}"#;
    assert!(corked.write_all(body).await.is_ok());
    let flushed = corked.flush().await;
    assert!(matches!(flushed, Err(ref e) if e.kind() == io::ErrorKind::BrokenPipe));
    assert!(corked.buf.is_empty());
    assert_eq!(corked.buf.capacity(), 0, "the buffer was not released");
    assert_eq!(corked.sent, 0);
    assert!(!corked.deferred);
}

/// The buffer is kept while other requests on the connection are being answered
/// (the burst goes on) and cut back after the drain that ends it, so idle
/// connections hold at most 4 KiB.
#[tokio::test(flavor = "current_thread")]
async fn an_idle_connection_holds_a_small_buffer_at_most() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    let in_flight = InFlight::default();
    let mut corked = Corked::new(a, in_flight.clone());
    let other = in_flight.enter();
    assert!(corked.write_all(b"first").await.is_ok());
    assert!(corked.flush().await.is_ok());
    assert!(corked.buf.capacity() > 0, "kept for the rest of the burst");
    drop(other);
    assert!(corked.write_all(&[b'!'; 5000]).await.is_ok());
    assert!(corked.flush().await.is_ok());
    assert_eq!(corked.buf.capacity(), 0, "a burst's large buffer is freed at its end");
    assert!(corked.write_all(b"last!").await.is_ok());
    assert!(corked.flush().await.is_ok());
    assert!(corked.buf.capacity() <= MIN_CAPACITY);
    let mut got = vec![0u8; 5010];
    assert!(b.read_exact(&mut got).await.is_ok());
    assert_eq!(got.get(..5), Some(&b"first"[..]));
    assert_eq!(got.get(5005..), Some(&b"last!"[..]));
}
