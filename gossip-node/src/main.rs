//! `gossip-node`: run a member of a gossip cluster or a local demo cluster,
//! or write development certificates.
//! Everything but argument dispatch lives in the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use gossip_node::cli::{self, Cli, Command, logging};
use gossip_node::{LogFormat, NodeConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A member is light work made of many small wake-ups: on one thread they
    // cost no cross-thread hand-offs (futex wake-ups between workers), which
    // were most of an idle member's CPU (issue #9). The commands that start
    // many processes or draw tables keep a multi-threaded runtime.
    let runtime = match &cli.command {
        Command::Run(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let result = runtime
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, e.g. "invalid configuration:
/// unknown transport 'x' (expected one of: grpc, quic)". A cause whose text
/// the line already ends with (an error that prints its source itself) is
/// not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.ends_with(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            // The configuration is checked before logging or anything else
            // starts, so that a mistake is one clear message.
            let config = NodeConfig::from_args(&args).context("invalid configuration")?;
            logging::init(config.log_format, "info");
            cli::run::run_until_signal(config).await?;
        }
        Command::Demo(args) => {
            // The demo draws on standard output; keep the logs to warnings.
            logging::init(LogFormat::Text, "warn");
            cli::demo::run(args).await?;
        }
        #[cfg(any(feature = "grpc", feature = "quic"))]
        Command::Certs(args) => {
            logging::init(LogFormat::Text, "warn");
            let report = cli::certs::run(&args).context("cannot write the certificates")?;
            print!("{report}");
        }
        Command::Members(args) => cli::client::members(args).await?,
        Command::Kv(args) => cli::client::kv(args).await?,
        Command::Broadcast(args) => cli::client::broadcast(args).await?,
        Command::Join(args) => cli::join::run(args).await?,
        Command::Meta(args) => cli::meta::run(args).await?,
        Command::Leave(args) => cli::leave::run(args).await?,
        Command::Keygen(args) => cli::keys::keygen(args)?,
        Command::Keys(args) => cli::keys::run(args).await?,
        Command::Simulate(args) => cli::simulate::run(args)?,
        Command::Bench(args) => {
            logging::init(LogFormat::Text, "warn");
            cli::bench::run(args).await?;
        }
        Command::Soak(args) => {
            logging::init(LogFormat::Text, "warn");
            cli::soak::run(args).await?;
        }
    }
    Ok(())
}
