//! The HTML reports open in a real headless Chromium and every plot renders, both from disk
//! (inline CSS) and served under `Content-Security-Policy: default-src 'self'` (linked
//! `report.css`; only the inline `<style>` may be blocked). The pages run no script of their own,
//! so the test adds `check.js` to its copies: it marks each figure whose SVG the browser laid
//! out with a non-empty box, says whether the CSS applied, and lists what the policy blocked.

use std::path::PathBuf;
use std::process::Command;

use flagship_core::Config;
use flagship_metrics::html::{self, ReportContext};
use flagship_metrics::{Drift, DriftRule, Evaluation, Profile};
use flagship_testkit::fixture;

/// The check the test adds to its copies of the pages (`<script src="check.js">`, first in the
/// head, so it hears every policy violation): writes `rendered ok/all; css yes|no; blocked […]`.
const CHECK_JS: &str = r#"const blocked = [];
document.addEventListener("securitypolicyviolation", (e) => blocked.push(e.effectiveDirective));
window.addEventListener("load", () => {
  const figs = [...document.querySelectorAll("figure.plot")];
  let ok = 0;
  for (const f of figs) {
    const s = f.querySelector("svg");
    const box = s ? s.getBBox() : null;
    const marks = s ? s.querySelectorAll("path, polyline, rect, line, text").length : 0;
    const drawn = !!box && box.width > 0 && box.height > 0 && marks > 0;
    f.dataset.rendered = drawn ? "yes" : "no";
    if (drawn) ok++;
  }
  const num = document.querySelector("td.num");
  const css = num && getComputedStyle(num).textAlign === "right" ? "yes" : "no";
  const out = document.createElement("p");
  out.id = "render-check";
  out.textContent = `rendered ${ok}/${figs.length}; css ${css}; blocked [${blocked.join(",")}]`;
  document.body.append(out);
});
"#;

/// Chromium from PATH; if missing and we are root on Debian, install it (as DEVELOPERS.md says).
fn chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|name| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|d| d.join(name))
                        .find(|p| p.is_file())
                })
            })
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
    if root {
        eprintln!("installing chromium (apt-get)…");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    find()
}

#[test]
fn every_plot_renders_in_headless_chromium() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("metrics/sklearn-reference.json")).unwrap(),
    )
    .unwrap();
    let case = &r["cases"][1];
    let y: Vec<bool> = case["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    let p: Vec<f64> = case["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let flags: Vec<bool> = p.iter().map(|&v| v >= 0.45).collect();
    let words: Vec<u32> = (0..y.len() as u32).map(|i| 5 + (i * 7) % 30).collect();
    let b = Config::default().business;
    let e = Evaluation::new(&y, &p, &flags, &words, &b);
    let ctx = ReportContext {
        mission: "Report <test>".into(),
        ..ReportContext::default()
    };
    let page = html::render(&ctx, &e, &y, &p, &words, &b);
    assert_eq!(page.matches("<figure class=\"plot\"").count(), 6);
    // Self-contained: nothing fetched (the only URLs are SVG namespace declarations).
    assert!(!page.contains("src=") && !page.contains("href=\"http") && !page.contains("url("));
    assert!(page.contains("Report &lt;test&gt;"));
    assert!(!page.contains("<script") && !page.contains("style=\""));

    let monitor = {
        // The monitoring page's drift bars: a batch whose probabilities all rose by a fifth.
        let groups = vec![(
            "word_bin".to_string(),
            words
                .iter()
                .map(|&w| format!("{}", w / 10))
                .collect::<Vec<_>>(),
        )];
        let reference = Profile::new(&p, &groups, None);
        let higher: Vec<f64> = p.iter().map(|v| (v * 1.2).min(1.0)).collect();
        let batch = Profile::new(&higher, &groups, None);
        let d = Drift::compare(&reference, &batch, &DriftRule::SEED);
        assert!(d.flagged > 0);
        html::render_drift(&ReportContext::default(), &d, p.len())
    };
    assert!(!monitor.contains("<script") && !monitor.contains("style=\""));

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: chromium is missing and could not be installed"
        );
        eprintln!("skipping the browser check: no chromium");
        return;
    };
    // From disk: the inline CSS applies (report.css is absent), nothing is blocked.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("check.js"), CHECK_JS).unwrap();
    for (name, text, plots) in [("report.html", &page, 6), ("monitor.html", &monitor, 1)] {
        let file = dir.path().join(name);
        std::fs::write(&file, with_check(text)).unwrap();
        let dom = load(&browser, &format!("file://{}", file.display()), plots);
        assert!(dom.contains("; css yes; blocked []"), "{name}: {dom}");
    }
    // Served under a strict policy: the linked CSS applies; only the inline <style> may be
    // blocked (no script, style attribute, font or image is).
    let port = serve(vec![
        ("/report.html", with_check(&page), "text/html"),
        ("/monitor.html", with_check(&monitor), "text/html"),
        ("/check.js", CHECK_JS.into(), "text/javascript"),
        (
            &format!("/{}", html::REPORT_CSS_HREF),
            html::REPORT_CSS.into(),
            "text/css",
        ),
    ]);
    for (name, plots) in [("report.html", 6), ("monitor.html", 1)] {
        let dom = load(&browser, &format!("http://127.0.0.1:{port}/{name}"), plots);
        let check = &dom[dom.find("id=\"render-check\"").unwrap()..];
        assert!(check.contains("; css yes; blocked ["), "{name}: {check}");
        let blocked = &check[check.find("blocked [").unwrap() + 9..check.find(']').unwrap()];
        assert!(
            blocked
                .split(',')
                .all(|d| d.is_empty() || d == "style-src-elem"),
            "{name}: the policy blocked {blocked}"
        );
    }
}

/// Serves `files` (path, body, content type) on a local port with
/// `Content-Security-Policy: default-src 'self'`, until the test ends; returns the port.
fn serve(files: Vec<(&str, String, &'static str)>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let files: Vec<(String, String, &str)> = files
        .into_iter()
        .map(|(p, b, t)| (p.to_string(), b, t))
        .collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (status, body, kind) = match files.iter().find(|f| f.0 == path) {
                Some((_, body, kind)) => ("200 OK", body.as_str(), *kind),
                None => ("404 Not Found", "not found", "text/plain"),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}; charset=utf-8\r\nContent-Security-Policy: default-src 'self'\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// The page with `check.js` loaded first in its head.
fn with_check(page: &str) -> String {
    assert_eq!(page.matches("<head>").count(), 1);
    page.replace("<head>", "<head><script src=\"check.js\"></script>")
}

/// Chromium's DOM of `url` once loaded, after checking every one of `plots` figures rendered.
fn load(browser: &std::path::Path, url: &str, plots: usize) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains(&format!("rendered {plots}/{plots}")),
        "{url}: chromium {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dom.matches("data-rendered=\"yes\"").count(), plots);
    dom
}
