//! `report.html` and `monitor.html`: pages for the support team, opening with the verdict and
//! its key figures, then the details as real HTML tables (metrics, minutes against the naive
//! baseline, the confusion matrix, per-threshold rows, drift statistics) and the plots as inline
//! SVG ([`crate::svg`]): ROC, precision–recall, confusion matrix, probability histogram by
//! class, threshold against F2 and against minutes wasted and missed, drift bars.
//!
//! The pages fetch nothing (no fonts, no scripts) and run no script. They work under a strict
//! `Content-Security-Policy: default-src 'self'`: no `style="…"` attribute anywhere (SVG colours
//! are presentation attributes, table shades are classes), and the CSS is both linked
//! (`report.css`, which a server answers with [`REPORT_CSS`]) and inline in a `<style>` element
//! for a page opened from disk; under the policy the inline copy is simply ignored.

use std::path::Path;

use flagship_core::Config;
use flagship_core::config::{Business, ModelKind};

use crate::business::{MeanSd, Times, verdict_word};
use crate::classification::Confusion;
use crate::evaluation::Evaluation;
use crate::monitor::Drift;
#[cfg(test)]
use crate::monitor::DriftRule;
use crate::ranking;
use crate::svg::{Anchor, BLACK, BLUE, Canvas, Margins, Plot, RED, Rgb, WHITE};

