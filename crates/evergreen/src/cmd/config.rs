//! `evergreen validate FILE` and `evergreen config example`.

use anyhow::Result;
use clap::{Args, Subcommand};
use evergreen_config::{Config, EXAMPLE};
use std::path::PathBuf;

/// Arguments of `validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Config file to check.
    pub file: PathBuf,
}

/// Arguments of `config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print a commented example config.
    Example,
}

/// Runs `validate`.
pub fn validate(a: ValidateArgs) -> Result<()> {
    let cfg = Config::load(&a.file)?;
    println!(
        "{}: ok (model {:?}, {} categorical, {} numeric, {} cross features; data dir {})",
        a.file.display(),
        cfg.model.name,
        cfg.features.categorical.len(),
        cfg.features.numeric.len(),
        cfg.features.cross.len(),
        cfg.data.dir.display()
    );
    Ok(())
}

/// Runs `config`.
pub fn run(a: ConfigArgs) -> Result<()> {
    match a.command {
        ConfigCommand::Example => print!("{EXAMPLE}"),
    }
    Ok(())
}
