//! Crash safety with real processes: kill the coordinator with SIGKILL mid-run and restart it with the same
//! config, or (as a seeded property loop) kill the coordinator and the clients at random moments and restart
//! each. Every time the run completes, versions are contiguous with no duplicates and an unbroken lineage, the
//! coordinator's copy of each node's ledger equals the node's own, and `audit verify` passes on every data
//! directory.

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cohort() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn versions(dir: &Path) -> Vec<serde_json::Value> {
    let out = cohort().args(["models", "list", "--json", "--data-dir"]).arg(dir).output().unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

const NODES: [&str; 2] = ["a", "b"];

/// A two-hospital DP federation on loopback mutual TLS, written under a temporary directory: PKI, configs, data.
struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    registry: PathBuf,
    rounds: usize,
    logs: usize,
}

impl Lab {
    fn new(rounds: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        ok(cohort().args(["pki", "init", "--federation", "resume", "--out"]).arg(d.join("ca")));
        ok(cohort()
            .args(["pki", "issue", "--name", "coordinator", "--role", "coordinator", "--san", "localhost", "--ca"])
            .arg(d.join("ca"))
            .arg("--out")
            .arg(d.join("coordinator")));
        let published = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/breast_cancer.csv");
        let data = std::fs::read_to_string(&published).unwrap();
        let mut lines = data.lines();
        let header = lines.next().unwrap();
        let rows: Vec<&str> = lines.collect();
        let names: Vec<String> = header.split(',').filter(|h| *h != "malignant").map(str::to_owned).collect();
        // DP-SGD needs declared feature bounds: the published data's ranges, widened by 10%.
        let schema = cohort_core::config::Schema {
            features: names.clone(),
            label: "malignant".into(),
            task: cohort_core::model::TaskKind::Binary,
            classes: None,
            bounds: None,
            label_bounds: None,
        };
        let bounds = cohort_core::data::load_csv(&published, &schema).unwrap().widened_ranges(0.1);
        let bounds: Vec<String> = bounds.iter().map(|[lo, hi]| format!("[{lo}, {hi}]")).collect();
        let features: Vec<String> = names.iter().map(|h| format!("{h:?}")).collect();
        let port = free_port();
        std::fs::write(
            d.join("coordinator.toml"),
            format!(
                "federation_id = \"resume\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"registry\"\nroster = [\"a\", \"b\"]\n\
                 [tls]\nca_cert = \"coordinator/ca.pem\"\ncert = \"coordinator/cert.pem\"\nkey = \"coordinator/key.pem\"\n\
                 [schema]\nlabel = \"malignant\"\ntask = \"binary\"\nfeatures = [{}]\nbounds = [{}]\n\
                 [model]\nname = \"bc\"\nhidden = [8]\n[training]\nrounds = {rounds}\nlocal_epochs = 3\nbatch_size = 4\nmin_clients = 2\nround_deadline_secs = 30\n",
                features.join(", "),
                bounds.join(", ")
            ),
        )
        .unwrap();
        for (i, name) in NODES.iter().enumerate() {
            ok(cohort()
                .args(["pki", "issue", "--name", name, "--role", "client", "--ca"])
                .arg(d.join("ca"))
                .arg("--out")
                .arg(d.join(name)));
            let part: Vec<&str> = rows.iter().enumerate().filter(|(j, _)| j % 2 == i).map(|(_, r)| *r).collect();
            std::fs::write(d.join(format!("{name}.csv")), format!("{header}\n{}\n", part.join("\n"))).unwrap();
            std::fs::write(
                d.join(format!("{name}.toml")),
                format!(
                    "name = \"{name}\"\nfederation_id = \"resume\"\ndata_dir = \"{name}-data\"\n\
                     [coordinator]\nurl = \"https://127.0.0.1:{port}\"\nserver_name = \"localhost\"\n\
                     [tls]\nca_cert = \"{name}/ca.pem\"\ncert = \"{name}/cert.pem\"\nkey = \"{name}/key.pem\"\n\
                     [data]\npath = \"{name}.csv\"\n[privacy]\nepsilon_budget = 10.0\ntarget_epsilon = 3.0\n\
                     [secure_aggregation]\nrequired = false\n"
                ),
            )
            .unwrap();
        }
        Self { registry: d.join("registry"), root: d, _dir: dir, rounds, logs: 0 }
    }

