//! `flagship desk`: the support team's triage page. It opens the desk database
//! (`storage.desk`), serves the page ([`flagship_desk::server`]) and runs the live loop
//! ([`flagship_live`]) in-process on any source `watch` takes — its scored posts go into the
//! database and onto open pages — or attaches to a running `watch`'s output file. `desk
//! export` writes the decisions as labels (or Label Studio / Argilla imports); `desk report`
//! the first responses by day and `desk summary` a day's summary (Markdown); `desk user add`
//! adds a login to the users file with its role (the password read without echo on a
//! terminal), `desk user role` changes a role and `desk user remove` takes one out; each ends
//! the user's open sessions in the desk database.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flagship_core::config::Config;
use flagship_desk::server::{self, Desk, Settings};
use flagship_desk::{DeskStore, auth, export};

use crate::shared::parse_duration;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Write the team's decisions: `labels` (the split stage's `id,label`), `label-studio`
    /// (JSON tasks) or `argilla` (JSON lines of records).
    Export(ExportArgs),
    /// Logins in the users file (`desk.users`).
    #[command(subcommand)]
    User(UserCmd),
    /// First responses by day (Markdown): p50 / p90, overdue and late posts, per person and
    /// per platform, days in `desk.timezone`.
    Report(ReportArgs),
    /// A day's summary for the lead (Markdown): volume, flagged, answered, first-response
    /// percentiles, overdue, the biggest question groups with their answers, the alerts.
    Summary(SummaryArgs),
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Days back from today (today included).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Output file (written to a temporary name, then renamed); `-`: standard output.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct SummaryArgs {
    /// The day (YYYY-MM-DD, in desk.timezone); default: today.
    #[arg(long)]
    pub day: Option<chrono::NaiveDate>,
    /// Output file (written to a temporary name, then renamed); `-`: standard output.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Model folder (default: `<storage.models>/need-support`, what the pipeline trains).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub source: crate::shared::SourceArgs,
    /// Serve the database only: no live source, no model.
    #[arg(long)]
    pub no_live: bool,
    /// Follow a running `flagship watch`'s output (its `--out` JSONL) instead of scoring here:
    /// flagged posts appear as watch appends them.
    #[arg(long, conflicts_with = "no_live")]
    pub attach: Option<PathBuf>,
    /// Address to serve on (default: the config's desk.bind, 127.0.0.1:8080; port 0: any).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    #[command(flatten)]
    pub scoring: crate::shared::ScoringArgs,
    /// Stop the desk after this long (`90s`, `10m`); default: until Ctrl-C / SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// labels | label-studio | argilla
    #[arg(long, default_value = "labels")]
    pub format: export::Format,
    /// Output file (written to a temporary name, then renamed); `-`: standard output.
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// Leave out the posts decided with their whole question group (one key for many
    /// posts): only decisions a person made post by post.
    #[arg(long)]
    pub no_bulk: bool,
}

#[derive(clap::Subcommand)]
pub enum UserCmd {
    /// Add NAME (or replace their password): the password is read from the first line of
    /// standard input (or FLAGSHIP_DESK_PASSWORD), never from an argument.
    /// On a terminal it is asked for without echo. Replacing a password ends the user's open
    /// sessions.
    Add {
        name: String,
        /// viewer (reads), agent (decides, takes, replies) or lead (also assigns, edits saved
        /// answers, manages the team); default: a new user is an agent, a known one keeps
        /// their role.
        #[arg(long)]
        role: Option<auth::Role>,
        /// Users file (default: the config's desk.users).
        #[arg(long)]
        users: Option<PathBuf>,
    },
    /// Give NAME a role (viewer, agent or lead); their open sessions end.
    Role {
        name: String,
        role: auth::Role,
        /// Users file (default: the config's desk.users).
        #[arg(long)]
        users: Option<PathBuf>,
    },
    /// Remove NAME from the users file and end their open sessions.
    Remove {
        name: String,
        /// Users file (default: the config's desk.users).
        #[arg(long)]
        users: Option<PathBuf>,
    },
}

pub fn run(config: &Config, a: Args) -> Result<()> {
    match a.cmd {
        Some(Cmd::Export(e)) => export_cmd(config, e),
        Some(Cmd::User(UserCmd::Add { name, role, users })) => add_user(config, &name, role, users),
        Some(Cmd::User(UserCmd::Role { name, role, users })) => {
            set_role(config, &name, role, users)
        }
        Some(Cmd::Report(r)) => report_cmd(config, r),
        Some(Cmd::Summary(s)) => summary_cmd(config, s),
        Some(Cmd::User(UserCmd::Remove { name, users })) => remove_user(config, &name, users),
        None => tokio::runtime::Runtime::new()?.block_on(serve(config, a.serve)),
    }
}

