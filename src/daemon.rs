//! The daemon's life: unseal → TLS → store → bind → serve → drain → stop.
//! `main.rs` resolves the configuration and calls `run`; tests drive the real binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::AppState;
use crate::audit::AuditEvent;
use crate::clock::{Clock, SystemClock};
use crate::commit::Committer;
use crate::config::Config;
use crate::crypto::CryptoError;
use crate::secret::{KeyBytes, Passphrase};
use crate::startup::{raise_fd_limit, unseal_keyring, StartupError};
use crate::store::{RocksStore, Store, StoreError};
use crate::tls::{TlsError, TlsReloader};
use crate::vault::SYSTEM;
use crate::vault::{KeyFile, RewrapPace, Vault, VaultSettings};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("data directory: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// What a caller may inject: the clock, and a stop switch in place of signals.
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// `Some`: the daemon stops when this turns true and installs no signal handlers.
    pub stop: Option<watch::Receiver<bool>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
            stop: None,
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT. `on_listening` is called with the bound
/// address once the daemon accepts connections.
pub async fn run(
    config: Config,
    passphrase: Passphrase,
    on_listening: impl FnOnce(SocketAddr, u32),
) -> Result<(), DaemonError> {
    run_with(config, passphrase, Options::default(), on_listening).await
}

/// `run` with injected dependencies (tests use a manual clock and a stop switch).
pub async fn run_with(
    config: Config,
    passphrase: Passphrase,
    options: Options,
    on_listening: impl FnOnce(SocketAddr, u32),
) -> Result<(), DaemonError> {
    for warning in crate::harden::harden_process() {
        tracing::warn!("{warning}");
    }
    let max_open_files = raise_fd_limit();
    let (keyring, sealing) = unseal_keyring(&config.keyring, &passphrase)?;
    if let Err(warning) = crate::harden::lock_memory() {
        tracing::warn!("{warning}");
    }
    let keyring = Arc::new(keyring);
    drop(passphrase);
    let tls = Arc::new(TlsReloader::new(config.tls.clone())?);
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&config.data_dir, max_open_files)?);
    let clock = options.clock;
    // The commit writer keeps its own copy of the audit key (a named, greppable step).
    let audit_key = KeyBytes::new(*keyring.audit_key().expose_secret());
    let (committer, writer) = Committer::start(store.clone(), audit_key, clock.clone())?;
    let key_version = keyring.active_version();
    let settings = VaultSettings {
        cvc_ttl: config.limits.cvc_ttl(),
        key_file: Some(KeyFile {
            path: config.keyring.clone(),
            sealing,
        }),
        max_wraps_per_key: config.limits.max_wraps_per_key,
    };
    let vault = Arc::new(Vault::new(keyring, store.clone(), committer, clock, settings));
    // Once: claims for numeric tokens issued before numbers were unique across
    // tenants.
    match vault.backfill_numeric_claims().await {
        Ok(Some(report)) => tracing::info!(
            claimed = report.claimed,
            shared = report.shared,
            "numeric token claims written"
        ),
        Ok(None) => {}
        Err(e) => {
            return Err(DaemonError::Store(StoreError::Unavailable(format!(
                "the numeric token claims could not be written: {e}"
            ))))
        }
    }
    vault
        .audit(AuditEvent::new(SYSTEM, "start", "ok").key_version(key_version))
        .await
        .map_err(|e| DaemonError::Store(StoreError::Unavailable(format!("the start could not be audited: {e}"))))?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut state = AppState::new(vault.clone(), config.clients.clone(), config.limits.clone())?;
    state.backup_dir = config.backup_dir.clone();
    let state = Arc::new(state);
    let stop_rx = match options.stop {
        Some(stop) => stop,
        None => {
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(watch_signals(stop_tx));
            stop_rx
        }
    };
    if let Some(addr) = config.metrics_listen {
        let metrics = TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        tracing::info!(%addr, "plain metrics listener (loopback)");
        tokio::spawn(serve_metrics(metrics, state.clone(), stop_rx.clone()));
    }
    tokio::spawn(sweep_cvcs(vault.clone(), stop_rx.clone()));
    let pace = RewrapPace {
        batch: config.limits.rewrap_batch.max(1),
        pause: Duration::from_millis(config.limits.rewrap_pause_ms),
    };
    tokio::spawn(vault.clone().run_rewrap(pace, stop_rx.clone()));
    tokio::spawn(watch_tls(tls.clone(), stop_rx.clone()));
    tokio::spawn(purge(
        vault.clone(),
        Duration::from_millis(config.limits.purge_interval_ms),
        stop_rx.clone(),
    ));
    on_listening(addr, key_version);

    crate::server::run(listener, tls, state, stop_rx).await;

    tracing::info!("stopping");
    if let Err(e) = vault.audit(AuditEvent::new(SYSTEM, "stop", "ok")).await {
        tracing::error!(error = %e, "the stop could not be audited");
    }
    drop(vault);
    // Memtables to table files: the next start then replays no write-ahead log.
    if let Err(e) = store.flush() {
        tracing::warn!(error = %e, "the store could not be flushed; the next start replays its log");
    }
    // The writer exits when the last handle to the vault is gone (connections were
    // closed above; the background tasks stop on the same signal).
    let _ = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !writer.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await;
    Ok(())
}

async fn sweep_cvcs(vault: Arc<Vault>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = every.tick() => { vault.sweep_cvcs(); }
            _ = stop.changed() => return,
        }
    }
}

/// The optional plain-HTTP metrics listener: `GET /metrics` only, loopback only
/// (the configuration refuses any other address). It and its connections end on
/// the stop signal, so that they no longer hold the vault and the commit writer
/// can finish and the store close cleanly.
async fn serve_metrics(listener: TcpListener, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    use http_body_util::Full;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((tcp, _)) = accepted else {
            continue;
        };
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let (status, body) = if request.method() == http::Method::GET && request.uri().path() == "/metrics"
                    {
                        (http::StatusCode::OK, state.render_metrics())
                    } else {
                        (http::StatusCode::NOT_FOUND, String::new())
                    };
                    let mut response = http::Response::new(Full::new(bytes::Bytes::from(body)));
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(io, service);
            tokio::select! {
                _ = connection => {}
                _ = stop.changed() => {}
            }
        });
    }
}

/// Reloads certificates and CRLs on SIGHUP and when their files change (checked
/// every two seconds). A file that does not validate keeps the old configuration.
async fn watch_tls(tls: Arc<TlsReloader>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let why = tokio::select! {
            _ = hangup => "SIGHUP",
            _ = tick.tick() => {
                if !tls.changed() {
                    continue;
                }
                "a file changed"
            }
            _ = stop.changed() => return,
        };
        match tls.reload() {
            Ok(()) => tracing::info!(trigger = why, "TLS certificates and CRLs reloaded"),
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "TLS reload refused; keeping the previous configuration")
            }
        }
    }
}

/// Removes expired tokens and idempotency keys in bounded batches.
async fn purge(vault: Arc<Vault>, every: Duration, mut stop: watch::Receiver<bool>) {
    const BATCH: usize = 500;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // Bounded per tick: at most 100 batches, then wait for the next tick.
        for _ in 0..100 {
            match vault.purge_expired(BATCH).await {
                Ok(n) if n >= BATCH => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "purge failed");
                    break;
                }
            }
        }
    }
}

/// First SIGTERM/SIGINT: graceful stop. Second: exit at once.
async fn watch_signals(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: draining (a second signal exits at once)");
    let _ = stop.send(true);
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    std::process::exit(130);
}
