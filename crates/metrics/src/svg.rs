//! The few SVG shapes the report pages draw — a canvas, a framed plot with ticks, lines, dashed
//! lines, bars, text and a legend — written as inline SVG text.
//!
//! Every colour and line style is a presentation attribute (`fill`, `stroke`,
//! `stroke-dasharray`), never a `style="…"` attribute, so the pages keep a strict
//! `Content-Security-Policy`. Text is escaped and measured by the browser that shows it: labels
//! are anchored (`text-anchor`), not placed by a font's metrics, so no font ships with the
//! binary. This replaced `plotters` (seven packages and an embedded font): the same four chart kinds in
//! a few hundred lines and no dependency.

use std::fmt::Write as _;

/// An sRGB colour, written as `#RRGGBB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

pub const BLACK: Rgb = Rgb(0, 0, 0);
pub const WHITE: Rgb = Rgb(255, 255, 255);
pub const RED: Rgb = Rgb(255, 0, 0);
pub const BLUE: Rgb = Rgb(0, 0, 255);

impl std::fmt::Display for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{:02X}{:02X}{:02X}", self.0, self.1, self.2)
    }
}

/// `s` safe as XML text and as a quoted attribute value.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Where a text's anchor point sits along its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn name(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// How a legend entry is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Line,
    Dashed,
    Box,
}

/// A white canvas of `w` × `h` pixels and the shapes drawn on it, in order.
#[derive(Debug)]
pub struct Canvas {
    w: f64,
    h: f64,
    body: String,
}

/// Coordinates as SVG writes them: two decimals at most, no `-0`.
fn n(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    format!("{}", if r == 0.0 { 0.0 } else { r })
}

impl Canvas {
    pub fn new(w: u32, h: u32) -> Canvas {
        let mut c = Canvas {
            w: w as f64,
            h: h as f64,
            body: String::new(),
        };
        c.rect((0.0, 0.0), (c.w, c.h), WHITE, 1.0);
        c
    }

    pub fn width(&self) -> f64 {
        self.w
    }

    pub fn height(&self) -> f64 {
        self.h
    }

    /// A filled rectangle between two corners (in any order); `opacity` 1 is solid.
    pub fn rect(&mut self, a: (f64, f64), b: (f64, f64), fill: Rgb, opacity: f64) {
        let paint = if opacity < 1.0 {
            format!("fill=\"{fill}\" fill-opacity=\"{}\"", n(opacity))
        } else {
            format!("fill=\"{fill}\"")
        };
        self.rect_with(a, b, &paint);
    }

    /// A rectangle's outline.
    pub fn frame(&mut self, a: (f64, f64), b: (f64, f64), stroke: Rgb) {
        self.rect_with(a, b, &format!("fill=\"none\" stroke=\"{stroke}\""));
    }

    /// A `<rect>` between two corners (in any order), painted by the attributes `paint`.
    fn rect_with(&mut self, a: (f64, f64), b: (f64, f64), paint: &str) {
        let (x, y) = (a.0.min(b.0), a.1.min(b.1));
        let (w, h) = ((a.0 - b.0).abs(), (a.1 - b.1).abs());
        let _ = writeln!(
            self.body,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" {paint}/>",
            n(x),
            n(y),
            n(w),
            n(h)
        );
    }

    /// A straight line; `dash`: the lengths drawn and skipped, for a dashed one.
    pub fn line(
        &mut self,
        a: (f64, f64),
        b: (f64, f64),
        stroke: Rgb,
        width: f64,
        dash: Option<(u32, u32)>,
    ) {
        let _ = write!(
            self.body,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-width=\"{}\"",
            n(a.0),
            n(a.1),
            n(b.0),
            n(b.1),
            n(width)
        );
        if let Some((on, off)) = dash {
            let _ = write!(self.body, " stroke-dasharray=\"{on} {off}\"");
        }
        self.body.push_str("/>\n");
    }