    /// Starts `role` (`coordinator`, or a node's name) with a fresh log file; returns the process and its log.
    fn start(&mut self, role: &str) -> (Child, PathBuf) {
        self.logs += 1;
        let log = self.root.join(format!("{role}-{}.log", self.logs));
        let (command, config) = match role {
            "coordinator" => ("coordinator", self.root.join("coordinator.toml")),
            node => ("client", self.root.join(format!("{node}.toml"))),
        };
        let file = std::fs::File::create(&log).unwrap();
        let child =
            cohort().arg(command).arg("--config").arg(config).stdout(Stdio::null()).stderr(file).spawn().unwrap();
        (child, log)
    }

    /// Starts the coordinator and both clients and waits until `versions` versions are registered; returns the
    /// coordinator with its log, and the clients with theirs.
    fn run_until(&mut self, versions_wanted: usize) -> ((Child, PathBuf), Vec<(Child, PathBuf)>) {
        let (coordinator, log) = self.start("coordinator");
        let clients = NODES.iter().map(|n| self.start(n)).collect();
        let start = Instant::now();
        while versions(&self.registry).len() < versions_wanted {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no progress: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ((coordinator, log), clients)
    }

    /// Restarts the coordinator after it was stopped, lets the run finish, and checks it.
    fn resume_and_check(&mut self, clients: &mut [(Child, PathBuf)]) {
        let (mut restarted, log) = self.start("coordinator");
        Lab::succeeds(&mut restarted, &log);
        for (c, log) in clients {
            Lab::succeeds(c, log);
        }
        self.check_complete();
    }

    /// Waits for `child` and asserts it succeeded, showing its log otherwise.
    fn succeeds(child: &mut Child, log: &Path) {
        let status = child.wait().unwrap();
        assert!(status.success(), "{} exited {status}: {}", log.display(), std::fs::read_to_string(log).unwrap());
    }

    /// What must hold once the run has completed: every round registered once, in order, with an unbroken
    /// lineage; the coordinator's copy of each node's ledger equals the node's own (records sent to a killed
    /// process are resent, none twice); and `audit verify` passes on the registry and on every node.
    fn check_complete(&self) {
        let all = versions(&self.registry);
        let rounds_seen: Vec<u64> = all.iter().map(|v| v["round"].as_u64().unwrap()).collect();
        assert_eq!(rounds_seen, (1..=self.rounds as u64).collect::<Vec<_>>());
        let numbers: Vec<u64> = all.iter().map(|v| v["version"].as_u64().unwrap()).collect();
        assert_eq!(numbers, (1..=self.rounds as u64).collect::<Vec<_>>());
        for pair in all.windows(2) {
            assert_eq!(pair[1]["parent"], pair[0]["version"]);
        }
        // The hashes of a data directory's exported ledger, of one node's records or of all.
        let hashes = |node: Option<&str>, data_dir: &Path| -> Vec<String> {
            let out_file = self.root.join("export.jsonl");
            ok(cohort().args(["audit", "export", "--data-dir"]).arg(data_dir).arg("--out").arg(&out_file));
            let text = std::fs::read_to_string(&out_file).unwrap();
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|r| node.is_none_or(|n| r["node"] == n))
                .map(|r| r["hash"].as_str().unwrap().to_owned())
                .collect()
        };
        for name in NODES {
            let own_dir = self.root.join(format!("{name}-data"));
            let own = hashes(None, &own_dir);
            let copy = hashes(Some(name), &self.registry);
            assert!(own.len() >= 2 + self.rounds, "node {name} has {} records", own.len());
            assert_eq!(copy, own, "the coordinator's copy of {name}'s ledger differs from the node's own");
            ok(cohort().args(["audit", "verify", "--data-dir"]).arg(&own_dir));
        }
        ok(cohort().args(["audit", "verify", "--data-dir"]).arg(&self.registry));
    }
}

