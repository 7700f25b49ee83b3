//! Operator safety through the `cohort` binary: nothing is overwritten or shared by surprise, usage mistakes are
//! refused up front, and output redirected to a file carries no terminal colour codes.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

#[cfg(unix)]
#[test]
fn a_ca_key_readable_by_others_is_refused_by_pki_issue() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    ok(&mut pki_init(&ca));
    let key = ca.join("ca-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = pki_issue(&ca, "hospital-a", "client", &dir.path().join("node")).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("{} has mode 0644", key.display())), "{said}");
    assert!(said.contains(&format!("chmod 600 {}", key.display())), "{said}");
}

/// A coordinator config for a federation whose PKI is in `dir` (made by [`federation_pki`]).
fn coordinator_config(dir: &Path, rounds: u64) -> std::path::PathBuf {
    let path = dir.join("coordinator.toml");
    std::fs::write(
        &path,
        format!(
            "federation_id = \"ops\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"registry\"\nroster = [\"hospital-a\"]\n\
             [tls]\nca_cert = \"coordinator/ca.pem\"\ncert = \"coordinator/cert.pem\"\nkey = \"coordinator/key.pem\"\n\
             [schema]\nlabel = \"y\"\ntask = \"binary\"\nfeatures = [\"x\"]\n\
             [training]\nrounds = {rounds}\nmin_clients = 1\n"
        ),
    )
    .unwrap();
    path
}

fn federation_pki(dir: &Path) {
    ok(&mut pki_init(&dir.join("ca")));
    ok(&mut pki_issue(&dir.join("ca"), "coordinator", "coordinator", &dir.join("coordinator")));
}

/// Kills a child when dropped, so a failed assertion leaves no coordinator running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cohort coordinator --config CONFIG` and waits until it holds the data directory's lock (its PID is in
/// `DATA/.lock`) and listens.
fn start_coordinator(config: &Path, data: &Path, log: &Path) -> Running {
    let child = cohort()
        .arg("coordinator")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let pid = running.0.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let locked = std::fs::read_to_string(data.join(".lock")).is_ok_and(|t| t.trim() == pid);
        let listening = std::fs::read_to_string(log).is_ok_and(|t| t.contains("listening on"));
        if locked && listening {
            return running;
        }
        if let Some(status) = running.0.try_wait().unwrap() {
            panic!("the coordinator exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "the coordinator did not start: {}", std::fs::read_to_string(log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_second_coordinator_on_the_same_data_dir_fails_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    federation_pki(d);
    let config = coordinator_config(d, 5);
    let data = d.join("registry");
    let first = start_coordinator(&config, &data, &d.join("first.log"));

    let started = Instant::now();
    let second = cohort().arg("coordinator").arg("--config").arg(&config).output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "the second coordinator waited");
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains(&format!("the data directory {} is in use", data.display())), "{said}");
    assert!(said.contains(&format!("PID {}", first.0.id())), "{said}");
    assert!(!said.contains("listening on"), "the second coordinator got as far as listening: {said}");

    // The lock goes with its process, however it ends: after SIGKILL a new coordinator starts.
    drop(first);
    let restarted = start_coordinator(&config, &data, &d.join("restarted.log"));
    drop(restarted);
}

#[test]
fn a_client_and_a_demo_refuse_a_data_dir_locked_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // This test process holds both locks; the binary is the second process.
    let client_data = d.join("client-data");
    let _held = cohort_core::lock::DirLock::acquire(&client_data).unwrap();
    let pid = std::process::id();
    ok(&mut pki_init(&d.join("ca")));
    ok(&mut pki_issue(&d.join("ca"), "hospital-a", "client", &d.join("hospital-a")));
    std::fs::write(d.join("a.csv"), "x,y\n1,0\n2,1\n").unwrap();
    let config = d.join("client.toml");
    std::fs::write(
        &config,
        "name = \"hospital-a\"\nfederation_id = \"ops\"\ndata_dir = \"client-data\"\n\
         [coordinator]\nurl = \"https://127.0.0.1:9\"\nserver_name = \"localhost\"\n\
         [tls]\nca_cert = \"hospital-a/ca.pem\"\ncert = \"hospital-a/cert.pem\"\nkey = \"hospital-a/key.pem\"\n\
         [data]\npath = \"a.csv\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = cohort().arg("client").arg("--config").arg(&config).output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "the client waited");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("the data directory {} is in use", client_data.display())), "{said}");
    assert!(said.contains(&format!("PID {pid}")), "{said}");
    assert!(!client_data.join("ledger.sqlite").exists(), "the refused client touched the data directory");

    let demo_data = d.join("demo");
    let _demo = cohort_core::lock::DirLock::acquire(&demo_data).unwrap();
    let out = cohort().args(["demo", "--rounds", "1", "--data-dir"]).arg(&demo_data).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    let canonical = demo_data.canonicalize().unwrap();
    assert!(said.contains(&format!("the data directory {} is in use", canonical.display())), "{said}");
    assert!(said.contains(&format!("PID {pid}")), "{said}");
    assert!(!demo_data.join("pki").exists(), "the refused demo touched the data directory");
}

#[test]
fn zero_rounds_are_refused_by_the_demo_and_by_a_coordinator_config() {
    let out = cohort().args(["demo", "--rounds", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--rounds") && said.contains("0 is not in 1.."), "{said}");

    let dir = tempfile::tempdir().unwrap();
    let config = coordinator_config(dir.path(), 0);
    let out = cohort().arg("coordinator").arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("training.rounds = 0") && said.contains("at least 1"), "{said}");
    assert!(!dir.path().join("registry").exists(), "a refused config touched the data directory");
}

#[test]
fn help_documents_the_exit_codes() {
    let out = ok(cohort().arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    for line in ["  0  success", "  1  failure", "  2  usage error"] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
    // And the codes are the ones the binary returns: 2 for a usage error, 1 for a failure.
    assert_eq!(cohort().arg("--no-such-option").output().unwrap().status.code(), Some(2));
    let missing = cohort().args(["coordinator", "--config", "/nonexistent/cohort.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    // stderr is a pipe here, as in a log file or a service manager.
    let out = cohort()
        .args(["-v", "demo", "--rounds", "1", "--no-dp", "--secure-aggregation", "none", "--data-dir"])
        .arg(dir.path())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The run did log (at info level), so the absence of escapes is meaningful.
    assert!(stderr.contains("INFO") && stderr.contains("node joined"), "{stderr}");
    assert!(!stderr.contains("\x1b["), "ANSI escape codes in redirected stderr:\n{stderr:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\x1b["), "ANSI escape codes in redirected stdout");
}