fn export_cmd(config: &Config, a: ExportArgs) -> Result<()> {
    let store = DeskStore::open_existing(&config.desk_database())?;
    if a.out.as_os_str() == "-" {
        let (bytes, n) = export::render(&store, a.format, !a.no_bulk)?;
        std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
        eprintln!("desk export: {n} decided posts");
        return Ok(());
    }
    let n = export::write(&store, a.format, !a.no_bulk, &a.out)?;
    println!(
        "desk export: {n} decided posts → {} ({:?})",
        a.out.display(),
        a.format
    );
    Ok(())
}

/// The mission's accounts for replies: `[reply]`'s endpoints, the credentials from the
/// environment variables it names (a platform whose variables are unset or empty gets none).
fn reply_settings(config: &Config) -> flagship_reply::Settings {
    let r = &config.reply;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    flagship_reply::Settings {
        bluesky: var(&r.bluesky_handle_env)
            .zip(var(&r.bluesky_password_env))
            .map(
                |(identifier, app_password)| flagship_reply::BlueskyAccount {
                    pds: r.bluesky_pds.clone(),
                    appview: r.bluesky_appview.clone(),
                    identifier,
                    app_password,
                },
            ),
        mastodon: (!r.mastodon_instance.is_empty())
            .then(|| var(&r.mastodon_token_env))
            .flatten()
            .map(|token| flagship_reply::MastodonAccount {
                instance: r.mastodon_instance.trim_end_matches('/').to_owned(),
                token,
            }),
        x: var(&r.x_token_env)
            .zip(var(&r.x_user_id_env))
            .map(|(user_token, user_id)| flagship_reply::XAccount {
                base_url: r.x_base_url.clone(),
                user_token,
                user_id,
            }),
        timeout: Duration::from_secs(r.timeout_s),
    }
}

/// The users file: `--users`, else the config's `desk.users`.
fn users_file(config: &Config, users: Option<PathBuf>) -> Result<PathBuf> {
    users
        .or_else(|| config.desk.users.as_ref().map(|u| config.path(u)))
        .context("no users file: pass --users FILE or set desk.users in the config")
}

/// Writes `text` to `out` (`-`: standard output; else a temporary name, then renamed).
fn write_out(out: &std::path::Path, text: &str) -> Result<()> {
    if out.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    let tmp = flagship_store::fs::temp_beside(out)?;
    std::fs::write(tmp.path(), text)?;
    flagship_store::fs::persist(tmp, out)?;
    eprintln!("desk: written {}", out.display());
    Ok(())
}

fn report_cmd(config: &Config, a: ReportArgs) -> Result<()> {
    let store = DeskStore::open_existing(&config.desk_database())?;
    let tz = config.desk.timezone();
    let target = chrono::Duration::from_std(config.desk.first_response())?;
    let now = chrono::Utc::now();
    let today = flagship_desk::clock::day_of(now, tz);
    let first = today - chrono::Days::new(u64::from(a.days.max(1) - 1));
    let since = flagship_desk::clock::day_span(first, tz).0;
    let rows = store.responses(since, now + chrono::Duration::days(1))?;
    let days = flagship_desk::clock::by_day(&rows, target, tz, now);
    write_out(
        &a.out,
        &flagship_desk::summary::report_markdown(&days, tz, target),
    )
}

fn summary_cmd(config: &Config, a: SummaryArgs) -> Result<()> {
    let store = DeskStore::open_existing(&config.desk_database())?;
    let tz = config.desk.timezone();
    let now = chrono::Utc::now();
    let day = a
        .day
        .unwrap_or_else(|| flagship_desk::clock::day_of(now, tz));
    let target = chrono::Duration::from_std(config.desk.first_response())?;
    let s = flagship_desk::summary::Summary::of(&store, day, tz, target, now)?;
    write_out(&a.out, &s.markdown())
}

fn set_role(config: &Config, name: &str, role: auth::Role, users: Option<PathBuf>) -> Result<()> {
    let path = users_file(config, users)?;
    if !auth::set_role(&path, name, role)? {
        bail!("desk: no user {name} in {}", path.display());
    }
    let ended = end_sessions(config, name)?;
    println!(
        "desk: {name} is now a {role} ({}){}",
        path.display(),
        ended_note(ended)
    );
    Ok(())
}

