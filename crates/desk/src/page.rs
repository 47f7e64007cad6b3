//! The desk's HTML: the page, a post, the today panel, the login form. Every string from a
//! post, a user or a file is escaped here ([`esc`]) and wrapped in `<bdi>` so right-to-left
//! overrides stay inside it; links are only ever `http(s)`. No inline script or style (the
//! CSP forbids them): behaviour is `/assets/desk.js`, looks `/assets/desk.css`.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::auth::Role;
use crate::clock::human;
use crate::{Alert, Answer, AnswerChange, Decision, GroupCard, Item, Today};

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // SSE frames split on CR; the page never needs one.
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A link target only if it is a plain web address (never `javascript:` and the like).
pub fn safe_url(url: &str) -> Option<&str> {
    let lower = url.trim_start().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(url)
}

/// What a page needs beside the posts.
pub struct Frame<'a> {
    pub mission: &'a str,
    pub user: &'a str,
    pub csrf: &'a str,
    /// Whether logging out makes sense (an auth method is configured).
    pub logout: bool,
    /// What the person may do (a viewer's page has no decision, reply or assignment keys;
    /// the server refuses them anyway).
    pub role: Role,
    /// The teammates a lead can give a post to.
    pub team: &'a [String],
    /// The desk's clock and first-response target.
    pub clock: Clock,
    /// The alerts raised lately (the banner).
    pub alerts: &'a [Alert],
}

/// What a post's HTML needs beside the post: its page's CSRF token and the desk's clock.
#[derive(Debug, Clone, Copy)]
pub struct Cx<'a> {
    pub csrf: &'a str,
    pub clock: Clock,
}

/// The desk's time now and the first-response target.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: DateTime<Utc>,
    pub target: chrono::Duration,
}

/// Which list the page shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum View {
    Queue(crate::Order),
    Uncertain,
    /// Posts decided as needing a reply that has not gone out yet.
    Waiting,
}

/// Whose posts a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Whose {
    #[default]
    All,
    Mine,
    Unassigned,
}

impl Whose {
    pub fn as_str(self) -> &'static str {
        match self {
            Whose::All => "all",
            Whose::Mine => "mine",
            Whose::Unassigned => "unassigned",
        }
    }

    pub fn parse(s: &str) -> Option<Whose> {
        [Whose::All, Whose::Mine, Whose::Unassigned]
            .into_iter()
            .find(|w| w.as_str() == s)
    }

    /// The store's filter for `user`.
    pub fn of(self, user: &str) -> crate::Who<'_> {
        match self {
            Whose::All => crate::Who::All,
            Whose::Mine => crate::Who::Mine(user),
            Whose::Unassigned => crate::Who::Unassigned,
        }
    }
}

/// The first-response clock of a post that arrived at `arrived`: how long it has waited,
/// and the time left (or how far past the target it is), with whether it is overdue.
pub fn clock_text(arrived: DateTime<Utc>, clock: Clock) -> (String, bool) {
    let waited = (clock.now - arrived).num_seconds().max(0) as f64;
    let left = (arrived + clock.target - clock.now).num_seconds() as f64;
    if left <= 0.0 {
        (
            format!("waiting {} · overdue {}", human(waited), human(-left)),
            true,
        )
    } else {
        (
            format!("waiting {} · due in {}", human(waited), human(left)),
            false,
        )
    }
}

/// The clock's span (filled again by the page's script as time passes).
fn clock_span(h: &mut String, arrived: DateTime<Utc>, clock: Clock) {
    let (text, _) = clock_text(arrived, clock);
    let _ = write!(
        h,
        r#"<span class="clock" data-arrived="{a}" data-due="{due}" title="first response due {at}">{text}</span> "#,
        a = arrived.timestamp_millis(),
        due = (arrived + clock.target).timestamp_millis(),
        at = (arrived + clock.target).format("%Y-%m-%d %H:%M UTC"),
    );
}

/// Who holds a post (an empty span when nobody does: the page fills it live).
fn holder_span(h: &mut String, held: Option<&str>) {
    match held {
        Some(who) => {
            let _ = write!(
                h,
                r#"<span class="holder">held by <bdi>{}</bdi></span> "#,
                esc(who)
            );
        }
        None => h.push_str(r#"<span class="holder"></span> "#),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| {
        format!(
            r#"<time datetime="{}">{}</time>"#,
            t.to_rfc3339(),
            t.format("%Y-%m-%d %H:%M UTC")
        )
    })
    .unwrap_or_default()
}

/// The saved answer nearest a post or group, filled in for it.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// The saved answer's id (what a reply from the desk names).
    pub answer: i64,
    pub title: String,
    /// The answer with its placeholders filled, or why it could not be (a missing value).
    pub text: Result<String, String>,
    /// Cosine between the answer and the post (or the group's centroid).
    pub similarity: f32,
}

