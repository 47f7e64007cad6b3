//! `report.html`: one self-contained page (inline SVG drawn with `plotters`, inline CSS, no
//! network) with the verdict, the tables of `report.md` and the plots: ROC, precision–recall,
//! confusion matrix, probability histogram by class, and threshold against F2 and against
//! minutes wasted and missed. A small inline script marks each figure rendered once the browser
//! has laid its SVG out, so a headless browser can check every plot.

use std::sync::Once;

use flagship_core::config::Business;
use plotters::prelude::*;

use crate::business::Times;
use crate::evaluation::Evaluation;
use crate::monitor::Drift;
use crate::ranking;

/// Embedded so text can be measured on any machine (see assets/FONT-LICENSE.md).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font; registration cannot fail for them.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

const W: u32 = 480;
const H: u32 = 340;

/// A named, coloured line.
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// An SVG of the default size (see [`svg_sized`]).
fn svg(
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> DrawResult<()>,
) -> String {
    svg_sized((W, H), draw)
}

/// Draws on a white `size` canvas; a drawing error becomes a visible message in the page.
fn svg_sized(
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> DrawResult<()>,
) -> String {
    register_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| e.into())
            .and_then(|_| draw(root.clone()))
            .and_then(|_| root.present().map_err(|e| e.into()));
        if let Err(e) = drawn {
            return format!(
                "<p class=\"error\">plot failed: {}</p>",
                escape(&e.to_string())
            );
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The series legend, boxed, upper right.
fn legend<'a, X, Y>(c: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>) -> DrawResult<()>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

fn line_chart(title: &str, x_desc: &str, y_desc: &str, y_max: f64, series: &[Series]) -> String {
    svg(|root| {
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..y_max.max(1e-9))?;
        c.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 12))
            .draw()?;
        for (name, color, pts) in series {
            let color = *color;
            c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        if series.len() > 1 {
            legend(&mut c)?;
        }
        Ok(())
    })
}

fn confusion_chart(e: &Evaluation) -> String {
    let c = e.model.confusion;
    svg(|root| {
        let root = root.titled("Confusion matrix", ("sans-serif", 18))?;
        let cells = root.margin(10, 10, 60, 10).split_evenly((2, 2));
        let max = [c.tp, c.fn_, c.fp, c.tn]
            .into_iter()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        for (area, (label, n)) in cells.iter().zip([
            ("caught (TP)", c.tp),
            ("missed (FN)", c.fn_),
            ("flagged needlessly (FP)", c.fp),
            ("rightly left (TN)", c.tn),
        ]) {
            let shade = 0.15 + 0.75 * (n as f64 / max);
            area.fill(&BLUE.mix(shade))?;
            let (w, h) = area.dim_in_pixel();
            let style = ("sans-serif", 16).into_font().color(&BLACK);
            area.draw(&Text::new(
                format!("{label}: {n}"),
                (8, h as i32 / 2 - 8),
                style,
            ))?;
            area.draw(&Rectangle::new(
                [(0, 0), (w as i32 - 1, h as i32 - 1)],
                BLACK,
            ))?;
        }
        Ok(())
    })
}

