//! Headless Chromium, driven by small playwright-core scripts in `tests/browser/`.
//!
//! The scripts need Node.js, Debian's `chromium` and `npm ci --prefix tests/browser`. Where they
//! are missing the browser tests are skipped with a message, unless `CONSENT_REQUIRE_BROWSER=1`
//! (set by `.ci/run`), in which case they fail.

use std::path::PathBuf;
use std::process::Command;

fn browser_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/browser"))
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Why the browser tests cannot run here, if they cannot.
pub fn unavailable_reason() -> Option<String> {
    if !std::path::Path::new(&chromium()).exists() {
        return Some(format!(
            "{} not found (apt-get install chromium)",
            chromium()
        ));
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some("playwright-core not installed (npm ci --prefix tests/browser)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node not found".into());
    }
    None
}

/// Runs `tests/browser/<script>` with `args`; returns its JSON result, or `None` when the browser
/// tests are skipped. Panics with the script's output when it fails.
pub async fn run(script: &str, args: &[&str]) -> Option<serde_json::Value> {
    if let Some(reason) = unavailable_reason() {
        assert!(
            std::env::var("CONSENT_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "CONSENT_REQUIRE_BROWSER=1 but {reason}"
        );
        eprintln!("skipping browser test {script}: {reason}");
        return None;
    }
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(browser_dir().join(script))
        .args(args)
        .current_dir(browser_dir());
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), cmd.output())
        .await
        .expect("browser script finished within 90 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    Some(
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}")),
    )
}

/// Where a browser test saves its screenshot of `name`. With `CONSENT_UPDATE_SCREENSHOTS=1`, the
/// SQLite run writes `docs/screenshots/<name>.png`, the pictures the README shows (so they are
/// regenerated from the pages as they are, never drawn by hand); otherwise a temporary file,
/// so the screenshot code still runs.
pub fn screenshot_path(name: &str, backend: crate::Backend) -> PathBuf {
    if backend == crate::Backend::Sqlite
        && std::env::var("CONSENT_UPDATE_SCREENSHOTS").as_deref() == Ok("1")
    {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/screenshots"));
        std::fs::create_dir_all(&dir).expect("docs/screenshots");
        return dir.join(format!("{name}.png"));
    }
    std::env::temp_dir().join(format!("{name}-{backend:?}-{}.png", std::process::id()))
}

/// Whether the browser tests can run here; `false` (with a message) when they are skipped.
/// Panics under `CONSENT_REQUIRE_BROWSER=1` when they cannot run, as [`run`] does.
pub fn available(test: &str) -> bool {
    match unavailable_reason() {
        None => true,
        Some(reason) => {
            assert!(
                std::env::var("CONSENT_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "CONSENT_REQUIRE_BROWSER=1 but {reason}"
            );
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// Starts `node tests/browser/<script> args...` in the background (killed when dropped) and
/// waits, at most 30 s, for a line of its output that contains `ready`.
pub async fn start_node(script: &str, args: &[&str]) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .current_dir(browser_dir())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("ready") {
                return;
            }
        }
        panic!("{script} exited before it was ready");
    })
    .await
    .unwrap_or_else(|_| panic!("{script} not ready within 30 s"));
    // Keep draining its output so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}
