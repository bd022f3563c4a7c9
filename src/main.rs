//! The `tokenvault` command: a short, linear script over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokenvault::config::{Config, PassphraseSource};
use tokenvault::daemon;
use tokenvault::pki::write_dev_pki;
use tokenvault::startup::{init_keyring, prepare_dev, read_passphrase};

/// Exit code for a bad configuration (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit code for bad usage (EX_USAGE).
const EXIT_USAGE: u8 = 64;

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
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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

fn print_dev_example(addr: SocketAddr) {
    let base = format!("https://{addr}");
    println!(
        "\nTry it (from this directory):\n\n  curl --cacert keys/dev/ca.pem --cert keys/dev/checkout.pem --key keys/dev/checkout.key \\\n    -H 'content-type: application/json' \\\n    -d '{{\"card\":{{\"number\":\"4242 4242 4242 4242\",\"exp_month\":12,\"exp_year\":2031,\"cvc\":\"123\"}}}}' \\\n    {base}/v1/tokens\n\n  curl --cacert keys/dev/ca.pem --cert keys/dev/gateway.pem --key keys/dev/gateway.key \\\n    -X POST {base}/v1/tokens/TOKEN/detokenize\n"
    );
}
