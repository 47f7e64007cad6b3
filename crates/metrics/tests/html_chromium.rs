//! The HTML report opens in a real headless Chromium and every plot renders (the page's own
//! script marks each figure whose SVG the browser laid out with a non-empty box).

use std::path::PathBuf;
use std::process::Command;

use flagship_core::Config;
use flagship_core::testing::fixture;
use flagship_metrics::{Drift, Evaluation, Profile, html};

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
    let page = html::render("Report <test>", &e, &y, &p, &words, &b);
    assert_eq!(page.matches("<figure class=\"plot\"").count(), 6);
    assert!(!page.contains("plot failed"), "a plot failed to draw");
    // Self-contained: nothing fetched (the only URLs are SVG namespace declarations).
    assert!(!page.contains("src=") && !page.contains("href=\"http") && !page.contains("url("));
    assert!(page.contains("Report &lt;test&gt;"));

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: chromium is missing and could not be installed"
        );
        eprintln!("skipping the browser check: no chromium");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(&file, &page).unwrap();
    assert_renders(&browser, &file, 6);

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
    let d = Drift::compare(&reference, &batch, 0.15, 10);
    assert!(d.flagged > 0);
    let drift = dir.path().join("monitor.html");
    std::fs::write(&drift, html::render_drift("Monitoring", &d, "table")).unwrap();
    assert_renders(&browser, &drift, 1);
}

fn assert_renders(browser: &std::path::Path, file: &std::path::Path, plots: usize) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(&format!("rendered {plots}/{plots}")),
        "{}: chromium {}\n{}",
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dom.matches("data-rendered=\"yes\"").count(), plots);
}