fn histogram(truth: &[bool], probs: &[f64]) -> String {
    const BINS: usize = 20;
    let mut counts = [[0u32; BINS]; 2];
    for (&y, &p) in truth.iter().zip(probs) {
        let b = ((p * BINS as f64) as usize).min(BINS - 1);
        counts[y as usize][b] += 1;
    }
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    svg(|root| {
        let mut c = ChartBuilder::on(&root)
            .caption("Predicted probability by class", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0u32..top + top / 10 + 1)?;
        c.configure_mesh()
            .x_desc("need_support probability")
            .y_desc("tweets")
            .label_style(("sans-serif", 12))
            .draw()?;
        let width = 1.0 / BINS as f64;
        for (class, color, name) in [(1usize, RED, "needs support"), (0, BLUE, "does not")] {
            let offset = if class == 1 { 0.0 } else { width / 2.0 };
            c.draw_series(counts[class].iter().enumerate().map(|(i, &n)| {
                let x0 = i as f64 * width + offset;
                Rectangle::new([(x0, 0), (x0 + width / 2.0, n)], color.mix(0.6).filled())
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        legend(&mut c)?;
        Ok(())
    })
}

/// The page. `truth`, `probs`, `words` are the rows `e` was computed from.
pub fn render(
    title: &str,
    e: &Evaluation,
    truth: &[bool],
    probs: &[f64],
    words: &[u32],
    b: &Business,
) -> String {
    let roc = ranking::roc_points(probs, truth);
    let pr = ranking::pr_points(probs, truth);
    let thresholds: Vec<f64> = (0..=50).map(|i| i as f64 / 50.0).collect();
    let sweep = ranking::sweep(probs, truth, &thresholds);
    let f2: Vec<(f64, f64)> = sweep
        .iter()
        .map(|p| (p.threshold, p.confusion.f_beta(2.0)))
        .collect();
    let times: Vec<(f64, Times)> = sweep
        .iter()
        .map(|p| {
            let flagged: Vec<bool> = probs.iter().map(|&v| v >= p.threshold).collect();
            (p.threshold, Times::new(truth, &flagged, words, b))
        })
        .collect();
    let wasted: Vec<(f64, f64)> = times.iter().map(|(t, x)| (*t, x.wasted_minutes)).collect();
    let missed: Vec<(f64, f64)> = times.iter().map(|(t, x)| (*t, x.missed_minutes)).collect();
    let max_minutes = wasted
        .iter()
        .chain(&missed)
        .map(|p| p.1)
        .fold(1.0, f64::max);
    let plots = [
        (
            "roc",
            line_chart(
                &format!("ROC (AUC {:.3})", e.ranking.roc_auc),
                "false-positive rate",
                "true-positive rate",
                1.0,
                &[
                    ("model", RED, roc),
                    (
                        "chance",
                        RGBColor(150, 150, 150),
                        vec![(0.0, 0.0), (1.0, 1.0)],
                    ),
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
                &[("model", RED, pr)],
            ),
        ),
        ("confusion", confusion_chart(e)),
        ("histogram", histogram(truth, probs)),
        (
            "threshold-f2",
            line_chart(
                "Threshold vs F2",
                "threshold",
                "F2",
                1.0,
                &[("F2", RED, f2)],
            ),
        ),
        (
            "threshold-minutes",
            line_chart(
                "Threshold vs minutes wasted / missed",
                "threshold",
                "minutes",
                max_minutes * 1.05,
                &[("wasted", BLUE, wasted), ("missed", RED, missed)],
            ),
        ),
    ];
    let md = e.to_markdown(title);
    let head = format!(
        "<p id=\"verdict\"><strong>{}</strong> — F2 {:.3} (naive {:.3} ± {:.3}); minutes wasted {:.1} vs {:.1}; minutes missed {:.1} vs {:.1}.</p>",
        if e.verdict.success {
            "Success"
        } else {
            "Not yet"
        },
        e.model.binary.f2,
        e.naive.f2.mean,
        e.naive.f2.sd,
        e.times.wasted_minutes,
        e.naive.wasted_minutes.mean,
        e.times.missed_minutes,
        e.naive.missed_minutes.mean,
    );
    page(title, &head, &plots, &md)
}

/// The page shell: title, a headline paragraph, the figures, the tables as text, and the
/// script that marks each figure rendered.
fn page(title: &str, head: &str, plots: &[(&str, String)], md: &str) -> String {
    let mut figures = String::new();
    for (id, body) in plots {
        figures.push_str(&format!(
            "<figure class=\"plot\" data-plot=\"{id}\">{body}</figure>\n"
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1040px; margin: 2em auto; color: #222; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure.plot {{ margin: 0; border: 1px solid #ddd; }}
pre {{ white-space: pre-wrap; background: #f7f7f7; padding: 1em; }}
.error {{ color: #b00; }}
</style></head>
<body>
<h1>{title}</h1>
{head}
<div class="plots">
{figures}</div>
<h2>Tables</h2>
<pre>{md}</pre>
<p id="render-check">not checked</p>
<script>
window.addEventListener("load", () => {{
  const figs = [...document.querySelectorAll("figure.plot")];
  let ok = 0;
  for (const f of figs) {{
    const s = f.querySelector("svg");
    const box = s ? s.getBBox() : null;
    const marks = s ? s.querySelectorAll("path, polyline, rect, line, text").length : 0;
    const drawn = !!box && box.width > 0 && box.height > 0 && marks > 0;
    f.dataset.rendered = drawn ? "yes" : "no";
    if (drawn) ok++;
  }}
  document.getElementById("render-check").textContent = `rendered ${{ok}}/${{figs.length}}`;
}});
</script>
</body></html>
"#,
        title = escape(title),
        md = escape(md),
    )
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
    svg_sized((W + 200, height), |root| {
        let mut c = ChartBuilder::on(&root)
            .caption("Drift: relative change vs reference", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(220)
            .build_cartesian_2d(-lim..lim, (0..n).into_segmented())?;
        let labels: Vec<String> = rows
            .iter()
            .map(|c| format!("{} {} ({})", c.dimension, c.group, c.statistic))
            .collect();
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("relative change")
            .label_style(("sans-serif", 11))
            .draw()?;
        c.draw_series(rows.iter().enumerate().map(|(i, ch)| {
            // Grey: beyond the threshold but too few rows to flag.
            let color = if ch.flagged {
                RED
            } else if ch.relative.abs() > d.threshold {
                RGBColor(150, 150, 150)
            } else {
                BLUE
            };
            let v = ch.relative.clamp(-lim, lim);
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (v, SegmentValue::Exact(i + 1)),
                ],
                color.mix(0.7).filled(),
            );
            bar.set_margin(2, 2, 0, 0);
            bar
        }))?;
        for t in [-d.threshold, d.threshold] {
            c.draw_series(LineSeries::new(
                [(t, SegmentValue::Exact(0)), (t, SegmentValue::Last)],
                BLACK.stroke_width(1),
            ))?;
        }
        Ok(())
    })
}

/// `monitor.html`: the drift bars and the table (as markdown text).
pub fn render_drift(title: &str, d: &Drift, table_md: &str) -> String {
    page(
        title,
        &format!(
            "<p id=\"verdict\"><strong>{} of {} statistics moved more than {:.0} %</strong></p>",
            d.flagged,
            d.changes.len(),
            100.0 * d.threshold
        ),
        &[("drift", drift_bars(d))],
        table_md,
    )
}
