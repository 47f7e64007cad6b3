//! `flagship-bench`: flagship's side of `cargo xtask bench …` — each sub-command measures one
//! part on the release build and prints one JSON line that xtask sets beside its peer's
//! (Hugging Face `transformers`, PySpark). Kept out of the `flagship` binary a server runs.

mod alerts;
mod desk;
mod desk_load;
mod groups;
mod ingest;
mod live;
mod model;
mod team;
mod textproc;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flagship-bench",
    about = "flagship's benchmarks (run by `cargo xtask bench`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `bench train|predict`: fine-tuning or scoring speed on the same settings as the peer.
    Model(model::Args),
    /// `bench ingest`: replay into the local Firehose layout.
    #[command(subcommand)]
    Ingest(ingest::Cmd),
    /// `bench desk`: the desk store's views on a database of N posts.
    Desk(desk::Args),
    /// `bench desk-load`: the desk under load (pages with event streams, decisions, a
    /// replay), its server a child process (`desk-serve`).
    DeskLoad(desk_load::Args),
    /// `bench groups`: question groups — pair precision / recall, the embedding's cost, and
    /// posts vs cards on the demo replay and two bursts.
    Groups(groups::Args),
    /// `bench alerts`: the desk's burst alarm on the demo replay — false alarms a day, and
    /// detection and delay of injected bursts (a paused clock: twelve days in seconds).
    Alerts(alerts::Args),
    /// `bench team`: a scripted team of three on shifts answering a demo day with a burst
    /// injected: first-response p50 / p90, overdue, per person; when the alert fired.
    Team(team::Args),
    /// The server side of `desk-load` (run by it).
    #[command(hide = true)]
    DeskServe(desk_load::ServeArgs),
    /// `bench live`'s parts: the micro-batch plans planned per batch vs built once; the
    /// launch burst's looped replay.
    #[command(subcommand)]
    Live(live::Cmd),
    /// `bench textproc`: the textproc plan on a generated corpus.
    #[command(subcommand)]
    Textproc(textproc::Cmd),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Model(args) => model::run(args),
        Command::Ingest(cmd) => ingest::run(cmd),
        Command::Desk(a) => desk::run(a),
        Command::DeskLoad(a) => desk_load::run(a),
        Command::DeskServe(a) => desk_load::serve(a),
        Command::Groups(a) => groups::run(a),
        Command::Team(a) => team::run(a),
        Command::Alerts(a) => alerts::run(a),
        Command::Live(cmd) => live::run(cmd),
        Command::Textproc(cmd) => textproc::run(cmd),
    }
}