#[test]
fn a_killed_coordinator_resumes_from_the_last_completed_round() {
    let rounds = 8;
    let mut lab = Lab::new(rounds);
    // Let at least two rounds complete, then kill the coordinator without warning.
    let ((mut coordinator, _), mut clients) = lab.run_until(2);
    coordinator.kill().unwrap(); // SIGKILL
    coordinator.wait().unwrap();
    let before = versions(&lab.registry).len();
    assert!(before < rounds, "the run finished before it could be killed");
    lab.resume_and_check(&mut clients);
}

/// Ctrl-C (SIGINT) of the coordinator mid-run: it abandons the round in progress, says which version the registry
/// holds, exits 130, and a restart resumes; the clients survive it.
#[test]
fn sigint_leaves_a_consistent_registry_the_clients_survive_and_a_restart_resumes() {
    let mut lab = Lab::new(8);
    let ((mut coordinator, log), mut clients) = lab.run_until(2);
    ok(Command::new("kill").args(["-INT", &coordinator.id().to_string()]));
    let status = coordinator.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{text}");
    let registered = versions(&lab.registry);
    let last = registered.last().unwrap()["version"].as_u64().unwrap();
    assert!(
        text.contains("interrupted") && text.contains(&format!("holds version v{last} ")) && text.contains("resume"),
        "{text}"
    );
    assert!(!text.contains("federation finished"), "{text}");
    lab.resume_and_check(&mut clients);
}

/// Kills a process (the coordinator or a client) at a seeded random moment after each new registered version,
/// `kills` times, restarting it each time; then checks the completed run. The first three kills take the three
/// processes in a seeded order, so each is killed at least once; later ones pick at random. Returns the kill
/// points, as `(process, versions registered when killed, delay after the last new version in ms)`.
fn kill_loop(kills: usize, rounds: usize, seed: u64) -> Vec<(String, usize, u64)> {
    use rand::seq::SliceRandom;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut lab = Lab::new(rounds);
    let roles = ["coordinator", NODES[0], NODES[1]];
    let mut order = [0, 1, 2];
    order.shuffle(&mut rng);
    let mut running: Vec<(Child, PathBuf)> = roles.iter().map(|r| lab.start(r)).collect();
    let mut points = Vec::new();
    let mut seen = 0;
    let start = Instant::now();
    while points.len() < kills {
        // A kill lands somewhere in the round after a new version: training, evaluation or registration.
        while versions(&lab.registry).len() <= seen && running[0].0.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60 * kills as u64),
                "no progress after {points:?}: {}",
                std::fs::read_to_string(&running[0].1).unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let delay = rng.random_range(0..1200);
        std::thread::sleep(Duration::from_millis(delay));
        // Stop killing before the last round: a client restarted after the coordinator finished has no one to
        // finish with.
        let registered = versions(&lab.registry).len();
        if registered + 1 >= rounds || running[0].0.try_wait().unwrap().is_some() {
            break;
        }
        let which = order.get(points.len()).copied().unwrap_or_else(|| rng.random_range(0..roles.len()));
        let (child, _) = &mut running[which];
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        points.push((roles[which].to_owned(), registered, delay));
        running[which] = lab.start(roles[which]);
        seen = registered;
    }
    for (child, log) in &mut running {
        Lab::succeeds(child, log);
    }
    lab.check_complete();
    points
}

#[test]
fn a_seeded_kill_loop_of_coordinator_and_clients_loses_nothing() {
    let points = kill_loop(5, 16, 1);
    eprintln!("kill points (process, versions registered, delay ms): {points:?}");
    assert_eq!(points.len(), 5, "the run ended before every kill: {points:?}");
}

#[test]
#[ignore = "long: up to 30 kills over a 60-round run (about a minute here)"]
fn a_long_seeded_kill_loop_loses_nothing() {
    let points = kill_loop(30, 60, 2);
    eprintln!("kill points (process, versions registered, delay ms): {points:?}");
}
