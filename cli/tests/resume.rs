//! Kill the coordinator with SIGKILL mid-run and restart it with the same config: it resumes from the last
//! completed round, the clients (running DP-SGD) reconnect, and no registry version or ledger record is lost or
//! duplicated.

use std::path::Path;
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

fn spawn(args: &[&str], config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    cohort().args(args).arg("--config").arg(config).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

#[test]
fn a_killed_coordinator_resumes_from_the_last_completed_round() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(cohort().args(["pki", "init", "--federation", "resume", "--out"]).arg(d.join("ca")));
    ok(cohort()
        .args(["pki", "issue", "--name", "coordinator", "--role", "coordinator", "--san", "localhost", "--ca"])
        .arg(d.join("ca"))
        .arg("--out")
        .arg(d.join("coordinator")));
    let data =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/breast_cancer.csv"))
            .unwrap();
    let mut lines = data.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let features: Vec<String> = header.split(',').filter(|h| *h != "malignant").map(|h| format!("{h:?}")).collect();
    // DP-SGD needs declared feature bounds: the published data's ranges, widened by 10%.
    let schema = cohort_core::config::Schema {
        features: header.split(',').filter(|h| *h != "malignant").map(str::to_owned).collect(),
        label: "malignant".into(),
        task: cohort_core::model::TaskKind::Binary,
        classes: None,
        bounds: None,
        label_bounds: None,
    };
    let published = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/breast_cancer.csv");
    let bounds = cohort_core::data::load_csv(&published, &schema).unwrap().widened_ranges(0.1);
    let bounds: Vec<String> = bounds.iter().map(|[lo, hi]| format!("[{lo}, {hi}]")).collect();
    let port = free_port();
    let rounds = 8;
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
    for (i, name) in ["a", "b"].iter().enumerate() {
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

    let registry = d.join("registry");
    let mut coordinator = spawn(&["coordinator"], &d.join("coordinator.toml"), &d.join("coordinator-1.log"));
    let mut clients: Vec<Child> = ["a", "b"]
        .iter()
        .map(|n| spawn(&["client"], &d.join(format!("{n}.toml")), &d.join(format!("{n}.log"))))
        .collect();

    // Let at least two rounds complete, then kill the coordinator without warning.
    let start = Instant::now();
    while versions(&registry).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {}",
            std::fs::read_to_string(d.join("coordinator-1.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    coordinator.kill().unwrap(); // SIGKILL
    coordinator.wait().unwrap();
    let before = versions(&registry).len();
    assert!(before < rounds, "the run finished before it could be killed");

    let mut restarted = spawn(&["coordinator"], &d.join("coordinator.toml"), &d.join("coordinator-2.log"));
    let status = restarted.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(d.join("coordinator-2.log")).unwrap());
    for c in &mut clients {
        assert!(c.wait().unwrap().success());
    }
    let log = std::fs::read_to_string(d.join("coordinator-2.log")).unwrap();
    let all = versions(&registry);
    let rounds_seen: Vec<u64> = all.iter().map(|v| v["round"].as_u64().unwrap()).collect();
    assert_eq!(rounds_seen, (1..=rounds as u64).collect::<Vec<_>>(), "{log}");
    let numbers: Vec<u64> = all.iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=rounds as u64).collect::<Vec<_>>());
    // Lineage is unbroken across the restart.
    for pair in all.windows(2) {
        assert_eq!(pair[1]["parent"], pair[0]["version"]);
    }

    // The coordinator's copy of each node's ledger holds exactly the node's own records: records sent to the
    // killed coordinator are resent, none twice. And the whole copy verifies.
    // The hashes of a data directory's exported ledger, of one node's records or of all.
    let hashes = |node: Option<&str>, data_dir: &Path| -> Vec<String> {
        let out_file = d.join("export.jsonl");
        ok(cohort().args(["audit", "export", "--data-dir"]).arg(data_dir).arg("--out").arg(&out_file));
        let text = std::fs::read_to_string(&out_file).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| node.is_none_or(|n| r["node"] == n))
            .map(|r| r["hash"].as_str().unwrap().to_owned())
            .collect()
    };
    for name in ["a", "b"] {
        let own = hashes(None, &d.join(format!("{name}-data")));
        let copy = hashes(Some(name), &registry);
        assert!(own.len() >= 2 + rounds, "node {name} has {} records", own.len());
        assert_eq!(copy, own, "the coordinator's copy of {name}'s ledger differs from the node's own");
    }
    ok(cohort().args(["audit", "verify", "--data-dir"]).arg(&registry));
}
