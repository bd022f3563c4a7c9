//! The `tokenvault` command: a short, linear script over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokenvault::admin::{self, Connection};
use tokenvault::config::{Config, PassphraseSource};
use tokenvault::daemon;
use tokenvault::pki::write_dev_pki;
use tokenvault::startup::{init_keyring, prepare_dev, read_passphrase};

/// The process allocator. glibc's malloc took about a tenth of the daemon's CPU
/// under load (arena locks, `malloc_consolidate`); mimalloc's thread-local free
/// lists do not. Secrets are still wiped by `zeroize` before their memory is freed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad configuration (64, as the house style's start-up script says).
const EXIT_CONFIG: u8 = 64;
/// Exit code for bad usage (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code of `audit verify` when the chain is broken (EX_DATAERR).
const EXIT_AUDIT_BROKEN: u8 = 65;

#[derive(Parser)]
#[command(name = "tokenvault", version, about = "A payment tokenization vault over mutual TLS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// TOML configuration file (production).
        #[arg(long, conflicts_with = "dev")]
        config: Option<PathBuf>,
        /// Development mode: embedded configuration, dev PKI and keyring under keys/dev/.
        #[arg(long)]
        dev: bool,
        /// Listen address, overriding the configuration (e.g. 127.0.0.1:0).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Create a new sealed keyring.
    Init {
        #[arg(long, default_value = "keys/keyring.sealed")]
        keyring: PathBuf,
        /// Read the passphrase from this file (else TOKENVAULT_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Write a development PKI (CA, server and client certificates).
    DevPki {
        #[arg(long, default_value = "keys/dev")]
        out: PathBuf,
    },
    /// Key lifecycle: status, rotate, retire (over mTLS), change-passphrase (offline).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit trail: verify, export (over mTLS, or offline with --data-dir).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Take a consistent online backup (POST /v1/backups, role keys).
    Backup {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Make a new data directory from a backup (offline; refuses a non-empty target).
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// Validate a configuration and every file it names, without starting.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Key versions, their states and record counts, rewrap progress.
    Status {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// New active key version; rewrap of older records starts in the background.
    Rotate {
        #[command(flatten)]
        conn: Connection,
        /// Show a progress bar until the rewrap has finished.
        #[arg(long)]
        wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Destroy a key version's material; refused while a record needs it.
    Retire {
        version: u32,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Re-seal the keyring under a new passphrase (offline; restart the daemon after).
    ChangePassphrase {
        #[arg(long, default_value = "keys/keyring.sealed")]
        keyring: PathBuf,
        /// The current passphrase (else TOKENVAULT_PASSPHRASE, else a prompt).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// The new passphrase (else TOKENVAULT_NEW_PASSPHRASE).
        #[arg(long)]
        new_passphrase_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct Offline {
    /// Work offline on the development vault of `serve --dev` in this directory
    /// (data/dev, keys/dev/keyring.sealed, the development passphrase).
    #[arg(long, conflicts_with_all = ["data_dir", "keyring", "passphrase_file"])]
    dev: bool,
    /// Work offline on this (stopped daemon's) data directory.
    #[arg(long, requires = "keyring")]
    data_dir: Option<PathBuf>,
    /// The keyring of that data directory.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// The keyring passphrase (else TOKENVAULT_PASSPHRASE, else a prompt).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the HMAC chain; exit code 0 only when it is whole.
    Verify {
        #[command(flatten)]
        offline: Offline,
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        json: bool,
    },
    /// Write every entry as JSON Lines (for a SIEM).
    Export {
        #[command(flatten)]
        offline: Offline,
        #[command(flatten)]
        conn: Connection,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_tracing_json() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        init_tracing();
    }
    match cli.command {
        Command::Serve { config, dev, listen } => serve(config, dev, listen),
        Command::Init {
            keyring,
            passphrase_file,
        } => {
            let source = passphrase_file.map_or(PassphraseSource::Default, PassphraseSource::File);
            let result = read_passphrase(&source).and_then(|p| init_keyring(&keyring, &p));
            report(result.map(|()| println!("created keyring {}", keyring.display())))
        }
        Command::DevPki { out } => {
            report(write_dev_pki(&out).map(|()| println!("wrote a development PKI to {}", out.display())))
        }
        Command::Keys { command } => keys(command),
        Command::Audit { command } => audit(command),
        Command::Backup { conn, json } => match block_on(admin::backup(&conn, json)) {
            Ok(inner) => report(inner),
            Err(e) => report::<String>(Err(e)),
        },
        Command::Restore { from, to } => report(tokenvault::ops::restore(&from, &to).map(|records| {
            println!(
                "restored {} into {} ({records} records); start the daemon on it with the same keyring",
                from.display(),
                to.display()
            )
        })),
        Command::CheckConfig { config } => {
            let checks = tokenvault::ops::check_config(&config);
            let mut ok = true;
            for check in &checks {
                match &check.result {
                    Ok(what) => println!("ok    {:<14} {what}", check.item),
                    Err(why) => {
                        ok = false;
                        println!("FAIL  {:<14} {why}", check.item);
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CONFIG)
            }
        }
    }
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(future))
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn keys(command: KeysCommand) -> ExitCode {
    let result = match command {
        KeysCommand::Status { conn, json } => block_on(admin::keys_status(&conn, json)),
        KeysCommand::Rotate { conn, wait, json } => block_on(admin::keys_rotate(&conn, wait, json)),
        KeysCommand::Retire { version, conn, json } => block_on(admin::keys_retire(&conn, version, json)),
        KeysCommand::ChangePassphrase {
            keyring,
            passphrase_file,
            new_passphrase_file,
        } => {
            let old = passphrase_file.map_or(PassphraseSource::Default, PassphraseSource::File);
            let new = new_passphrase_file.map_or(
                PassphraseSource::Env("TOKENVAULT_NEW_PASSPHRASE".into()),
                PassphraseSource::File,
            );
            Ok(admin::change_passphrase(&keyring, &old, &new).map(|()| println!("re-sealed {}", keyring.display())))
        }
    };
    match result {
        Ok(inner) => report(inner),
        Err(e) => report::<String>(Err(e)),
    }
}

fn audit_source<'a>(offline: &'a Offline, conn: &'a Connection) -> Result<admin::AuditSource<'a>, String> {
    if offline.dev {
        let passphrase = read_passphrase(&PassphraseSource::Dev).map_err(|e| e.to_string())?;
        return Ok(admin::AuditSource::Offline {
            data_dir: std::path::Path::new("data/dev"),
            keyring: std::path::Path::new("keys/dev/keyring.sealed"),
            passphrase,
        });
    }
    match (&offline.data_dir, &offline.keyring) {
        (Some(data_dir), Some(keyring)) => {
            let source = offline
                .passphrase_file
                .clone()
                .map_or(PassphraseSource::Default, PassphraseSource::File);
            let passphrase = read_passphrase(&source).map_err(|e| e.to_string())?;
            Ok(admin::AuditSource::Offline {
                data_dir,
                keyring,
                passphrase,
            })
        }
        _ => Ok(admin::AuditSource::Online(conn)),
    }
}

fn audit(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { offline, conn, json } => {
            let result = audit_source(&offline, &conn).and_then(|source| block_on(admin::audit_verify(source, json)));
            match result {
                Ok(Ok(true)) => ExitCode::SUCCESS,
                Ok(Ok(false)) => ExitCode::from(EXIT_AUDIT_BROKEN),
                Ok(Err(e)) => report(Err(e)),
                Err(e) => report::<String>(Err(e)),
            }
        }
        AuditCommand::Export { offline, conn, out } => {
            let run = |source| -> Result<u64, String> {
                let mut sink: Box<dyn std::io::Write> = match &out {
                    Some(path) => {
                        Box::new(std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?)
                    }
                    None => Box::new(std::io::stdout().lock()),
                };
                block_on(admin::audit_export(source, &mut *sink))?.map_err(|e| e.to_string())
            };
            match audit_source(&offline, &conn).and_then(run) {
                Ok(n) => {
                    eprintln!("exported {n} audit entries");
                    ExitCode::SUCCESS
                }
                Err(e) => report::<String>(Err(e)),
            }
        }
    }
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenvault: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<PathBuf>, dev: bool, listen: Option<SocketAddr>) -> ExitCode {
    let mut config = match (config_path, dev) {
        (Some(path), false) => match Config::load(&path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("tokenvault: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, true) => Config::dev(),
        _ => {
            eprintln!("tokenvault: serve needs --config FILE or --dev");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(addr) = listen {
        config.listen = addr;
    }
    match config.log_format {
        tokenvault::config::LogFormat::Json => init_tracing_json(),
        tokenvault::config::LogFormat::Text => init_tracing(),
    }
    let passphrase = match read_passphrase(&config.passphrase) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tokenvault: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if config.dev {
        tracing::warn!("development mode: dev PKI and keyring under keys/dev/, not for production");
        if let Err(e) = prepare_dev(&config, &passphrase) {
            eprintln!("tokenvault: {e}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenvault: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dev = config.dev;
    let result = runtime.block_on(daemon::run(config, passphrase, |addr, key_version| {
        tracing::info!(%addr, key_version, "listening");
        println!("tokenvault listening on https://{addr}");
        if dev {
            print_dev_example(addr);
        }
    }));
    report(result)
}

/// The dev banner's example request. The card (a public test number) goes in a
/// file beside the dev certificates, so the daemon's output never holds a card
/// number: log scanners looking for one find nothing to flag.
const DEV_EXAMPLE_CARD: &str =
    "{\"card\":{\"number\":\"4242 4242 4242 4242\",\"exp_month\":12,\"exp_year\":2031,\"cvc\":\"123\"}}\n";

fn print_dev_example(addr: SocketAddr) {
    let base = format!("https://{addr}");
    let example = std::path::Path::new("keys/dev/example-card.json");
    let body = match std::fs::write(example, DEV_EXAMPLE_CARD) {
        Ok(()) => format!("@{}", example.display()),
        Err(_) => "'{\"card\":{\"number\":\"…\",\"exp_month\":12,\"exp_year\":2031}}'".to_owned(),
    };
    println!(
        "\nTry it (from this directory):\n\n  curl --cacert keys/dev/ca.pem --cert keys/dev/checkout.pem --key keys/dev/checkout.key \\\n    -H 'content-type: application/json' -d {body} \\\n    {base}/v1/tokens\n\n  curl --cacert keys/dev/ca.pem --cert keys/dev/gateway.pem --key keys/dev/gateway.key \\\n    -X POST {base}/v1/tokens/TOKEN/detokenize\n"
    );
}
