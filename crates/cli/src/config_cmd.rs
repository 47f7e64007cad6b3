use anyhow::Result;
use clap::Subcommand;
use flagship_core::config::{Area, DEFAULT_TOML};

#[derive(Subcommand)]
pub enum Cmd {
    /// Print the defaults, every key documented (a starting flagship.toml).
    Defaults,
    /// Print the effective configuration (defaults merged with --config).
    Show,
    /// Check --config and print its storage locations and stream rules.
    Check,
}

pub fn run(config: &flagship_core::Config, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Defaults => print!("{DEFAULT_TOML}"),
        Cmd::Show => print!("{}", config.to_toml()),
        Cmd::Check => {
            println!("config ok: mission `{}`", config.mission.name);
            for area in Area::ALL {
                println!("  {:<11} {}", format!("{area:?}"), config.location(area)?);
            }
            let rules = config.mission.stream.rules();
            println!("  {} stream rules:", rules.len());
            for r in rules {
                println!("    [{} chars] {r}", r.len());
            }
        }
    }
    Ok(())
}