    /// A line through `points`, in order.
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: Rgb, width: f64) {
        if points.is_empty() {
            return;
        }
        let pts: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{},{}", n(x), n(y)))
            .collect();
        let _ = writeln!(
            self.body,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{}\" stroke-linejoin=\"round\"/>",
            pts.join(" "),
            n(width)
        );
    }

    /// `s` (escaped) with its anchor at `at`; its middle on `at`'s height.
    pub fn text(&mut self, at: (f64, f64), s: &str, size: u32, fill: Rgb, anchor: Anchor) {
        self.text_turned(at, s, size, fill, anchor, false)
    }

    /// [`Canvas::text`]; with `rotate`, turned a quarter anticlockwise about its anchor (an
    /// axis title beside a vertical axis).
    pub fn text_turned(
        &mut self,
        at: (f64, f64),
        s: &str,
        size: u32,
        fill: Rgb,
        anchor: Anchor,
        rotate: bool,
    ) {
        let _ = write!(
            self.body,
            "<text x=\"{}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"{size}\" fill=\"{fill}\" text-anchor=\"{}\" dominant-baseline=\"central\"",
            n(at.0),
            n(at.1),
            anchor.name()
        );
        if rotate {
            let _ = write!(
                self.body,
                " transform=\"rotate(-90 {} {})\"",
                n(at.0),
                n(at.1)
            );
        }
        let _ = writeln!(self.body, ">{}</text>", escape(s));
    }

    /// The SVG element.
    pub fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n{}</svg>\n",
            self.body,
            w = n(self.w),
            h = n(self.h)
        )
    }
}

/// About `want` round tick values (steps of 1, 2 or 5 times a power of ten) from `lo` to `hi`,
/// both included when they fall on a step.
pub fn ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater)
        || !lo.is_finite()
        || !hi.is_finite()
    {
        return vec![lo];
    }
    let raw = (hi - lo) / want.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // The step (1, 2, 5 or 10 × a power of ten) whose count of ticks is nearest `want`.
    let count = |m: f64| ((hi - lo) / (m * mag) - want as f64).abs();
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .min_by(|a, b| count(*a).total_cmp(&count(*b)))
        .unwrap_or(1.0);
    let step = m * mag;
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // Below 1, divide by a whole power of ten (0.6, not 3 × 0.2 = 0.6000000000000001).
    let inv = (1.0 / mag).round();
    (first..=last)
        .map(|i| {
            if mag < 1.0 {
                i as f64 * m / inv
            } else {
                i as f64 * step
            }
        })
        .collect()
}

/// A tick value as its label: no more decimals than its step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().max(0.0) as usize
    };
    format!("{v:.decimals$}")
}

/// A plot: a caption, a framed area with `x` and `y` ranges mapped onto it, ticks and axis
/// titles, and a legend of what was drawn with a name.
#[derive(Debug)]
pub struct Plot {
    pub canvas: Canvas,
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
    keys: Vec<(String, Rgb, Key)>,
}

/// The space a plot leaves around its area: the caption above, tick labels and axis titles
/// below (`below`) and to the left (`beside`), a margin elsewhere.
pub struct Margins {
    pub below: f64,
    pub beside: f64,
}

impl Plot {
    pub fn new(canvas: Canvas, caption: &str, x: (f64, f64), y: (f64, f64), m: Margins) -> Plot {
        let mut canvas = canvas;
        let (w, h) = (canvas.width(), canvas.height());
        canvas.text((w / 2.0, 22.0), caption, 18, BLACK, Anchor::Middle);
        let guard = |r: (f64, f64)| {
            if r.1 > r.0 { r } else { (r.0, r.0 + 1e-9) }
        };
        Plot {
            canvas,
            left: 12.0 + m.beside,
            top: 44.0,
            right: w - 16.0,
            bottom: h - 12.0 - m.below,
            x: guard(x),
            y: guard(y),
            keys: Vec::new(),
        }
    }

    /// A data point's position on the canvas.
    pub fn at(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        (
            self.left + fx * (self.right - self.left),
            self.bottom - fy * (self.bottom - self.top),
        )
    }