fn add_user(
    config: &Config,
    name: &str,
    role: Option<auth::Role>,
    users: Option<PathBuf>,
) -> Result<()> {
    let path = users_file(config, users)?;
    let password = match std::env::var("FLAGSHIP_DESK_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        // A terminal: asked for without echo (the password never shows on screen).
        _ if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("password for {name} (not shown): "))
                .context("reading the password from the terminal")?
        }
        _ => {
            eprintln!("password for {name} (one line on standard input):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.chars().count() < 10 {
        bail!("a desk password needs at least 10 characters");
    }
    auth::add_user(&path, name, &password, role)?;
    let ended = end_sessions(config, name)?;
    println!(
        "desk: {name} can log in ({}){}",
        path.display(),
        ended_note(ended)
    );
    Ok(())
}

fn remove_user(config: &Config, name: &str, users: Option<PathBuf>) -> Result<()> {
    let path = users_file(config, users)?;
    let found = auth::remove_user(&path, name)?;
    let ended = end_sessions(config, name)?;
    if !found && ended == 0 {
        bail!("desk: no user {name} in {}", path.display());
    }
    println!(
        "desk: {name} removed from {}{}",
        path.display(),
        ended_note(ended)
    );
    Ok(())
}

/// Ends `name`'s open sessions in the desk database, if there is one (a running desk sees
/// it within seconds); how many.
fn end_sessions(config: &Config, name: &str) -> Result<usize> {
    let db = config.desk_database();
    if !db.is_file() {
        return Ok(0);
    }
    Ok(DeskStore::open(&db)?.revoke_user(name)?)
}

fn ended_note(ended: usize) -> String {
    match ended {
        0 => String::new(),
        1 => "; 1 open session ended".into(),
        n => format!("; {n} open sessions ended"),
    }
}

