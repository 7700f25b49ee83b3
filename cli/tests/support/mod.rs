//! What several CLI tests share: the binary, one DP demo run per test binary, and a headless-Chromium
//! screenshot of an HTML report.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `cohort` binary under test.
pub(crate) fn cohort() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
}

/// A command's stdout and stderr, for assertion messages.
pub(crate) fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// One DP demo run (3 rounds), shared by the tests of a test binary.
pub(crate) fn demo_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = cohort().args(["demo", "--rounds", "3", "--json", "--data-dir"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        dir
    })
    .path()
}

/// A screenshot (PNG bytes) of `html` rendered by headless Chromium, or None when Chromium is not installed
/// (the caller skips, saying so).
///
/// # Panics
/// When Chromium is installed but fails, or writes something that is not a PNG.
pub(crate) fn screenshot(html: &Path) -> Option<Vec<u8>> {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|b| PathBuf::from("/usr/bin").join(b))
        .find(|p| p.exists())
    else {
        eprintln!("SKIPPED: no Chromium in /usr/bin (install Debian's `chromium` to run the screenshot test)");
        return None;
    };
    let scratch = tempfile::tempdir().unwrap();
    let shot = scratch.path().join("report.png");
    let out = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600"])
        .arg(format!("--user-data-dir={}", scratch.path().join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    Some(png)
}