    /// The plot area's frame, light grid lines and labels at round `x` (and, with `y_ticks`,
    /// `y`) values, and the axis titles.
    pub fn axes(&mut self, x_desc: &str, y_desc: Option<&str>, y_ticks: bool) {
        let grid = Rgb(0xDD, 0xDD, 0xDD);
        let xs = ticks(self.x.0, self.x.1, 6);
        let x_step = step_of(&xs);
        for &v in &xs {
            let (px, _) = self.at(v, self.y.0);
            self.canvas
                .line((px, self.top), (px, self.bottom), grid, 1.0, None);
            self.canvas
                .line((px, self.bottom), (px, self.bottom + 4.0), BLACK, 1.0, None);
            self.canvas.text(
                (px, self.bottom + 13.0),
                &tick_label(v, x_step),
                12,
                BLACK,
                Anchor::Middle,
            );
        }
        if y_ticks {
            let ys = ticks(self.y.0, self.y.1, 6);
            let y_step = step_of(&ys);
            for &v in &ys {
                let (_, py) = self.at(self.x.0, v);
                self.canvas
                    .line((self.left, py), (self.right, py), grid, 1.0, None);
                self.canvas
                    .line((self.left - 4.0, py), (self.left, py), BLACK, 1.0, None);
                self.canvas.text(
                    (self.left - 7.0, py),
                    &tick_label(v, y_step),
                    12,
                    BLACK,
                    Anchor::End,
                );
            }
        }
        self.canvas
            .frame((self.left, self.top), (self.right, self.bottom), BLACK);
        self.canvas.text(
            ((self.left + self.right) / 2.0, self.bottom + 30.0),
            x_desc,
            12,
            BLACK,
            Anchor::Middle,
        );
        if let Some(y_desc) = y_desc {
            self.canvas.text_turned(
                (self.left - 38.0, (self.top + self.bottom) / 2.0),
                y_desc,
                12,
                BLACK,
                Anchor::Middle,
                true,
            );
        }
    }

    /// A text at a point of the data, in pixels from it (`dx`, `dy`).
    pub fn label(&mut self, x: f64, y: f64, dx: f64, s: &str, size: u32, anchor: Anchor) {
        let (px, py) = self.at(x, y);
        self.canvas.text((px + dx, py), s, size, BLACK, anchor);
    }

    /// A line through data points (clamped to the area), named in the legend.
    pub fn series(&mut self, name: &str, points: &[(f64, f64)], color: Rgb, width: f64) {
        let pts: Vec<(f64, f64)> = points.iter().map(|&(x, y)| self.clamped(x, y)).collect();
        self.canvas.polyline(&pts, color, width);
        if !name.is_empty() {
            self.keys.push((name.to_string(), color, Key::Line));
        }
    }

    /// A dashed line from one data point to another, named in the legend.
    pub fn dashed(&mut self, name: &str, a: (f64, f64), b: (f64, f64), color: Rgb, width: f64) {
        let (a, b) = (self.clamped(a.0, a.1), self.clamped(b.0, b.1));
        self.canvas.line(a, b, color, width, Some((6, 4)));
        if !name.is_empty() {
            self.keys.push((name.to_string(), color, Key::Dashed));
        }
    }

    /// A bar between two data corners; `inset` pixels off its top and bottom edges.
    pub fn bar(&mut self, a: (f64, f64), b: (f64, f64), color: Rgb, opacity: f64, inset: f64) {
        let (mut pa, mut pb) = (self.clamped(a.0, a.1), self.clamped(b.0, b.1));
        if (pa.1 - pb.1).abs() > 2.0 * inset {
            let (hi, lo) = if pa.1 < pb.1 {
                (&mut pa, &mut pb)
            } else {
                (&mut pb, &mut pa)
            };
            hi.1 += inset;
            lo.1 -= inset;
        }
        self.canvas.rect(pa, pb, color, opacity);
    }

    /// Names `color` in the legend as a box (bars).
    pub fn key_box(&mut self, name: &str, color: Rgb) {
        self.keys.push((name.to_string(), color, Key::Box));
    }

    fn clamped(&self, x: f64, y: f64) -> (f64, f64) {
        self.at(x.clamp(self.x.0, self.x.1), y.clamp(self.y.0, self.y.1))
    }

