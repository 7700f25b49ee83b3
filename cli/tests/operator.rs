//! Operator safety through the `cohort` binary: nothing is overwritten or shared by surprise, usage mistakes are
//! refused up front, and output redirected to a file carries no terminal colour codes.

use std::path::Path;
use std::process::{Command, Output};

fn cohort() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out
}

fn pki_init(ca: &Path) -> Command {
    let mut cmd = cohort();
    cmd.args(["pki", "init", "--federation", "ops", "--out"]).arg(ca);
    cmd
}

fn pki_issue(ca: &Path, name: &str, role: &str, out: &Path) -> Command {
    let mut cmd = cohort();
    cmd.args(["pki", "issue", "--name", name, "--role", role, "--san", "localhost", "--ca"])
        .arg(ca)
        .arg("--out")
        .arg(out);
    cmd
}

#[test]
fn pki_init_and_issue_refuse_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ok(&mut pki_init(&ca));
    let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();
    let ca_key = std::fs::read(ca.join("ca-key.pem")).unwrap();

    let again = pki_init(&ca).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains(&format!("{} already exists", ca.join("ca.pem").display())), "{said}");
    assert!(
        said.contains("every certificate the existing one issued stop working") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), ca_pem, "the CA certificate was replaced");
    assert_eq!(std::fs::read(ca.join("ca-key.pem")).unwrap(), ca_key, "the CA key was replaced");

    let node = dir.path().join("hospital-a");
    ok(&mut pki_issue(&ca, "hospital-a", "client", &node));
    let key = std::fs::read(node.join("key.pem")).unwrap();
    let again = pki_issue(&ca, "hospital-a", "client", &node).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains(&format!("{} already exists", node.join("cert.pem").display())), "{said}");
    assert!(said.contains("--force"), "{said}");
    assert_eq!(std::fs::read(node.join("key.pem")).unwrap(), key, "the node key was replaced");

    // With --force both are replaced, and the new node certificate chains to the new CA.
    ok(pki_issue(&ca, "hospital-a", "client", &node).arg("--force"));
    assert_ne!(std::fs::read(node.join("key.pem")).unwrap(), key);
    ok(pki_init(&ca).arg("--force"));
    assert_ne!(std::fs::read(ca.join("ca.pem")).unwrap(), ca_pem);
}