/// The pages' style sheet: served as [`REPORT_CSS_HREF`] beside the pages, and inlined for
/// pages opened from disk. Colours are chosen for a contrast of at least 4.5:1.
pub const REPORT_CSS: &str = r#"body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; max-width: 1040px; margin: 2em auto; padding: 0 1em; color: #1a1a1a; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0 0 .4em; }
h2 { font-size: 1.25em; margin: 1.6em 0 .4em; border-bottom: 1px solid #d0d0d0; }
.verdict { border-left: 6px solid #4a4a4a; padding: .6em 1em; margin: 1em 0; }
.verdict p { margin: .2em 0; }
.verdict .headline { font-size: 1.2em; }
.verdict.good { border-color: #1b7f3b; background: #e9f6ed; }
.verdict.bad { border-color: #b35900; background: #fff4e5; }
.key-figures { display: flex; flex-wrap: wrap; gap: 12px; margin: 1em 0; padding: 0; }
.key-figures div { border: 1px solid #c8c8c8; border-radius: 6px; padding: .5em .9em; min-width: 12em; }
.key-figures dt { font-size: .9em; color: #4a4a4a; }
.key-figures dd { margin: 0; font-size: 1.5em; font-variant-numeric: tabular-nums; }
.key-figures .vs { display: block; font-size: .6em; color: #4a4a4a; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
caption { text-align: left; font-weight: bold; padding: .3em 0; }
th, td { border: 1px solid #c8c8c8; padding: .3em .6em; text-align: left; vertical-align: top; }
thead th { background: #eef0f3; }
tbody th { font-weight: normal; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.no { color: #a4000f; font-weight: bold; }
tr.flagged { background: #fdecea; }
.confusion td { min-width: 9em; }
.confusion .what { display: block; font-size: .85em; }
.shade-0 { background: #f2f6fc; color: #1a1a1a; }
.shade-1 { background: #c9dbf2; color: #1a1a1a; }
.shade-2 { background: #93b6e3; color: #1a1a1a; }
.shade-3 { background: #2f66b0; color: #ffffff; }
.shade-4 { background: #0b3d91; color: #ffffff; }
.note { color: #4a4a4a; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure.plot { margin: 0; border: 1px solid #d0d0d0; }
figure.plot svg { display: block; max-width: 100%; height: auto; }
"#;

/// Where the pages link [`REPORT_CSS`] from: `report.css`, relative to the page.
pub const REPORT_CSS_HREF: &str = "report.css";

/// Confusion-matrix shades, light to dark, as (background, text): the `.shade-N` rules of
/// [`REPORT_CSS`] and the cells of the confusion plot.
const SHADES: [(&str, &str); 5] = [
    ("#f2f6fc", "#1a1a1a"),
    ("#c9dbf2", "#1a1a1a"),
    ("#93b6e3", "#1a1a1a"),
    ("#2f66b0", "#ffffff"),
    ("#0b3d91", "#ffffff"),
];

/// What a page is about, named for people (never file paths): its title and headline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportContext {
    /// The mission profile's name (`mission.name` in `flagship.toml`), e.g. `jwst`.
    pub mission: String,
    /// The model, as a noun phrase without article, e.g. `fine-tuned MiniLM transformer`.
    pub model: String,
    /// The data, as a noun phrase with its article, e.g. `the test set`.
    pub data: String,
}

impl Default for ReportContext {
    fn default() -> Self {
        ReportContext {
            mission: "unnamed".into(),
            model: "need-support classifier".into(),
            data: "the given predictions".into(),
        }
    }
}

impl ReportContext {
    /// The mission and model `config` names, and the data named after the predictions file
    /// `data` (its name only, never its folders).
    pub fn new(config: &Config, data: &Path) -> ReportContext {
        ReportContext {
            mission: config.mission.name.clone(),
            model: ReportContext::model_of(config),
            data: ReportContext::data_of(data),
        }
    }

    /// The model `config` trains, in words: its kind and, if set, its base checkpoint's name.
    pub fn model_of(config: &Config) -> String {
        match config.model.kind {
            ModelKind::Linear => "TF-IDF + logistic-regression baseline".into(),
            ModelKind::Transformer => match config
                .model
                .base
                .as_deref()
                .and_then(|b| Path::new(b).file_name())
            {
                Some(name) => format!("fine-tuned transformer {}", name.to_string_lossy()),
                None => "fine-tuned MiniLM transformer".into(),
            },
        }
    }

    /// The data a predictions file holds, from its name: `test-predictions.parquet` → "the
    /// test set", `batch-0002-predictions.parquet` → "monitoring batch 0002".
    pub fn data_of(path: &Path) -> String {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.strip_suffix("-predictions").unwrap_or(&stem);
        if stem.is_empty() {
            return ReportContext::default().data;
        }
        match stem.strip_prefix("batch-") {
            Some(n) => format!("monitoring batch {n}"),
            None => format!("the {stem} set"),
        }
    }

    /// The title of a page: `what` (e.g. "evaluation") of the model on the data, for the
    /// mission; `rows` says how many posts.
    pub fn title(&self, what: &str, rows: &str) -> String {
        format!(
            "Mission {}: {what} of the {} on {} ({rows})",
            self.mission, self.model, self.data
        )
    }
}

const W: u32 = 480;
const H: u32 = 340;

/// Dark grey for reference lines and bars: 5:1 against white, unlike a light grey.
const GREY: Rgb = Rgb(110, 110, 110);

/// A named, coloured line.
type Series<'a> = (&'a str, Rgb, Vec<(f64, f64)>);

/// The room a plot's tick labels and axis titles take below and beside it.
const AXES: Margins = Margins {
    below: 36.0,
    beside: 48.0,
};

/// `s` safe as HTML text and as a quoted attribute value.
fn escape(s: &str) -> String {
    crate::svg::escape(s)
}

/// `#rrggbb` as a colour (black if malformed; the palette here is well-formed).
fn hex(s: &str) -> Rgb {
    let c = |i: usize| {
        s.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    Rgb(c(1), c(3), c(5))
}

/// WCAG relative luminance of an sRGB colour.
fn luminance(c: Rgb) -> f64 {
    let lin = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
}

/// WCAG contrast ratio of two colours (1 to 21).
fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// The text colour that reads best on `bg`: near-black or white, whichever contrasts more.
fn text_on(bg: Rgb) -> Rgb {
    let dark = Rgb(0x1a, 0x1a, 0x1a);
    if contrast(bg, dark) >= contrast(bg, WHITE) {
        dark
    } else {
        WHITE
    }
}

/// The shade (index into [`SHADES`]) of a count against the largest count.
fn shade(n: u64, max: u64) -> usize {
    ((4.0 * n as f64 / max.max(1) as f64).round() as usize).min(SHADES.len() - 1)
}

/// The columns of a table of cut-offs (per threshold, operating points), numbers right-aligned.
const CUT_COLUMNS: [(&str, bool); 7] = [
    ("threshold", true),
    ("flagged", true),
    ("precision", true),
    ("recall", true),
    ("F2", true),
    ("minutes wasted", true),
    ("minutes missed", true),
];

/// A vertical line at a threshold: its label and colour (the chosen point black, others grey).
type Mark = (String, f64, Rgb);

fn line_chart(title: &str, x_desc: &str, y_desc: &str, y_max: f64, series: &[Series]) -> String {
    marked_chart(title, x_desc, y_desc, y_max, series, &[])
}

/// A line chart with vertical marks (the operating points on the threshold plots).
fn marked_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    y_max: f64,
    series: &[Series],
    marks: &[Mark],
) -> String {
    let top = y_max.max(1e-9);
    let mut p = Plot::new(Canvas::new(W, H), title, (0.0, 1.0), (0.0, top), AXES);
    p.axes(x_desc, Some(y_desc), true);
    for (name, color, pts) in series {
        p.series(name, pts, *color, 2.0);
    }
    for (label, x, color) in marks {
        let x = x.clamp(0.0, 1.0);
        p.dashed(label, (x, 0.0), (x, top), *color, 2.0);
    }
    p.finish(series.len() + marks.len() > 1)
}

/// The four counts, each cell filled with its shade and labelled in that shade's text colour.
fn confusion_chart(c: Confusion) -> String {
    let mut canvas = Canvas::new(W, H);
    canvas.text(
        (f64::from(W) / 2.0, 22.0),
        "Confusion matrix",
        18,
        BLACK,
        Anchor::Middle,
    );
    // The cells' area: below the title, 10 px from the other edges.
    let (x0, y0, x1, y1) = (10.0, 44.0, f64::from(W) - 10.0, f64::from(H) - 10.0);
    let (cw, ch) = ((x1 - x0) / 2.0, (y1 - y0) / 2.0);
    let max = [c.tp, c.fn_, c.fp, c.tn].into_iter().max().unwrap_or(1);
    for (i, (label, n)) in [
        ("caught (TP)", c.tp),
        ("missed (FN)", c.fn_),
        ("flagged needlessly (FP)", c.fp),
        ("rightly left (TN)", c.tn),
    ]
    .into_iter()
    .enumerate()
    {
        let (left, top) = (x0 + cw * (i % 2) as f64, y0 + ch * (i / 2) as f64);
        let bg = hex(SHADES[shade(n, max)].0);
        canvas.rect((left, top), (left + cw, top + ch), bg, 1.0);
        // What the cell counts, and the count below it, in the colour that reads on its shade.
        let (mid, fg) = (left + cw / 2.0, text_on(bg));
        canvas.text((mid, top + ch / 2.0 - 12.0), label, 15, fg, Anchor::Middle);
        canvas.text(
            (mid, top + ch / 2.0 + 12.0),
            &n.to_string(),
            22,
            fg,
            Anchor::Middle,
        );
        canvas.frame((left, top), (left + cw, top + ch), BLACK);
    }
    canvas.finish()
}

fn histogram(truth: &[bool], probs: &[f64]) -> String {
    const BINS: usize = 20;
    let mut counts = [[0u32; BINS]; 2];
    for (&y, &p) in truth.iter().zip(probs) {
        let b = ((p * BINS as f64) as usize).min(BINS - 1);
        counts[y as usize][b] += 1;
    }
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    let mut p = Plot::new(
        Canvas::new(W, H),
        "Predicted probability by class",
        (0.0, 1.0),
        (0.0, f64::from(top + top / 10 + 1)),
        AXES,
    );
    p.axes("need_support probability", Some("tweets"), true);
    let width = 1.0 / BINS as f64;
    for (class, color, name) in [(1usize, RED, "needs support"), (0, BLUE, "does not")] {
        let offset = if class == 1 { 0.0 } else { width / 2.0 };
        for (i, &n) in counts[class].iter().enumerate() {
            let x0 = i as f64 * width + offset;
            p.bar((x0, 0.0), (x0 + width / 2.0, f64::from(n)), color, 0.6, 0.0);
        }
        p.key_box(name, color);
    }
    p.finish(true)
}

/// One table cell (its text is escaped when the table is written).
enum Cell {
    /// Text, left-aligned.
    Text(String),
    /// A number, right-aligned.
    Num(String),
    /// A yes/no answer; "no" stands out.
    YesNo(bool),
    /// A confusion-matrix count: what it is, the count, and its shade.
    Count(&'static str, u64, usize),
}

/// One body row: its header (first column) and cells; `flagged` rows are highlighted.
struct Row {
    head: String,
    cells: Vec<Cell>,
    flagged: bool,
}

impl Row {
    fn new(head: impl Into<String>, cells: Vec<Cell>) -> Row {
        Row {
            head: head.into(),
            cells,
            flagged: false,
        }
    }
}

/// A `<table>` with a caption, a header row (`columns`: label, right-aligned) whose headers
/// are `scope="col"`, and body rows whose first cell is a `scope="row"` header. Every text is
/// escaped here.
fn table(class: &str, caption: &str, columns: &[(&str, bool)], rows: &[Row]) -> String {
    let num = |n: bool| if n { " class=\"num\"" } else { "" };
    let mut s = format!(
        "<table class=\"{}\">\n<caption>{}</caption>\n<thead><tr>",
        escape(class),
        escape(caption)
    );
    for (label, n) in columns {
        s.push_str(&format!(
            "<th scope=\"col\"{}>{}</th>",
            num(*n),
            escape(label)
        ));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        s.push_str(if r.flagged {
            "<tr class=\"flagged\">"
        } else {
            "<tr>"
        });
        s.push_str(&format!("<th scope=\"row\">{}</th>", escape(&r.head)));
        for c in &r.cells {
            s.push_str(&match c {
                Cell::Text(t) => format!("<td>{}</td>", escape(t)),
                Cell::Num(t) => format!("<td class=\"num\">{}</td>", escape(t)),
                Cell::YesNo(true) => "<td>yes</td>".into(),
                Cell::YesNo(false) => "<td class=\"no\">no</td>".into(),
                Cell::Count(what, n, shade) => format!(
                    "<td class=\"num shade-{shade}\"><span class=\"what\">{}</span>{n}</td>",
                    escape(what)
                ),
            });
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n");
    s
}

/// The key figures as a `<dl>`: (name, value, comparison) each.
fn key_figures(items: &[(&str, String, String)]) -> String {
    let mut s = String::from("<dl class=\"key-figures\">\n");
    for (name, value, vs) in items {
        s.push_str(&format!(
            "<div><dt>{}</dt><dd>{}<span class=\"vs\">{}</span></dd></div>\n",
            escape(name),
            escape(value),
            escape(vs)
        ));
    }
    s.push_str("</dl>\n");
    s
}

/// The figures, each `<figure class="plot" data-plot="id">` around its SVG.
fn figures(plots: &[(&str, String)]) -> String {
    let mut s = String::from("<div class=\"plots\">\n");
    for (id, body) in plots {
        s.push_str(&format!(
            "<figure class=\"plot\" data-plot=\"{}\">{body}</figure>\n",
            escape(id)
        ));
    }
    s.push_str("</div>\n");
    s
}

/// The page shell: the title, the verdict section first (`verdict`: HTML, already escaped),
/// then the details (`body`: HTML). The CSS is linked for a server and inline for a file.
fn page(title: &str, verdict: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{REPORT_CSS_HREF}">
<style>
{REPORT_CSS}</style>
</head>
<body>
<main>
<h1>{title}</h1>
{verdict}{body}</main>
</body></html>
"#,
        title = escape(title),
    )
}

/// Thresholds of the plots' sweep: 0, 0.01, …, 1; the table shows every fifth.
const SWEEP_STEPS: usize = 100;
const TABLE_EVERY: usize = 5;

/// The evaluation page: `ctx` names the mission, model and data; `truth`, `probs`, `words`
/// are the rows `e` was computed from. The verdict first, then why, the details, the
/// operating points, the plots and the per-threshold table.
pub fn render(
    ctx: &ReportContext,
    e: &Evaluation,
    truth: &[bool],
    probs: &[f64],
    words: &[u32],
    b: &Business,
) -> String {
    let title = ctx.title("evaluation", &format!("{} labelled posts", e.rows));
    let sweep = Sweep::new(truth, probs, words, b);
    let mut body = why_section(e, b);
    body.push_str(&details_section(e));
    body.push_str(&operating_section(e));
    body.push_str("<h2>Plots</h2>\n");
    body.push_str(&figures(&plots(e, truth, probs, &sweep)));
    body.push_str(&per_threshold_section(&sweep));
    page(&title, &verdict_section(e), &body)
}

/// The verdict and its key figures: the same sentence as report.md, shaded good or bad.
fn verdict_section(e: &Evaluation) -> String {
    let sentence = e.verdict_sentence();
    format!(
        "<section id=\"verdict\" class=\"verdict {}\">\n<p class=\"headline\"><strong>{}</strong> {}</p>\n{}</section>\n",
        if e.verdict.success { "good" } else { "bad" },
        escape(&sentence.headline),
        escape(&sentence.figures),
        key_figures(&verdict_figures(e)),
    )
}

/// F2, minutes wasted and missed against the naive baseline, and the posts: (name, value,
/// comparison) each.
fn verdict_figures(e: &Evaluation) -> [(&'static str, String, String); 4] {
    let (m, n, t, v) = (&e.model, &e.naive, &e.times, &e.verdict);
    [
        (
            "F2 (need_support)",
            format!("{:.3}", m.binary.f2),
            format!("naive {:.3} ± {:.3}; target above 0.80", n.f2.mean, n.f2.sd),
        ),
        (
            "Minutes wasted",
            format!("{:.1}", t.wasted_minutes),
            format!(
                "naive {:.1}; {:.0} % saved",
                n.wasted_minutes.mean, v.wasted_reduction_percent
            ),
        ),
        (
            "Minutes missed",
            format!("{:.1}", t.missed_minutes),
            format!(
                "naive {:.1}; {:.0} % saved",
                n.missed_minutes.mean, v.missed_reduction_percent
            ),
        ),
        (
            "Posts",
            format!("{}", e.rows),
            format!(
                "{} need support ({:.1} %)",
                e.need_support,
                100.0 * e.prevalence
            ),
        ),
    ]
}

/// "Why": the seed's rule line by line, the minutes against the naive baseline, and the
/// reading and typing speeds they were counted with.
fn why_section(e: &Evaluation, b: &Business) -> String {
    let mut s = String::from("<h2>Why</h2>\n");
    s.push_str(&rules_table(e));
    s.push_str(&minutes_table(e));
    s.push_str(&format!(
        "<p class=\"note\">Reading {} wpm, typing {} wpm, reply fraction {}.</p>\n",
        escape(&b.reading_wpm.to_string()),
        escape(&b.typing_wpm.to_string()),
        escape(&b.reply_fraction.to_string()),
    ));
    s
}

/// Each line of the seed's success rule, met or not.
fn rules_table(e: &Evaluation) -> String {
    let v = &e.verdict;
    table(
        "rules",
        "The seed's success rule: every line must be met",
        &[("rule", false), ("met", false)],
        &[
            Row::new("F2 > 0.80", vec![Cell::YesNo(v.f2_above_0_80)]),
            Row::new("F2 above naive", vec![Cell::YesNo(v.f2_above_naive)]),
            Row::new(
                "time wasted below naive",
                vec![Cell::YesNo(v.wasted_below_naive)],
            ),
            Row::new(
                "time missed below naive",
                vec![Cell::YesNo(v.missed_below_naive)],
            ),
        ],
    )
}

/// The support team's minutes, the model's against the naive baseline's mean ± sd.
fn minutes_table(e: &Evaluation) -> String {
    let (n, t) = (&e.naive, &e.times);
    let row = |head: &str, model: f64, naive: &MeanSd| {
        Row::new(
            head,
            vec![
                Cell::Num(format!("{model:.1}")),
                Cell::Num(format!("{:.1} ± {:.1}", naive.mean, naive.sd)),
            ],
        )
    };
    table(
        "minutes",
        &format!(
            "Support-team minutes: the model against the naive baseline (mean ± sd of {} seeded runs)",
            n.repeats
        ),
        &[("minutes", false), ("model", true), ("naive", true)],
        &[
            row(
                "wasted (reading + reply, the seed's code; headline)",
                t.wasted_minutes,
                &n.wasted_minutes,
            ),
            row(
                "wasted (reading only, the seed's scope)",
                t.wasted_reading_minutes,
                &n.wasted_reading_minutes,
            ),
            row(
                "missed (reading + reply)",
                t.missed_minutes,
                &n.missed_minutes,
            ),
        ],
    )
}

/// "Details": the confusion matrix, the scores at the model's threshold, and the accuracy
/// and ranking figures.
fn details_section(e: &Evaluation) -> String {
    let mut s = String::from("<h2>Details</h2>\n");
    s.push_str(&confusion_table(e.model.confusion));
    s.push_str(&scores_table(e));
    s.push_str(&overall_table(e));
    s
}

/// The four counts, each cell shaded by its size.
fn confusion_table(c: Confusion) -> String {
    let max = [c.tp, c.fn_, c.fp, c.tn].into_iter().max().unwrap_or(1);
    let count = |what, n| Cell::Count(what, n, shade(n, max));
    table(
        "confusion",
        "Confusion matrix at the model's threshold",
        &[
            ("actual \\ model", false),
            ("flagged", true),
            ("not flagged", true),
        ],
        &[
            Row::new(
                "needs support",
                vec![count("caught (TP)", c.tp), count("missed (FN)", c.fn_)],
            ),
            Row::new(
                "does not",
                vec![
                    count("flagged needlessly (FP)", c.fp),
                    count("rightly left (TN)", c.tn),
                ],
            ),
        ],
    )
}

/// Precision, recall and the F scores, binary and weighted.
fn scores_table(e: &Evaluation) -> String {
    let m = &e.model;
    let rows: Vec<Row> = [
        ("precision", m.binary.precision, m.weighted.precision),
        ("recall", m.binary.recall, m.weighted.recall),
        ("F1", m.binary.f1, m.weighted.f1),
        ("F0.5", m.binary.f05, m.weighted.f05),
        ("F2", m.binary.f2, m.weighted.f2),
    ]
    .into_iter()
    .map(|(name, bin, w)| {
        Row::new(
            name,
            vec![Cell::Num(format!("{bin:.4}")), Cell::Num(format!("{w:.4}"))],
        )
    })
    .collect();
    table(
        "metrics",
        "Scores at the model's threshold",
        &[
            ("metric", false),
            ("binary (need_support)", true),
            ("weighted", true),
        ],
        &rows,
    )
}

/// Accuracy, balanced accuracy and the ranking figures of the probabilities.
fn overall_table(e: &Evaluation) -> String {
    let m = &e.model;
    let rows: Vec<Row> = [
        ("accuracy", m.accuracy),
        ("balanced accuracy", m.balanced_accuracy),
        ("ROC-AUC", e.ranking.roc_auc),
        ("average precision", e.ranking.average_precision),
        ("Brier score (lower is better)", e.ranking.brier),
    ]
    .into_iter()
    .map(|(name, x)| Row::new(name, vec![Cell::Num(format!("{x:.4}"))]))
    .collect();
    table(
        "overall",
        "Accuracy and ranking of the probabilities",
        &[("metric", false), ("value", true)],
        &rows,
    )
}

/// "Operating points": each rule's threshold (from the model's card) on this set; empty
/// when the card has none.
fn operating_section(e: &Evaluation) -> String {
    if e.operating.is_empty() {
        return String::new();
    }
    let rows: Vec<Row> = e
        .operating
        .iter()
        .map(|r| {
            Row::new(
                r.label(),
                vec![
                    Cell::Num(format!("{:.3}", r.threshold)),
                    Cell::Num(format!("{:.0} %", 100.0 * r.flagged)),
                    Cell::Num(format!("{:.3}", r.precision)),
                    Cell::Num(format!("{:.3}", r.recall)),
                    Cell::Num(format!("{:.3}", r.f2)),
                    Cell::Num(format!("{:.1}", r.wasted_minutes)),
                    Cell::Num(format!("{:.1}", r.missed_minutes)),
                    Cell::Text(verdict_word(r.success).into()),
                ],
            )
        })
        .collect();
    let mut s = String::from("<h2>Operating points</h2>\n");
    s.push_str(&table(
        "operating",
        "Thresholds chosen on validation by each rule (model.operating_point), on this set",
        &[&[("rule", false)][..], &CUT_COLUMNS, &[("verdict", false)]].concat(),
        &rows,
    ));
    s
}

/// One sweep of thresholds (0, 0.01, …, 1) over the rows: the confusion at each and the
/// minutes it costs. It feeds the threshold plots and the per-threshold table.
struct Sweep {
    points: Vec<ranking::CurvePoint>,
    times: Vec<Times>,
}

impl Sweep {
    fn new(truth: &[bool], probs: &[f64], words: &[u32], b: &Business) -> Sweep {
        let thresholds: Vec<f64> = (0..=SWEEP_STEPS)
            .map(|i| i as f64 / SWEEP_STEPS as f64)
            .collect();
        let points = ranking::sweep(probs, truth, &thresholds);
        let times = points
            .iter()
            .map(|p| {
                let flagged: Vec<bool> = probs.iter().map(|&v| v >= p.threshold).collect();
                Times::new(truth, &flagged, words, b)
            })
            .collect();
        Sweep { points, times }
    }

    /// (threshold, F2) at each point.
    fn f2(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .map(|p| (p.threshold, p.confusion.f_beta(2.0)))
            .collect()
    }

    /// (threshold, minutes) at each point, the minutes `of` each point's times.
    fn minutes(&self, of: impl Fn(&Times) -> f64) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .zip(&self.times)
            .map(|(p, x)| (p.threshold, of(x)))
            .collect()
    }
}

/// The six plots, each with its `data-plot` id: ROC, precision–recall, confusion matrix,
/// probability histogram, and threshold against F2 and against minutes (operating points
/// marked).
fn plots(
    e: &Evaluation,
    truth: &[bool],
    probs: &[f64],
    sweep: &Sweep,
) -> Vec<(&'static str, String)> {
    let marks = operating_marks(e);
    let wasted = sweep.minutes(|x| x.wasted_minutes);
    let missed = sweep.minutes(|x| x.missed_minutes);
    let max_minutes = wasted
        .iter()
        .chain(&missed)
        .map(|p| p.1)
        .fold(1.0, f64::max);
    vec![
        (
            "roc",
            line_chart(
                &format!("ROC (AUC {:.3})", e.ranking.roc_auc),
                "false-positive rate",
                "true-positive rate",
                1.0,
                &[
                    ("model", RED, ranking::roc_points(probs, truth)),
                    ("chance", GREY, vec![(0.0, 0.0), (1.0, 1.0)]),
                ],
            ),
        ),
        (
            "pr",
            line_chart(
                &format!("Precision-recall (AP {:.3})", e.ranking.average_precision),
                "recall",
                "precision",
                1.0,
                &[("model", RED, ranking::pr_points(probs, truth))],
            ),
        ),
        ("confusion", confusion_chart(e.model.confusion)),
        ("histogram", histogram(truth, probs)),
        (
            "threshold-f2",
            marked_chart(
                "Threshold vs F2",
                "threshold",
                "F2",
                1.0,
                &[("F2", RED, sweep.f2())],
                &marks,
            ),
        ),
        (
            "threshold-minutes",
            marked_chart(
                "Threshold vs minutes wasted / missed",
                "threshold",
                "minutes",
                max_minutes * 1.05,
                &[("wasted", BLUE, wasted), ("missed", RED, missed)],
                &marks,
            ),
        ),
    ]
}

/// The operating points (from the model's card) as vertical marks, the chosen one black.
fn operating_marks(e: &Evaluation) -> Vec<Mark> {
    e.operating
        .iter()
        .map(|r| {
            (
                format!(
                    "{}{} ({:.2})",
                    r.rule.name(),
                    if r.chosen { ", chosen" } else { "" },
                    r.threshold
                ),
                r.threshold,
                if r.chosen { BLACK } else { GREY },
            )
        })
        .collect()
}

/// "Per threshold": every fifth point of the sweep, flagged counts, scores and minutes.
fn per_threshold_section(sweep: &Sweep) -> String {
    let rows: Vec<Row> = sweep
        .points
        .iter()
        .zip(&sweep.times)
        .step_by(TABLE_EVERY)
        .map(|(p, x)| {
            let k = &p.confusion;
            Row::new(
                format!("{:.2}", p.threshold),
                vec![
                    Cell::Num(format!("{}", k.tp + k.fp)),
                    Cell::Num(format!("{:.3}", k.precision())),
                    Cell::Num(format!("{:.3}", k.recall())),
                    Cell::Num(format!("{:.3}", k.f_beta(2.0))),
                    Cell::Num(format!("{:.1}", x.wasted_minutes)),
                    Cell::Num(format!("{:.1}", x.missed_minutes)),
                ],
            )
        })
        .collect();
    let mut s = String::from("<h2>Per threshold</h2>\n");
    s.push_str(&table(
        "thresholds",
        "Flagging at other thresholds (flag when the probability is at least the threshold)",
        &CUT_COLUMNS,
        &rows,
    ));
    s
}

/// Bars of each group's relative change of the probability mean (and CV), threshold marked.
fn drift_bars(d: &Drift) -> String {
    let rows: Vec<&crate::monitor::Change> = d
        .changes
        .iter()
        .filter(|c| c.relative.is_finite())
        .collect();
    let lim = rows
        .iter()
        .map(|c| c.relative.abs())
        .fold(d.threshold * 1.5, f64::max)
        .min(5.0);
    let n = rows.len().max(1);
    let height = (60 + 18 * n as u32).max(H);
    let mut p = Plot::new(
        Canvas::new(W + 200, height),
        "Drift: relative change vs reference",
        (-lim, lim),
        (0.0, n as f64),
        Margins {
            below: 36.0,
            beside: 220.0,
        },
    );
    p.axes("relative change", None, false);
    for (i, ch) in rows.iter().enumerate() {
        // Row 0 at the bottom, its label beside the middle of its band.
        p.label(
            -lim,
            i as f64 + 0.5,
            -7.0,
            &format!("{} {} ({})", ch.dimension, ch.group, ch.statistic),
            11,
            Anchor::End,
        );
        // Grey: beyond the threshold but too few rows to flag.
        let color = if ch.flagged {
            RED
        } else if ch.relative.abs() > d.threshold {
            GREY
        } else {
            BLUE
        };
        let v = ch.relative.clamp(-lim, lim);
        p.bar((0.0, i as f64), (v, i as f64 + 1.0), color, 0.7, 2.0);
    }
    for t in [-d.threshold, d.threshold] {
        p.series("", &[(t, 0.0), (t, n as f64)], BLACK, 1.0);
    }
    p.finish(false)
}

/// `monitor.html`: the verdict (statistics that drifted, the retraining rule), the drift bars,
/// and the tables of every compared statistic and of new groups. `rows`: the batch's posts.
pub fn render_drift(ctx: &ReportContext, d: &Drift, rows: usize) -> String {
    let title = ctx.title("monitoring", &format!("{rows} posts"));
    let mut body = String::from("<h2>Plot</h2>\n");
    body.push_str(&figures(&[("drift", drift_bars(d))]));
    body.push_str("<h2>Details</h2>\n");
    body.push_str(&drift_table(d));
    body.push_str(&new_groups_table(d));
    page(&title, &drift_verdict_section(d, rows), &body)
}

/// The monitoring verdict: how many statistics drifted, the retraining rule, the new groups,
/// and their key figures; shaded good when nothing moved and no retraining is due.
fn drift_verdict_section(d: &Drift, rows: usize) -> String {
    let calm = d.flagged == 0 && d.retrain != Some(true);
    let mut verdict = format!(
        "<section id=\"verdict\" class=\"verdict {}\">\n<p class=\"headline\"><strong>{} of {} statistics moved more than {:.0} %{}.</strong> {}</p>\n",
        if calm { "good" } else { "bad" },
        d.flagged,
        d.changes.len(),
        100.0 * d.threshold,
        match d.alpha {
            Some(a) => format!(", significantly (z-test, {a} over all statistics)"),
            None => String::new(),
        },
        escape(&format!(
            "Retraining rule: {}. New groups: {}.",
            d.retrain_verdict(),
            d.new_groups.len()
        )),
    );
    verdict.push_str(&key_figures(&[
        (
            "Statistics drifted",
            format!("{}", d.flagged),
            format!(
                "of {} compared; threshold {:.0} %",
                d.changes.len(),
                100.0 * d.threshold
            ),
        ),
        (
            "Posts",
            format!("{rows}"),
            format!("groups under {} rows never flagged", d.min_count),
        ),
        (
            "Retrain",
            match d.retrain {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            }
            .into(),
            "the seed's rule: F2 and minutes of a labelled batch".into(),
        ),
    ]));
    verdict.push_str("</section>\n");
    verdict
}

/// Every compared statistic, the batch's against the reference; flagged rows highlighted.
fn drift_table(d: &Drift) -> String {
    let changes: Vec<Row> = d
        .changes
        .iter()
        .map(|c| Row {
            head: c.dimension.clone(),
            cells: vec![
                Cell::Text(c.group.clone()),
                Cell::Text(c.statistic.clone()),
                Cell::Num(format!("{:.4}", c.reference)),
                Cell::Num(format!("{:.4}", c.batch)),
                Cell::Num(format!("{:+.1} %", 100.0 * c.relative)),
                Cell::Text(if c.flagged { "yes" } else { "" }.into()),
                Cell::Text(c.reason.clone()),
            ],
            flagged: c.flagged,
        })
        .collect();
    table(
        "drift",
        "Probability statistics: batch against the reference profile",
        &[
            ("dimension", false),
            ("group", false),
            ("statistic", false),
            ("reference", true),
            ("batch", true),
            ("change", true),
            ("flagged", false),
            ("why", false),
        ],
        &changes,
    )
}

/// The batch's groups the reference never saw (empty when there are none).
fn new_groups_table(d: &Drift) -> String {
    if d.new_groups.is_empty() {
        return String::new();
    }
    let new: Vec<Row> = d
        .new_groups
        .iter()
        .map(|(dim, g)| Row::new(dim.clone(), vec![Cell::Text(g.clone())]))
        .collect();
    table(
        "new-groups",
        "New groups, not in the reference",
        &[("dimension", false), ("group", false)],
        &new,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Profile;

    fn evaluation() -> (Vec<bool>, Vec<f64>, Vec<u32>, Business, Evaluation) {
        let probs: Vec<f64> = (0..200).map(|i| ((i * 37) % 100) as f64 / 100.0).collect();
        let truth: Vec<bool> = probs
            .iter()
            .enumerate()
            .map(|(i, &p)| p > 0.6 || i.is_multiple_of(7))
            .collect();
        let flags: Vec<bool> = probs.iter().map(|&p| p >= 0.5).collect();
        let words: Vec<u32> = (0..200).map(|i| 5 + (i * 7) % 30).collect();
        let b = Config::default().business;
        let e = Evaluation::new(&truth, &probs, &flags, &words, &b);
        (truth, probs, words, b, e)
    }

    fn context() -> ReportContext {
        ReportContext {
            mission: "jwst".into(),
            model: "fine-tuned MiniLM transformer".into(),
            data: "the test set".into(),
        }
    }

    fn title_of(page: &str) -> &str {
        let start = page.find("<title>").unwrap() + "<title>".len();
        &page[start..start + page[start..].find("</title>").unwrap()]
    }

    #[test]
    fn evaluation_page_is_for_people() {
        let (truth, probs, words, b, e) = evaluation();
        let page = render(&context(), &e, &truth, &probs, &words, &b);
        // The title names mission, model and data — no path.
        let title = title_of(&page);
        assert!(title.contains("Mission jwst"), "{title}");
        assert!(title.contains("fine-tuned MiniLM transformer"), "{title}");
        assert!(
            title.contains("the test set (200 labelled posts)"),
            "{title}"
        );
        assert!(
            !title.contains('/') && !title.contains(".parquet"),
            "{title}"
        );
        // Data-derived text is escaped: a script in the mission's name is text, not a script.
        let hostile = ReportContext {
            mission: "jwst <script>alert(1)</script>".into(),
            ..context()
        };
        let escaped = render(&hostile, &e, &truth, &probs, &words, &b);
        assert!(!escaped.contains("<script"), "a script in the page");
        assert!(escaped.contains("Mission jwst &lt;script&gt;alert(1)&lt;/script&gt;:"));
        // The verdict (report.md's one line) and key figures come before any table.
        let verdict = page.find("id=\"verdict\"").unwrap();
        let first_table = page.find("<table").unwrap();
        assert!(verdict < first_table);
        assert!(page.contains(if e.verdict.success {
            "Verdict: success."
        } else {
            "Verdict: not yet."
        }));
        assert!(page.find("class=\"key-figures\"").unwrap() < first_table);
        // Real tables, the confusion matrix among them, headers scoped, numbers right-aligned.
        assert!(!page.contains("<pre"));
        for class in [
            "rules",
            "minutes",
            "confusion",
            "metrics",
            "overall",
            "thresholds",
        ] {
            assert!(
                page.contains(&format!("<table class=\"{class}\">")),
                "no {class} table"
            );
        }
        let c = e.model.confusion;
        let confusion = &page[page.find("<table class=\"confusion\">").unwrap()..];
        let confusion = &confusion[..confusion.find("</table>").unwrap()];
        assert!(confusion.contains("<thead>") && confusion.contains("<th scope=\"col\""));
        assert!(confusion.contains("<th scope=\"row\">needs support</th>"));
        for n in [c.tp, c.fn_, c.fp, c.tn] {
            assert!(confusion.contains(&format!("</span>{n}</td>")), "{n}");
        }
        assert!(page.contains(&format!(
            "<td class=\"num\">{:.1}</td>",
            e.times.wasted_minutes
        )));
        // Per threshold: 0, 0.05, …, 1.
        let thresholds = &page[page.find("<table class=\"thresholds\">").unwrap()..];
        assert_eq!(
            thresholds[..thresholds.find("</table>").unwrap()]
                .matches("<tr><th scope=\"row\">")
                .count(),
            21
        );
        assert_eq!(page.matches("<figure class=\"plot\"").count(), 6);
        // Each figure is one drawing with marks in it, not an empty frame.
        for figure in page.split("<figure class=\"plot\"").skip(1) {
            let body = &figure[..figure.find("</figure>").unwrap()];
            assert_eq!(body.matches("<svg").count(), 1, "{body}");
            assert!(
                body.contains("<polyline") || body.matches("<rect").count() > 1,
                "{body}"
            );
        }
        csp_safe(&page);
    }

    /// No inline script or style attribute, nothing fetched; the CSS linked and inline.
    #[test]
    fn operating_points_are_tabled_and_marked_on_the_threshold_plots() {
        use flagship_core::operating::{Points, Rule, Settings};
        let (truth, probs, words, b, e) = evaluation();
        let secs: Vec<f64> = words.iter().map(|&w| b.response_seconds(w)).collect();
        let points = Points::new(
            &probs,
            &truth,
            &secs,
            None,
            Settings {
                rule: Rule::Minutes,
                miss_cost: 2.0,
                capacity_share: 0.3,
                recall_floor: 0.9,
            },
        );
        let e = e.with_operating(&points, &truth, &probs, &words);
        assert_eq!(e.operating.len(), 4);
        assert_eq!(e.operating.iter().filter(|r| r.chosen).count(), 1);
        let cap = e
            .operating
            .iter()
            .find(|r| r.rule == Rule::Capacity)
            .unwrap();
        assert!(cap.flagged <= 0.3 + 1e-9, "{cap:?}");
        let page = render(&context(), &e, &truth, &probs, &words, &b);
        assert!(page.contains("<table class=\"operating\">"));
        assert!(page.contains("minutes (chosen)"));
        // The chosen point's mark and legend on both threshold plots.
        let chosen = e.operating.iter().find(|r| r.chosen).unwrap();
        let label = format!("minutes, chosen ({:.2})", chosen.threshold);
        assert_eq!(page.matches(&label).count(), 2, "{label}");
        assert!(e.to_markdown("t").contains("| minutes (chosen) |"));
        csp_safe(&page);
    }

    fn csp_safe(page: &str) {
        assert!(!page.contains("style=\""), "a style attribute");
        assert!(!page.contains("<script"), "a script");
        assert!(!page.contains("src=") && !page.contains("url("));
        assert!(!page.contains("href=\"http"));
        assert!(page.contains("<link rel=\"stylesheet\" href=\"report.css\">"));
        assert!(page.contains(REPORT_CSS));
    }

    #[test]
    fn drift_page_is_for_people() {
        let n = 40;
        let probs: Vec<f64> = (0..2 * n).map(|i| 0.3 + (i % 7) as f64 * 0.05).collect();
        let client = |i: usize| {
            if i.is_multiple_of(2) {
                "iPhone"
            } else {
                "<script>alert(\"x\")</script>"
            }
        };
        let groups = vec![(
            "client".to_string(),
            (0..2 * n).map(|i| client(i).to_string()).collect(),
        )];
        let reference = Profile::new(&probs, &groups, None);
        let shifted: Vec<f64> = probs
            .iter()
            .enumerate()
            .map(|(i, &p)| if i.is_multiple_of(2) { p } else { p * 1.3 })
            .collect();
        let batch = Profile::new(&shifted, &groups, None);
        let d = Drift::compare(&reference, &batch, &DriftRule::SEED);
        // The script group's mean, and so the overall mean, rose.
        assert_eq!(d.flagged, 2);
        let ctx = ReportContext {
            data: "monitoring batch 0002".into(),
            ..context()
        };
        let page = render_drift(&ctx, &d, 2 * n);
        let title = title_of(&page);
        assert!(
            title.contains("Mission jwst") && title.contains("monitoring batch 0002 (80 posts)")
        );
        assert!(page.find("id=\"verdict\"").unwrap() < page.find("<table").unwrap());
        assert!(page.contains("<strong>2 of 6 statistics moved more than 15 %.</strong>"));
        assert!(page.contains("<table class=\"drift\">"));
        assert!(page.contains("<td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td>"));
        assert_eq!(page.matches("<tr class=\"flagged\">").count(), 2);
        assert!(page.contains("<td class=\"num\">+30.0 %</td>"));
        assert!(!page.contains("<pre"));
        csp_safe(&page);
    }

    #[test]
    fn confusion_shades_keep_text_readable() {
        for (i, (bg, fg)) in SHADES.iter().enumerate() {
            // The CSS rule and the plot use the same pair…
            assert!(
                REPORT_CSS.contains(&format!(".shade-{i} {{ background: {bg}; color: {fg}; }}")),
                "shade {i} differs in REPORT_CSS"
            );
            // …its text is the one that reads best on it…
            assert_eq!(text_on(hex(bg)), hex(fg), "shade {i}");
            // …and stands out by at least 4.5:1 (WCAG AA).
            let ratio = contrast(hex(bg), hex(fg));
            assert!(ratio >= 4.5, "shade {i}: {bg} on {fg} is {ratio:.2}:1");
        }
        assert_eq!(shade(0, 10), 0);
        assert_eq!(shade(10, 10), 4);
        assert_eq!(shade(0, 0), 0);
        // Black on white is 21:1; the plots' grey still reads on white.
        assert!((contrast(BLACK, WHITE) - 21.0).abs() < 1e-9);
        assert!(contrast(GREY, WHITE) >= 4.5);
        // The confusion plot fills cells with the shades and writes in their text colour.
        let svg = confusion_chart(Confusion {
            tp: 90,
            fp: 5,
            tn: 50,
            fn_: 20,
        });
        let text_fill = |label: &str| {
            let tag = &svg[..svg.find(label).unwrap()];
            let tag = &tag[tag.rfind("<text").unwrap()..];
            let fill = &tag[tag.find("fill=\"").unwrap() + 6..];
            fill[..fill.find('"').unwrap()].to_string()
        };
        assert!(svg.contains("fill=\"#0B3D91\"")); // the darkest cell, 90
        assert_eq!(text_fill(">caught (TP)<"), "#FFFFFF");
        assert_eq!(text_fill(">90<"), "#FFFFFF");
        assert!(svg.contains("fill=\"#F2F6FC\"")); // the lightest, 5
        assert_eq!(text_fill(">flagged needlessly (FP)<"), "#1A1A1A");
        assert_eq!(text_fill(">5<"), "#1A1A1A");
        assert!(!svg.contains("style="));
    }

    #[test]
    fn context_names_without_paths() {
        assert_eq!(
            ReportContext::data_of(Path::new("/srv/reports/test-predictions.parquet")),
            "the test set"
        );
        assert_eq!(
            ReportContext::data_of(Path::new("s/monitor/batch-0002-predictions.parquet")),
            "monitoring batch 0002"
        );
        let mut config = Config::default();
        let ctx = ReportContext::new(&config, Path::new("/a/b/val-predictions.parquet"));
        assert_eq!(ctx.mission, "jwst");
        assert_eq!(ctx.model, "fine-tuned MiniLM transformer");
        assert_eq!(ctx.data, "the val set");
        config.model.base = Some("/opt/models/all-mpnet-base-v2".into());
        assert_eq!(
            ReportContext::model_of(&config),
            "fine-tuned transformer all-mpnet-base-v2"
        );
        config.model.kind = ModelKind::Linear;
        assert_eq!(
            ReportContext::model_of(&config),
            "TF-IDF + logistic-regression baseline"
        );
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }
}
