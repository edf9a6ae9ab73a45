//! `spool config get/set/unset KEY [VALUE]`: the persisted settings by name.

use std::io::Write;

use clap::{Args, Subcommand};

use crate::Spool;

/// Arguments of `spool config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// What to do with the setting.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// `get`, `set` or `unset`.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigAction {
    /// Print a setting's value (exit 1 if it has none)
    Get {
        /// destination, endpoint, api_key, header.NAME, protocol, compression, catalog, consent_policy (opt_out or opt_in), deletion_request (true or false), or a limit (max_events, max_bytes, max_event_bytes, max_age, max_attempts, batch_size, backoff, timeout, flush_interval)
        key: String,
        /// Print {"key": …, "value": … or null} and exit 0 either way
        #[arg(long)]
        json: bool,
    },
    /// Set a setting; the host's code no longer replaces what you set
    Set {
        /// The setting (see `spool config get --help`)
        key: String,
        /// Its value, checked before anything is written
        value: String,
        /// Set it as the host's default, as a Rust host does in code (for hosts in
        /// other languages): what the user set stays in force
        #[arg(long)]
        host: bool,
    },
    /// Remove a setting; `unset destination` gives the destination back to the host
    Unset {
        /// The setting (see `spool config get --help`)
        key: String,
    },
}

pub(super) fn run(spool: &Spool, args: ConfigArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.action {
        ConfigAction::Get { key, json } => {
            let value = spool.config_get(&key)?;
            if json {
                let obj = serde_json::json!({"key": key, "value": value});
                writeln!(out, "{obj}")?;
                return Ok(());
            }
            match value {
                Some(v) => writeln!(out, "{v}")?,
                None => anyhow::bail!("{key} is not set"),
            }
        }
        ConfigAction::Set {
            key,
            value,
            host: false,
        } => spool.config_set(&key, &value)?,
        ConfigAction::Set {
            key,
            value,
            host: true,
        } => {
            // Not an error when the user's own choice stands: the host asked for a
            // default. Said only to a person at a terminal, never into a host's logs.
            if !spool.config_set_for_host(&key, &value)?
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
            {
                eprintln!("{}: note: your own {key} stays in force", spool.app());
            }
        }
        ConfigAction::Unset { key } => {
            if !spool.config_unset(&key)? {
                anyhow::bail!("{key} is not set");
            }
        }
    }
    Ok(())
}