async fn serve(config: &Config, a: ServeArgs) -> Result<()> {
    let db = config.desk_database();
    let store = DeskStore::open(&db)?;
    let methods = auth::Methods::load(
        config
            .desk
            .users
            .as_ref()
            .map(|u| config.path(u))
            .as_deref(),
        config.desk.token_env.as_deref(),
    )?;
    let bind = a.bind.unwrap_or(config.desk.bind);
    let logins = methods.any();
    // The model and the source first: a desk that cannot score says so before it serves.
    let live = match (a.no_live, &a.attach) {
        (false, None) => Some(open_live(config, &a).await?),
        _ => None,
    };
    #[cfg(not(feature = "model"))]
    let live: Option<std::convert::Infallible> = live;
    let desk = Desk::new(store, methods, Settings::from_config(config), bind)?;
    let replier = flagship_reply::Replier::new(reply_settings(config))?;
    let accounts: Vec<&str> = flagship_core::Platform::ALL
        .iter()
        .filter(|p| replier.can_reply(**p))
        .map(|p| p.as_str())
        .collect();
    tracing::info!(
        "desk: replies through the mission's accounts on: {}",
        if accounts.is_empty() {
            "none (the page copies the answer and opens the post)".to_owned()
        } else {
            accounts.join(", ")
        }
    );
    desk.set_replier(std::sync::Arc::new(replier));
    let (listener, addr) = server::bind(bind).await?;

    // One stop for every half: a signal or the duration.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::shared::stop_after(a.duration).await;
        stop_tx.send_replace(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(server::serve(
        desk.clone(),
        listener,
        stopped(stop_rx.clone()),
    ));
    println!(
        "desk: http://{addr}/ — database {}{}",
        db.display(),
        if logins {
            ", logins required"
        } else {
            ", loopback only, no login"
        }
    );

    // A live loop or an attached file that fails is logged; the page keeps serving what the
    // database holds.
    if let Some(live) = live {
        #[cfg(not(feature = "model"))]
        match live {}
        #[cfg(feature = "model")]
        match run_live(config, &a, &desk, live, stopped(stop_rx.clone())).await {
            Ok(()) if !*stop_rx.borrow() => {
                println!("desk: the source ended; still serving (Ctrl-C to stop)")
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!("desk: the live loop stopped: {e:#}; still serving the database")
            }
        }
    } else if let Some(file) = &a.attach
        && let Err(e) = attach(file, &desk, stopped(stop_rx.clone())).await
    {
        tracing::error!("desk: {e:#}; still serving the database");
    }
    server.await.context("desk server task")??;
    println!("desk: stopped");
    Ok(())
}

/// This build has no model (the streaming host's, without the `model` feature): the desk
/// serves its database or follows a watch's file.
#[cfg(not(feature = "model"))]
async fn open_live(_: &Config, _: &ServeArgs) -> Result<std::convert::Infallible> {
    bail!(
        "this flagship is built without the model: serve with --no-live, or --attach a watch's file"
    )
}

/// The live half, opened before the page is served.
#[cfg(feature = "model")]
struct Live {
    model: flagship_model::Classifier,
    model_id: String,
    source: Box<dyn flagship_ingest::source::PostSource>,
}

#[cfg(feature = "model")]
async fn open_live(config: &Config, a: &ServeArgs) -> Result<Live> {
    let (model, model_dir) =
        crate::shared::load_model(config, a.model.as_deref(), "pass --model, or --no-live")?;
    let source = a
        .source
        .open(config, "desk", Duration::from_secs(120))
        .await?;
    Ok(Live {
        model,
        model_id: model_dir.display().to_string(),
        source,
    })
}

/// The live loop into the desk, until the source ends or `stop`.
#[cfg(feature = "model")]
async fn run_live(
    config: &Config,
    a: &ServeArgs,
    desk: &std::sync::Arc<Desk>,
    live: Live,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    desk.set_model(&live.model_id, live.model.threshold());
    desk.set_model_card(&crate::shared::describe_model(&live.model));
    let embedder = crate::shared::load_embedder(config);
    if let Some(e) = &embedder {
        let (d, e) = (desk.clone(), e.clone());
        tokio::task::spawn_blocking(move || d.set_embedder(e))
            .await
            .context("embedding the saved answers")??;
    }
    let handled = desk.ids()?;
    println!(
        "desk: scoring live with {} (threshold {:.3}); {} posts already in the desk are not scored again",
        live.model_id,
        live.model.threshold(),
        handled.len()
    );
    let opts = a.scoring.options(None, None);
    let t = flagship_live::run(
        flagship_live::Run {
            config,
            model: &live.model,
            model_id: &live.model_id,
            handled_before: handled,
            options: &opts,
            embedder,
            progress: &|_| {},
            telemetry: Some(
                desk.live_telemetry
                    .get_or_init(
                        || std::sync::Arc::new(flagship_core::telemetry::Telemetry::live()),
                    )
                    .clone(),
            ),
        },
        live.source,
        &mut server::LiveSink(desk.clone()),
        stop,
    )
    .await?;
    println!(
        "desk: {} posts seen, {} kept by the profile, {} flagged; arrival → stored p50 {:.1} ms, p99 {:.1} ms ({}); {} flagged posts embedded for question groups, off the latency path ({:.1} ms a chunk at p50; p99 {:.1} s after their write, at most {} s), {} left single",
        t.seen,
        t.kept,
        t.flagged,
        t.latency_p50_ms,
        t.latency_p99_ms,
        t.stopped_by,
        t.embedded,
        t.budget.embed.p50_ms,
        t.embed_delay_p99_ms / 1e3,
        flagship_live::EMBED_WITHIN.as_secs(),
        t.unembedded
    );
    if t.hurried > 0 {
        println!(
            "desk: {} of {} scored posts in a hurry (the exits' looser margins, model.early_exit_hurried)",
            t.hurried, t.kept
        );
    }
    // The run's totals as one JSON line, as `watch` ends (what `cargo xtask bench` reads).
    println!("{}", serde_json::to_string(&t)?);
    Ok(())
}

/// Follows a `watch` output file: complete new lines every 250 ms into the desk (a file that
/// shrank was rewritten: read again from the start). A line that is no flagged row is named
/// (file and line) and skipped.
async fn attach(
    file: &std::path::Path,
    desk: &std::sync::Arc<Desk>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    use std::io::{Read, Seek};
    println!("desk: following {} (a watch's output)", file.display());
    tokio::pin!(stop);
    let (mut offset, mut line_no, mut rows, mut bad) = (0u64, 0u64, 0u64, 0u64);
    loop {
        match std::fs::File::open(file) {
            Ok(mut f) => {
                let len = f.metadata()?.len();
                if len < offset {
                    (offset, line_no) = (0, 0);
                }
                f.seek(std::io::SeekFrom::Start(offset))?;
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let (mut batch, mut whys) = (Vec::new(), Vec::new());
                for line in buf[..complete].split(|&b| b == b'\n') {
                    if line.is_empty() {
                        continue;
                    }
                    line_no += 1;
                    match serde_json::from_slice::<flagship_core::live::Row>(line) {
                        Ok(flagship_core::live::Row::Flagged(r)) => batch.push(r.scored()),
                        Ok(flagship_core::live::Row::Why(w)) => whys.push(w.explained()),
                        Err(e) => {
                            bad += 1;
                            tracing::warn!("{}:{line_no}: not a flagged row: {e}", file.display());
                        }
                    }
                }
                offset += complete as u64;
                if !batch.is_empty() {
                    rows += batch.len() as u64;
                    desk.add(&batch)?;
                }
                if !whys.is_empty() {
                    desk.explained(&whys)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    println!(
        "desk: {rows} flagged rows read from {} ({bad} lines skipped)",
        file.display()
    );
    Ok(())
}
