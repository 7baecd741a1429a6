//! `vault-bench`: the load benchmark of the whole vault (issue 8).
//!
//! One command starts the real `vault-server` binary on a free loopback port with
//! a fresh data directory, fills a tenant with realistic documents and measures
//! uploads, downloads, ranged reads, search, server memory and key-service calls,
//! each against a baseline measured in the same run.

use clap::Parser;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load benchmark of the vault against raw file writes, the bare AEAD, plaintext Tantivy and restic"
)]
struct Options {
    /// Small counts, a 64 MiB large upload and no 100k search: under two minutes.
    #[arg(long)]
    quick: bool,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    println!("vault-bench: {options:?} (not implemented yet)");
    Ok(())
}