    /// The legend (boxed, upper right) when asked for and anything was named, then the SVG.
    pub fn finish(mut self, legend: bool) -> String {
        if legend && !self.keys.is_empty() {
            let longest = self
                .keys
                .iter()
                .map(|k| k.0.chars().count())
                .max()
                .unwrap_or(0);
            // About 0.6 em a character at 12 px: the box is sized, the text not measured.
            let w = 34.0 + 7.2 * longest as f64;
            let h = 8.0 + 18.0 * self.keys.len() as f64;
            let (x0, y0) = (self.right - 8.0 - w, self.top + 8.0);
            self.canvas.rect((x0, y0), (x0 + w, y0 + h), WHITE, 0.9);
            self.canvas.frame((x0, y0), (x0 + w, y0 + h), BLACK);
            for (i, (name, color, key)) in std::mem::take(&mut self.keys).into_iter().enumerate() {
                let y = y0 + 13.0 + 18.0 * i as f64;
                match key {
                    Key::Line => self
                        .canvas
                        .line((x0 + 6.0, y), (x0 + 22.0, y), color, 2.0, None),
                    Key::Dashed => {
                        self.canvas
                            .line((x0 + 6.0, y), (x0 + 22.0, y), color, 2.0, Some((4, 2)))
                    }
                    Key::Box => {
                        self.canvas
                            .rect((x0 + 8.0, y - 5.0), (x0 + 20.0, y + 5.0), color, 1.0)
                    }
                }
                self.canvas
                    .text((x0 + 28.0, y), &name, 12, BLACK, Anchor::Start);
            }
        }
        self.canvas.finish()
    }
}

/// The step between sorted ticks (1 for a single one).
fn step_of(ticks: &[f64]) -> f64 {
    match ticks {
        [a, b, ..] => b - a,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        assert_eq!(ticks(0.0, 1.0, 6), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let t = ticks(0.0, 137.0, 6);
        assert_eq!(t, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]);
        let t = ticks(-0.45, 0.45, 6);
        assert_eq!(t.first().copied(), Some(-0.4));
        assert!(t.iter().all(|v| (-0.45..=0.45).contains(v)));
        assert_eq!(ticks(3.0, 3.0, 6), vec![3.0]);
        assert_eq!(tick_label(0.6, 0.2), "0.6");
        assert_eq!(tick_label(120.0, 20.0), "120");
        assert_eq!(tick_label(-0.05, 0.05), "-0.05");
    }

    #[test]
    fn data_lands_where_the_axes_say() {
        let mut p = Plot::new(
            Canvas::new(480, 340),
            "t",
            (0.0, 1.0),
            (0.0, 10.0),
            Margins {
                below: 36.0,
                beside: 48.0,
            },
        );
        // The area: x 60..464, y 44..292.
        assert_eq!(p.at(0.0, 0.0), (60.0, 292.0));
        assert_eq!(p.at(1.0, 10.0), (464.0, 44.0));
        assert_eq!(p.at(0.5, 5.0), (262.0, 168.0));
        p.axes("x", Some("y"), true);
        p.label(0.0, 5.0, -7.0, "row", 11, Anchor::End);
        p.series("model <b>", &[(0.0, 0.0), (0.5, 20.0)], RED, 2.0);
        p.dashed("cut", (0.3, 0.0), (0.3, 10.0), BLACK, 2.0);
        let svg = p.finish(true);
        // Out-of-range data is clamped to the frame.
        assert!(svg.contains("points=\"60,292 262,44\""), "{svg}");
        assert!(svg.contains("stroke=\"#FF0000\""));
        assert!(svg.contains("stroke-dasharray=\"6 4\""));
        assert!(svg.contains(">model &lt;b&gt;</text>"));
        assert!(svg.contains("transform=\"rotate(-90"));
        assert!(!svg.contains("style="));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"480\""));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn bars_and_colours() {
        assert_eq!(Rgb(0x0b, 0x3d, 0x91).to_string(), "#0B3D91");
        let mut c = Canvas::new(10, 10);
        c.rect((8.0, 2.0), (2.0, 6.0), BLUE, 0.6);
        let svg = c.finish();
        assert!(svg.contains(
            "<rect x=\"2\" y=\"2\" width=\"6\" height=\"4\" fill=\"#0000FF\" fill-opacity=\"0.6\"/>"
        ));
        assert_eq!(n(-0.0001), "0");
        assert_eq!(n(1.256), "1.26");
    }
}