fn suggestion(h: &mut String, s: Option<&Suggestion>) {
    let Some(s) = s else { return };
    let _ = write!(
        h,
        r#"<div class="answer" title="the saved answer nearest this post (cosine {sim:.2})">answer: <bdi class="answer-title">{title}</bdi> "#,
        sim = s.similarity,
        title = esc(&s.title),
    );
    match &s.text {
        Ok(text) => {
            let _ = write!(
                h,
                r#"<button type="button" class="copy" data-text="{t}">copy <kbd>c</kbd></button> <button type="button" class="reply" data-answer="{a}">reply… <kbd>s</kbd></button><p class="answer-text" dir="auto"><bdi>{t}</bdi></p><div class="preview" hidden></div>"#,
                t = esc(text),
                a = s.answer,
            );
        }
        Err(why) => {
            let _ = write!(h, r#"<span class="error">{}</span>"#, esc(why));
        }
    }
    h.push_str("</div>");
}

/// One post: platform, author, time, text, link, probability, matched terms, the nearest
/// saved answer, decision buttons (a form that works without script; the script sends the
/// same fields).
pub fn post(item: &Item, cx: &Cx, answer: Option<&Suggestion>) -> String {
    let csrf = cx.csrf;
    let mut h = String::new();
    let state = item.decision.map(|d| d.as_str()).unwrap_or("open");
    let overdue = item.clock_runs() && clock_text(item.arrived_at, cx.clock).1;
    let _ = write!(
        h,
        r#"<article class="post {flag} state-{state}{overdue}" data-id="{id}" data-p="{p:.6}" data-arrived="{arrived}"{held}{parent} tabindex="-1">"#,
        overdue = if overdue { " overdue" } else { "" },
        held = item
            .held
            .as_deref()
            .map(|w| format!(r#" data-held="{}""#, esc(w)))
            .unwrap_or_default(),
        flag = if item.need_support {
            "flagged"
        } else {
            "unflagged"
        },
        // A reply or a quote: the page shows its parent when the post is selected.
        parent = if item.refs.parent.is_some() {
            r#" data-parent="1""#
        } else {
            ""
        },
        id = esc(&item.id),
        p = item.probability,
        arrived = item.arrived_at.timestamp_millis(),
    );
    let _ = write!(
        h,
        r#"<header><span class="platform">{platform}</span> <bdi class="author">{author}</bdi> {time} <span class="prob" title="threshold {thr:.3}">p {p:.2}</span> <span class="flag">{flag}</span> "#,
        platform = esc(&item.platform),
        author = esc(item.author.as_deref().unwrap_or("(unknown)")),
        time = time(item.created_at),
        thr = item.threshold,
        p = item.probability,
        flag = if item.need_support {
            "flagged"
        } else {
            "not flagged"
        },
    );
    if item.clock_runs() {
        clock_span(&mut h, item.arrived_at, cx.clock);
    }
    holder_span(&mut h, item.held.as_deref());
    if item.hurried {
        h.push_str(r#"<span class="hurried" title="read in a hurry: the live loop was behind, and the exits' looser margins decided it (model.early_exit_hurried)">hurried</span> "#);
    }
    h.push_str("</header>");
    if item.refs.parent.is_some() {
        h.push_str(r#"<div class="thread" hidden></div>"#);
    }
    let _ = write!(
        h,
        r#"<p class="text" dir="auto"><bdi>{}</bdi></p>"#,
        esc(&shown_text(item))
    );
    if let Some(r) = &item.replied {
        let _ = write!(
            h,
            r#"<p class="replied">replied by <bdi>{who}</bdi> {at}{link}</p>"#,
            who = esc(&r.who),
            at = time(Some(r.at)),
            link = r
                .url
                .as_deref()
                .and_then(safe_url)
                .map(|u| format!(
                    r#": <a href="{u}" target="_blank" rel="noopener noreferrer">the reply</a>"#,
                    u = esc(u)
                ))
                .unwrap_or_default(),
        );
    }
    suggestion(&mut h, answer);
    h.push_str("<footer>");
    match item.url.as_deref().and_then(safe_url) {
        Some(u) => {
            let _ = write!(
                h,
                r#"<a class="open" href="{}" target="_blank" rel="noopener noreferrer">open the post</a> "#,
                esc(u)
            );
        }
        None => h.push_str(r#"<span class="open">no link</span> "#),
    }
    if !item.terms.is_empty() {
        let _ = write!(
            h,
            r#"<span class="terms">matched: <bdi>{}</bdi></span> "#,
            esc(&item.terms.join(", "))
        );
    }
    if !item.why.is_empty() {
        let words: Vec<&str> = item.why.iter().map(|w| w.word.as_str()).collect();
        let _ = write!(
            h,
            r#"<span class="why" title="the words that raised the probability most">why: <bdi>{}</bdi></span> "#,
            esc(&words.join(", "))
        );
    }
    let _ = write!(
        h,
        r#"<span class="state">{}</span><form method="post" action="/decide" class="decide"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="id" value="{}">"#,
        item.decision.map(|d| d.title()).unwrap_or(""),
        esc(csrf),
        esc(&item.id)
    );
    for d in Decision::ALL {
        let _ = write!(
            h,
            r#"<button name="decision" value="{}" title="key {}">{} <kbd>{}</kbd></button>"#,
            d.as_str(),
            d.key(),
            d.title(),
            d.key()
        );
    }
    h.push_str("</form></footer></article>");
    h
}

/// A post's text as a reader sees it (entities decoded: X sends `&amp;` for `&`).
fn shown_text(item: &Item) -> String {
    let platform = item.platform.parse().unwrap_or_default();
    flagship_platforms::display_text(platform, &item.text).into_owned()
}

/// A question group as one card: its first post's text, how many posts and authors, the
/// platforms, first and last arrival, the nearest saved answer, every member behind a
/// disclosure, and the decision buttons that decide the whole group.
pub fn group_card(card: &GroupCard, cx: &Cx, answer: Option<&Suggestion>) -> String {
    let csrf = cx.csrf;
    let mut h = String::new();
    let state = card.decision.map(|d| d.as_str()).unwrap_or("open");
    let rep = &card.representative;
    // The card's clock runs from its oldest post still waiting; its holder is the one who
    // holds every waiting post.
    let waiting: Vec<&Item> = card.members.iter().filter(|m| m.clock_runs()).collect();
    let oldest = waiting.iter().map(|m| m.arrived_at).min();
    let holder = waiting
        .first()
        .and_then(|m| m.held.as_deref())
        .filter(|w| waiting.iter().all(|m| m.held.as_deref() == Some(*w)));
    let overdue = oldest.is_some_and(|a| clock_text(a, cx.clock).1);
    let _ = write!(
        h,
        r#"<article class="post group flagged state-{state}{overdue}" data-id="group:{g}" data-group="{g}" data-members="{members}" data-p="{p:.6}" data-arrived="{arrived}"{held} tabindex="-1">"#,
        overdue = if overdue { " overdue" } else { "" },
        held = holder
            .map(|w| format!(r#" data-held="{}""#, esc(w)))
            .unwrap_or_default(),
        g = card.id,
        members = esc(&card
            .members
            .iter()
            .map(|m| m.id.as_str())
            .collect::<Vec<_>>()
            .join(" ")),
        p = rep.probability,
        arrived = card.last_at.timestamp_millis(),
    );
    let _ = write!(
        h,
        r#"<header><span class="count"><b>{size}</b> posts · <b>{authors}</b> authors</span> <span class="platform">{platforms}</span> <span class="span">first {first} · last {last}</span> <span class="waiting">{waiting} waiting</span> "#,
        size = card.size,
        authors = card.authors,
        platforms = esc(&card.platforms.join(" · ")),
        first = time(Some(card.first_at)),
        last = time(Some(card.last_at)),
        waiting = card.waiting,
    );
    if let Some(a) = oldest {
        clock_span(&mut h, a, cx.clock);
    }
    holder_span(&mut h, holder);
    h.push_str("</header>");
    let _ = write!(
        h,
        r#"<p class="text" dir="auto"><bdi class="author">{author}</bdi>: <bdi>{text}</bdi></p>"#,
        author = esc(rep.author.as_deref().unwrap_or("(unknown)")),
        text = esc(&shown_text(rep)),
    );
    suggestion(&mut h, answer);
    let _ = write!(
        h,
        r#"<details class="members"><summary>all {n} posts <kbd>x</kbd></summary><ol>"#,
        n = card.size
    );
    for m in &card.members {
        let _ = write!(
            h,
            r#"<li data-id="{id}" class="state-{state}"><span class="platform">{platform}</span> <bdi class="author">{author}</bdi> {time} <bdi dir="auto">{text}</bdi> "#,
            id = esc(&m.id),
            state = m.decision.map(|d| d.as_str()).unwrap_or("open"),
            platform = esc(&m.platform),
            author = esc(m.author.as_deref().unwrap_or("(unknown)")),
            time = time(m.created_at),
            text = esc(&shown_text(m)),
        );
        if let Some(u) = m.url.as_deref().and_then(safe_url) {
            let _ = write!(
                h,
                r#"<a href="{}" target="_blank" rel="noopener noreferrer">open</a>"#,
                esc(u)
            );
        }
        h.push_str("</li>");
    }
    if card.size as usize > card.members.len() {
        let _ = write!(
            h,
            "<li>… and {} more</li>",
            card.size as usize - card.members.len()
        );
    }
    let _ = write!(
        h,
        r#"</ol></details><footer><span class="state">{title}</span><form method="post" action="/decide-group" class="decide"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="group" value="{g}">"#,
        title = card
            .decision
            .map(|d| format!("{} (whole group)", d.title()))
            .unwrap_or_default(),
        csrf = esc(csrf),
        g = card.id,
    );
    for d in Decision::ALL {
        let _ = write!(
            h,
            r#"<button name="decision" value="{}" title="key {}: all {} waiting posts">{} <kbd>{}</kbd></button>"#,
            d.as_str(),
            d.key(),
            card.waiting,
            d.title(),
            d.key()
        );
    }
    h.push_str("</form></footer></article>");
    h
}

/// One entry of a list: a post alone, or a question group's card.
#[derive(Debug, Clone)]
pub enum Entry {
    Post(Item, Option<Suggestion>),
    Group(GroupCard, Option<Suggestion>),
}

/// An entry's HTML.
pub fn entry(e: &Entry, cx: &Cx) -> String {
    match e {
        Entry::Post(i, s) => post(i, cx, s.as_ref()),
        Entry::Group(g, s) => group_card(g, cx, s.as_ref()),
    }
}

/// How a saved answer fits each platform (used / limit), filled with a long example
/// author and link.
pub struct Fits {
    pub platform: &'static str,
    pub used: usize,
    pub limit: usize,
}

/// The saved answers page: each answer in its own edit form (with how it fits each
/// platform), a form for a new one, and the latest changes with who made them.
pub fn answers_page(
    frame: &Frame,
    answers: &[(Answer, Result<Vec<Fits>, String>)],
    history: &[AnswerChange],
    message: Option<&str>,
) -> String {
    let mut h = head(
        &format!("flagship desk — {} — saved answers", frame.mission),
        Some(frame.csrf),
    );
    let _ = write!(
        h,
        r#"<body data-view="answers" class="answers"><header class="top"><h1>flagship desk · <bdi>{mission}</bdi></h1><nav><a href="/">Queue</a> <a href="/answers" aria-current="page">Saved answers</a></nav><span class="who">signed in as <bdi>{user}</bdi></span></header><main class="answers"><section><h2>Saved answers</h2><p class="keys">Placeholders: <code>{{author}}</code> (the post's author, as @handle), <code>{{link}}</code> (the post's link); <code>{{{{</code> and <code>}}}}</code> for braces. Each answer is checked against X (280, links count 23, CJK 2), Bluesky (300 graphemes) and the Mastodon instance's limit.</p>"#,
        mission = esc(frame.mission),
        user = esc(frame.user),
    );
    if let Some(m) = message {
        let _ = write!(h, r#"<p class="error" role="alert">{}</p>"#, esc(m));
    }
    let form = |h: &mut String, id: Option<i64>, title: &str, body: &str| {
        let _ = write!(
            h,
            r#"<form method="post" action="/answers" class="answer-form"><input type="hidden" name="csrf" value="{csrf}">{id}<label>title <input name="title" value="{title}" required maxlength="200"></label><label>text <textarea name="body" rows="4" required maxlength="5000">{body}</textarea></label><button name="action" value="save">{verb}</button>"#,
            csrf = esc(frame.csrf),
            id = id
                .map(|i| format!(r#"<input type="hidden" name="id" value="{i}">"#))
                .unwrap_or_default(),
            title = esc(title),
            body = esc(body),
            verb = if id.is_some() { "save" } else { "add" },
        );
        if id.is_some() {
            h.push_str(r#" <button name="action" value="delete" class="delete">retire</button>"#);
        }
        h.push_str("</form>");
    };
    for (a, fits) in answers {
        let _ = write!(
            h,
            r#"<article class="saved-answer" data-answer="{id}"><h3><bdi>{title}</bdi></h3><p class="meta">changed by <bdi>{by}</bdi> {at}</p><p class="fits">"#,
            id = a.id,
            title = esc(&a.title),
            by = esc(&a.updated_by),
            at = time(Some(a.updated_at)),
        );
        match fits {
            Ok(fits) => {
                for f in fits {
                    let _ = write!(
                        h,
                        r#"<span class="{class}">{platform} {used}/{limit}</span> "#,
                        class = if f.used > f.limit { "over" } else { "fits" },
                        platform = f.platform,
                        used = f.used,
                        limit = f.limit,
                    );
                }
            }
            Err(e) => {
                let _ = write!(h, r#"<span class="error">{}</span>"#, esc(e));
            }
        }
        h.push_str("</p>");
        if frame.role >= Role::Lead {
            form(&mut h, Some(a.id), &a.title, &a.body);
        } else {
            let _ = write!(
                h,
                r#"<p class="answer-text" dir="auto"><bdi>{}</bdi></p>"#,
                esc(&a.body)
            );
        }
        h.push_str("</article>");
    }
    if frame.role >= Role::Lead {
        h.push_str(r#"<h2>A new answer</h2>"#);
        form(&mut h, None, "", "");
    } else {
        h.push_str(r#"<p class="keys">Saved answers are the leads' to write and edit.</p>"#);
    }
    h.push_str(r#"</section><section class="history"><h2>Changes</h2><ol>"#);
    for c in history {
        let _ = write!(
            h,
            r#"<li>{at} <bdi>{who}</bdi> {action} #{id} <bdi>{title}</bdi></li>"#,
            at = time(Some(c.at)),
            who = esc(&c.who),
            action = esc(&c.action),
            id = c.answer,
            title = esc(&c.title),
        );
    }
    h.push_str(
        "</ol></section></main></body></html>
",
    );
    h
}

/// The model in use and the latest drift check, for the today panel.
pub struct Context<'a> {
    pub model: &'a str,
    pub threshold: Option<f64>,
    pub drift: &'a str,
    pub business: &'a flagship_core::config::Business,
    /// Today's first responses (posts that arrived today), against `target`.
    pub response: &'a crate::clock::Figures,
    pub target: chrono::Duration,
    /// The desk's time zone's name (its days).
    pub timezone: &'a str,
}

fn minutes(seconds: f64) -> String {
    format!("{:.1}", seconds / 60.0)
}

/// The today panel: seen / flagged / decided, the flags' precision from decisions, minutes
/// saved by the business formulas, the model and threshold, the drift status.
pub fn today(t: &Today, cx: &Context) -> String {
    let b = cx.business;
    let words = |w: u64| w.min(u64::from(u32::MAX)) as u32;
    // Reading spared on posts not flagged; time lost on flags that needed nothing and on
    // misses found among the unflagged (read, answered late).
    let spared = b.reading_seconds(words(t.words_unflagged));
    let wasted = b.response_seconds(words(t.words_wasted));
    let missed = b.response_seconds(words(t.words_missed));
    let precision = t
        .precision
        .map(|p| {
            format!(
                "{:.0} % ({} of {})",
                p * 100.0,
                t.flagged_needed,
                t.flagged_decided
            )
        })
        .unwrap_or_else(|| "no flagged post decided yet".into());
    let threshold = cx
        .threshold
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|| "–".into());
    format!(
        r#"<h2>Today <small>since 00:00 {tz}</small></h2><dl>
<dt>seen</dt><dd id="t-seen">{seen}</dd>
<dt>first response</dt><dd id="t-response">{response}</dd>
<dt>overdue</dt><dd id="t-overdue">{overdue}</dd>
<dt>flagged</dt><dd id="t-flagged">{flagged}</dd>
<dt>decided</dt><dd id="t-decided">{decided}</dd>
<dt>precision of flags</dt><dd id="t-precision">{precision}</dd>
<dt>misses found</dt><dd id="t-missed">{missed_found}</dd>
<dt>minutes saved (est.)</dt><dd id="t-saved">{saved}</dd>
<dd class="note">{spared} min of reading spared on posts not flagged, − {wasted} min on flags needing no reply, − {missed} min on misses found</dd>
<dt>model</dt><dd><bdi>{model}</bdi></dd>
<dt>threshold</dt><dd>{threshold}</dd>
<dt>drift</dt><dd><bdi>{drift}</bdi></dd>
</dl>"#,
        seen = t.seen,
        tz = esc(cx.timezone),
        response = match (cx.response.p50_s, cx.response.p90_s) {
            (Some(p50), Some(p90)) => format!(
                "p50 {} · p90 {} ({} of {} answered; target {})",
                human(p50),
                human(p90),
                cx.response.answered,
                cx.response.needing,
                human(cx.target.num_seconds() as f64)
            ),
            _ => format!(
                "none answered yet ({} waiting; target {})",
                cx.response.needing,
                human(cx.target.num_seconds() as f64)
            ),
        },
        overdue = format_args!(
            "{} waiting past the target · {} answered late",
            cx.response.overdue, cx.response.late
        ),
        flagged = t.flagged,
        decided = t.decided,
        missed_found = t.missed_found,
        saved = minutes(spared - wasted - missed),
        spared = minutes(spared),
        wasted = minutes(wasted),
        missed = minutes(missed),
        model = esc(cx.model),
        drift = esc(cx.drift),
    )
}

fn head(title: &str, csrf: Option<&str>) -> String {
    let csrf = csrf
        .map(|c| format!(r#"<meta name="csrf" content="{}">"#, esc(c)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{}</title>{csrf}
<link rel="stylesheet" href="/assets/desk.css">
<script src="/assets/desk.js" defer></script>
</head>"#,
        esc(title)
    )
}

/// The alerts banner: each alert raised lately, newest first (the page adds new ones live).
pub fn alert_line(a: &Alert) -> String {
    format!(
        r#"<p class="alert alert-{kind}" data-alert="{id}">{at} <bdi>{text}</bdi> <button type="button" class="dismiss" title="hide on this page">×</button></p>"#,
        kind = esc(&a.kind),
        id = esc(&a.id),
        at = time(Some(a.at)),
        text = esc(&a.text),
    )
}

/// The desk page: navigation, the alerts banner, the today panel, the list.
pub fn page(frame: &Frame, view: View, whose: Whose, items: &[Entry], today_html: &str) -> String {
    let (view_name, order_name, heading) = match view {
        View::Queue(crate::Order::Newest) => ("queue", "newest", "Flagged posts, newest first"),
        View::Queue(crate::Order::Probability) => {
            ("queue", "probability", "Flagged posts, most probable first")
        }
        View::Queue(crate::Order::Due) => (
            "queue",
            "due",
            "Flagged posts, the least time left on the first-response clock first",
        ),
        View::Waiting => (
            "waiting",
            "due",
            "Waiting for a reply: decided as needing one, none sent yet, the least time left first",
        ),
        View::Uncertain => (
            "uncertain",
            "closest",
            "Uncertain: posts near the threshold, flagged or not (misses are found here)",
        ),
    };
    let current = |v: &str, o: Option<&str>| {
        if v == view_name && o.is_none_or(|o| o == order_name) {
            r#" aria-current="page""#
        } else {
            ""
        }
    };
    let mut h = head(
        &format!("flagship desk — {}", frame.mission),
        Some(frame.csrf),
    );
    let _ = write!(
        h,
        r#"<body data-view="{view_name}" data-order="{order_name}" data-whose="{whose}" data-user="{user}" data-role="{role}" data-team="{team}" data-now="{now}" class="role-{role}"><header class="top"><h1>flagship desk · <bdi>{mission}</bdi></h1><nav>
<a href="/?view=queue&amp;order=newest&amp;whose={whose}"{q}>Queue</a>
<a href="/?view=queue&amp;order=probability&amp;whose={whose}"{qp}>by probability</a>
<a href="/?view=queue&amp;order=due&amp;whose={whose}"{qd}>by time left</a>
<a href="/?view=waiting&amp;whose={whose}"{w}>Waiting for a reply</a>
<a href="/?view=uncertain"{u}>Uncertain</a>
<a href="/summary">Daily summary</a>
<a href="/report">Evaluation report</a>
<a href="/monitor">Monitor</a>
<a href="/answers">Saved answers</a>
<a href="/export?format=labels">Export labels</a>
</nav><span class="who">signed in as <bdi>{user_shown}</bdi> ({role})</span>"#,
        mission = esc(frame.mission),
        q = current("queue", Some("newest")),
        qp = current("queue", Some("probability")),
        qd = current("queue", Some("due")),
        w = current("waiting", None),
        u = current("uncertain", None),
        whose = whose.as_str(),
        user = esc(frame.user),
        user_shown = esc(frame.user),
        role = frame.role,
        team = esc(&frame.team.join(" ")),
        now = frame.clock.now.timestamp_millis(),
    );
    if frame.logout {
        let _ = write!(
            h,
            r#"<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="{}"><button>log out</button></form>"#,
            esc(frame.csrf)
        );
    }
    h.push_str(r#"</header><div id="alerts" role="alert">"#);
    for a in frame.alerts {
        h.push_str(&alert_line(a));
    }
    let filter = |w: Whose, label: &str| {
        let view = match view {
            View::Waiting => "waiting",
            _ => "queue",
        };
        format!(
            r#"<a href="/?view={view}&amp;order={order_name}&amp;whose={}"{}>{label}</a>"#,
            w.as_str(),
            if w == whose {
                r#" aria-current="page""#
            } else {
                ""
            }
        )
    };
    let keys = if frame.role >= Role::Agent {
        let give = if frame.role >= Role::Lead {
            " · <kbd>a</kbd> give it to a teammate"
        } else {
            ""
        };
        format!(
            "<kbd>j</kbd>/<kbd>k</kbd> move · <kbd>r</kbd> needs reply · <kbd>n</kbd> no reply needed · <kbd>d</kbd> done · <kbd>u</kbd> undo (a group: the whole group) · <kbd>x</kbd> a group's posts · <kbd>c</kbd> copy the answer · <kbd>s</kbd> reply with it · <kbd>t</kbd> take it (again: release){give} · "
        )
    } else {
        "<kbd>j</kbd>/<kbd>k</kbd> move · <kbd>x</kbd> a group's posts · you read (viewer): decisions, replies and assignments are the team's · ".to_owned()
    };
    let _ = write!(
        h,
        r#"</div><main><section id="today" aria-live="polite">{today_html}</section>
<section class="list"><h2>{heading}</h2>
<p class="whose">{all} · {mine} · {unassigned}</p>
<p class="keys">{keys}<span id="live">connecting…</span></p>
<div id="posts">"#,
        all = filter(Whose::All, "all"),
        mine = filter(Whose::Mine, "mine"),
        unassigned = filter(Whose::Unassigned, "unassigned"),
    );
    let cx = Cx {
        csrf: frame.csrf,
        clock: frame.clock,
    };
    for e in items {
        h.push_str(&entry(e, &cx));
    }
    if items.is_empty() {
        h.push_str(r#"<p class="empty">Nothing waiting. New flagged posts appear here as they arrive.</p>"#);
    }
    h.push_str("</div></section></main></body></html>\n");
    h
}

/// The daily summary page: the day's figures, who answered, the platforms, the biggest
/// question groups with their answers, the alerts (a Markdown copy at `/summary.md`).
pub fn summary_page(frame: &Frame, s: &crate::summary::Summary) -> String {
    let opt = crate::summary::opt;
    let f = &s.responses.all;
    let mut h = head(
        &format!("flagship desk — {} — {}", frame.mission, s.day),
        Some(frame.csrf),
    );
    let prev = s.day.pred_opt().unwrap_or(s.day);
    let next = s.day.succ_opt().unwrap_or(s.day);
    let _ = write!(
        h,
        r#"<body data-view="summary" class="summary"><header class="top"><h1>flagship desk · <bdi>{mission}</bdi></h1><nav><a href="/">Queue</a> <a href="/summary" aria-current="page">Daily summary</a> <a href="/summary?day={prev}">← {prev}</a> <a href="/summary?day={next}">{next} →</a> <a href="/summary.md?day={day}">Markdown</a></nav><span class="who">signed in as <bdi>{user}</bdi></span></header><main class="summary"><h2>{day} <small>({tz})</small></h2><dl class="figures">
<dt>posts seen</dt><dd id="s-seen">{seen}</dd>
<dt>flagged</dt><dd id="s-flagged">{flagged}</dd>
<dt>needed a reply</dt><dd id="s-needing">{needing}</dd>
<dt>answered</dt><dd id="s-answered">{answered}</dd>
<dt>first response p50 / p90</dt><dd id="s-response">{p50} / {p90}</dd>
<dt>overdue (no answer past {target})</dt><dd id="s-overdue">{overdue}</dd>
<dt>answered late</dt><dd id="s-late">{late}</dd>
</dl><h3>Who answered</h3><table><thead><tr><th>person</th><th>answered</th><th>p50</th><th>p90</th><th>late</th></tr></thead><tbody>"#,
        mission = esc(frame.mission),
        user = esc(frame.user),
        day = s.day,
        tz = esc(s.timezone.name()),
        seen = s.seen,
        flagged = s.flagged,
        needing = f.needing,
        answered = f.answered,
        p50 = opt(f.p50_s),
        p90 = opt(f.p90_s),
        target = human(s.target.num_seconds() as f64),
        overdue = f.overdue,
        late = f.late,
    );
    // The cells are numbers and durations (no text to escape).
    let row = |h: &mut String, name: String, cells: &[String]| {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{}</td></tr>",
            cells.join("</td><td>")
        );
    };
    for (who, p) in &s.responses.by_person {
        row(
            &mut h,
            format!("<bdi>{}</bdi>", esc(who)),
            &crate::summary::person_cells(p),
        );
    }
    h.push_str("</tbody></table><h3>By platform</h3><table><thead><tr><th>platform</th><th>needed</th><th>answered</th><th>p50</th><th>p90</th><th>overdue</th></tr></thead><tbody>");
    for (platform, p) in &s.responses.by_platform {
        row(&mut h, esc(platform), &crate::summary::platform_cells(p));
    }
    h.push_str("</tbody></table><h3>The biggest question groups</h3><ol class=\"groups\">");
    if s.groups.is_empty() {
        h.push_str("<li>No question group of two or more posts.</li>");
    }
    for g in &s.groups {
        let platform = g.platform.parse().unwrap_or_default();
        let _ = write!(
            h,
            r#"<li><b>{posts} posts from {authors} people</b>: <bdi dir="auto">{text}</bdi><br>answer: {answer}</li>"#,
            posts = g.posts,
            authors = g.authors,
            text = esc(&flagship_platforms::display_text(platform, &g.text)),
            answer = g
                .answer
                .as_deref()
                .map(|a| format!(r#"<bdi dir="auto">{}</bdi>"#, esc(a)))
                .unwrap_or_else(|| "(none sent from the desk)".into()),
        );
    }
    h.push_str("</ol><h3>Alerts</h3><ul class=\"alerts\">");
    if s.alerts.is_empty() {
        h.push_str("<li>None.</li>");
    }
    for a in &s.alerts {
        let _ = write!(
            h,
            "<li>{} <bdi>{}</bdi></li>",
            time(Some(a.at)),
            esc(&a.text)
        );
    }
    h.push_str("</ul></main></body></html>\n");
    h
}

/// The login page.
pub fn login(mission: &str, csrf: &str, message: Option<&str>) -> String {
    let mut h = head(&format!("flagship desk — {mission} — log in"), None);
    let _ = write!(
        h,
        r#"<body class="login"><main><h1>flagship desk · <bdi>{}</bdi></h1>{}
<form method="post" action="/login"><input type="hidden" name="csrf" value="{}">
<label>name <input name="user" autocomplete="username" required></label>
<label>password or token <input name="password" type="password" autocomplete="current-password" required></label>
<button>log in</button></form></main></body></html>
"#,
        esc(mission),
        message
            .map(|m| format!(r#"<p class="error" role="alert">{}</p>"#, esc(m)))
            .unwrap_or_default(),
        esc(csrf)
    );
    h
}

/// A small page for a message (missing report, error).
pub fn message(title: &str, text: &str) -> String {
    let mut h = head(title, None);
    let _ = writeln!(
        h,
        r#"<body><main><h1>{}</h1><p>{}</p><p><a href="/">back to the desk</a></p></main></body></html>"#,
        esc(title),
        esc(text)
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(text: &str, url: &str) -> Item {
        Item {
            platform: "x".into(),
            id: "1\"><script>".into(),
            url: Some(url.into()),
            author: Some("<b>eve</b>".into()),
            created_at: None,
            text: text.into(),
            client: None,
            words: 3,
            terms: vec!["<img src=x>".into()],
            arrived_at: Utc::now(),
            probability: 0.9,
            threshold: 0.5,
            need_support: true,
            model_id: "m".into(),
            decision: None,
            why: vec![flagship_core::live::Why {
                word: "<i>late</i>".into(),
                weight: 0.2,
            }],
            group: None,
            refs: Default::default(),
            replied: None,
            held: Some("<b>bo</b>".into()),
            hurried: false,
        }
    }

    fn cx() -> Cx<'static> {
        Cx {
            csrf: "tok",
            clock: Clock {
                now: Utc::now(),
                target: chrono::Duration::hours(1),
            },
        }
    }

    #[test]
    fn hostile_posts_render_as_text() {
        let h = post(
            &item(
                "<script>alert(1)</script> \u{202e}gnp.exe",
                "javascript:alert(1)",
            ),
            &cx(),
            None,
        );
        assert!(!h.contains("<script>"), "{h}");
        assert!(!h.contains("<b>"), "{h}");
        assert!(!h.contains("<img"), "{h}");
        assert!(!h.contains("javascript:"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("no link"));
        assert!(h.contains("why: <bdi>&lt;i&gt;late&lt;/i&gt;</bdi>"), "{h}");
        assert!(
            h.contains(r#"held by <bdi>&lt;b&gt;bo&lt;/b&gt;</bdi>"#),
            "{h}"
        );
        // The RTL override stays inside its own isolate.
        assert!(h.contains("<bdi>&lt;script&gt;alert(1)&lt;/script&gt; \u{202e}gnp.exe</bdi>"));
        let ok = post(
            &item("fine", "https://bsky.app/profile/a/post/b"),
            &cx(),
            None,
        );
        assert!(ok.contains(r#"href="https://bsky.app/profile/a/post/b""#));
        assert!(ok.contains(r#"rel="noopener noreferrer""#));
        assert!(!ok.contains(r#"class="hurried""#), "{ok}");
    }

    /// A post read in a hurry says so in its header, with why in its title.
    #[test]
    fn a_hurried_post_is_marked() {
        let mut it = item("fine", "https://bsky.app/profile/a/post/b");
        it.hurried = true;
        let h = post(&it, &cx(), None);
        let header = &h[h.find("<header>").unwrap()..h.find("</header>").unwrap()];
        assert!(
            header.contains(r#"<span class="hurried" title="read in a hurry"#),
            "{h}"
        );
        assert!(header.contains(">hurried</span>"), "{h}");
    }

    #[test]
    fn no_inline_script_or_style_anywhere() {
        let f = Frame {
            mission: "<jwst>",
            user: "ana",
            csrf: "t",
            logout: true,
            role: Role::Agent,
            team: &[],
            clock: cx().clock,
            alerts: &[],
        };
        let h = page(
            &f,
            View::Uncertain,
            Whose::All,
            &[Entry::Post(item("x", "https://a.b/c"), None)],
            "",
        );
        assert!(!h.contains("style="));
        assert!(!h.contains("<style"));
        assert_eq!(h.matches("<script").count(), 1);
        assert!(h.contains(r#"<script src="/assets/desk.js" defer></script>"#));
        assert!(h.contains("&lt;jwst&gt;"));
        assert!(!login("m", "t", Some("<x>")).contains("<x>"));
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn the_clock_says_time_left_then_overdue() {
        let now = Utc::now();
        let clock = Clock {
            now,
            target: chrono::Duration::hours(1),
        };
        let (t, late) = clock_text(now - chrono::Duration::minutes(12), clock);
        assert_eq!(
            (t.as_str(), late),
            ("waiting 12 min · due in 48 min", false)
        );
        let (t, late) = clock_text(now - chrono::Duration::minutes(75), clock);
        assert_eq!(
            (t.as_str(), late),
            ("waiting 1 h 15 min · overdue 15 min", true)
        );
    }
}
