//! `ledgerlink demo --once` as a newcomer runs it: the scenario ends with one invoice per closed opportunity,
//! totals equal to the deals, and a last stdout line that is one JSON summary.

use std::process::Command;

#[test]
fn demo_once_invoices_every_closed_opportunity_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
        .args(["demo", "--once", "--port", "0", "--opportunities", "25", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run ledgerlink demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {}\n{stderr}", out.status);
    let last = stdout.lines().last().expect("a summary line");
    let s: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    assert_eq!(s["opportunities_closed"], 25, "{s}");
    assert_eq!(s["invoices_created"], 25, "{s}");
    assert_eq!(s["duplicate_invoices"], 0, "{s}");
    assert_eq!(s["amount_mismatches"], 0, "{s}");
    assert_eq!(s["missing_invoices"], 0, "{s}");
    assert_eq!(s["errors"], 0, "{s}\n{stderr}");
    // Three accounts by name and one by its contact's email are already QuickBooks customers.
    assert_eq!(s["customers_matched"], 4, "{s}");
    assert_eq!(s["customers_created"], 7, "{s}");
    assert!(s["duplicates_prevented"].as_u64().unwrap() >= 1, "the re-closed deal was not billed twice: {s}");
    assert!(stderr.contains("summary"), "a readable summary is printed");
    assert_eq!(s["template_checks_failed"], 0, "{s}");
    let mut exercised: std::collections::BTreeSet<&str> =
        s["template_checks"].as_array().unwrap().iter().filter(|c| c["ok"] == true).filter_map(|c| c["template"].as_str()).collect();
    // The closed-won template is the invoices counted above.
    exercised.insert("salesforce-closed-won-to-quickbooks-invoice");
    let shipped: std::collections::BTreeSet<&str> = ledgerlink_engine::templates::names().into_iter().collect();
    assert_eq!(exercised, shipped, "every shipped template's act is seen in the other system: {s}");
    assert!(stderr.contains("admin UI on http://"), "the demo serves the admin UI and says where");
}

/// `ledgerlink demo` (kept serving) prints a one-time link that opens the admin UI signed in as the demo admin,
/// with the banner and the connected sandbox company; the link does not work a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_link_opens_the_ui_signed_in_as_the_demo_admin() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledgerlink"))
        .args(["demo", "--port", "0", "--opportunities", "2", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ledgerlink demo");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("/demo-sign-in?token=").and_then(|end| line[..end].rfind("http://")) {
                let link: String = line[at..].split_whitespace().next().unwrap().to_string();
                let _ = tx.send(link);
            }
        }
    });
    let link = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("the demo prints a sign-in link");
    let base = link[..link.find("/demo-sign-in").unwrap()].to_string();
    ledgerlink_connectors::http::install_crypto_provider();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let signed = http.get(&link).send().await.unwrap();
    assert_eq!(signed.status(), 303);
    assert_eq!(signed.headers()["location"], "/settings/integrations");
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let page = http.get(format!("{base}/settings/integrations")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("Demo: you are the demo admin"), "the banner says so: {body}");
    assert!(body.contains("<strong>Connected</strong>"), "a connected sandbox company to click through: {body}");
    // The page behind Manage works with the workspace's own sign-in.
    let manage = http.get(format!("{base}/settings/integrations/quickbooks")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(manage.status(), 200);

    let again = http.get(&link).send().await.unwrap();
    assert_eq!(again.status(), 403, "a sign-in link works once");
    child.kill().unwrap();
    let _ = child.wait();
}
