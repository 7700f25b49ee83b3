//! `cohort audit`: export, verify and report the privacy ledger of a data directory.
//!
//! A data directory is either a client node's (its own ledger, `ledger.sqlite`, signed with its key) or a
//! coordinator's (its copy of every node's signed records, `ledgers/<node>.jsonl`, plus the registry that
//! says which clients went into each model version).

use crate::args::{AuditCommand, ReportFormatArg};
use crate::report::{self, ReportFormat};
use anyhow::{Context, bail};
use cohort_client::ledger::Ledger;
use cohort_coordinator::audit::{self, AuditVerdict, VersionPrivacy};
use cohort_coordinator::recorder::LEDGER_COPIES_DIR;
use cohort_coordinator::registry::Registry;
use cohort_core::ledger::{self, LedgerRecord};
use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// The records of a data directory and, for a client's own ledger, the one signer they must carry.
struct DirLedger {
    records: Vec<LedgerRecord>,
    trusted: Option<Vec<String>>,
    kind: &'static str,
}

fn read_dir_ledger(dir: &Path) -> anyhow::Result<DirLedger> {
    if dir.join(ledger::LEDGER_DB_FILE).exists() && dir.join(ledger::SIGNING_KEY_FILE).exists() {
        let ledger = Ledger::open(dir).with_context(|| format!("reading the node ledger in {}", dir.display()))?;
        // Read afresh from the store, so a tampered row is reported rather than hidden by the cache.
        let mut lines = Vec::new();
        ledger.export_jsonl(&mut lines)?;
        let records = ledger::read_jsonl(lines.as_slice())?;
        return Ok(DirLedger { records, trusted: Some(vec![ledger.public_key()]), kind: "client node ledger" });
    }
    let copies = dir.join(LEDGER_COPIES_DIR);
    if copies.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&copies)
            .with_context(|| format!("listing {}", copies.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        let mut records = Vec::new();
        for path in files {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            records
                .extend(ledger::read_jsonl(std::io::BufReader::new(file)).with_context(|| path.display().to_string())?);
        }
        return Ok(DirLedger { records, trusted: None, kind: "coordinator's copy of the node ledgers" });
    }
    bail!(
        "no privacy ledger in {}: expected {} (a client node's data directory) or {}/ (a coordinator's, or `cohort demo`'s)",
        dir.display(),
        ledger::LEDGER_DB_FILE,
        LEDGER_COPIES_DIR
    )
}

/// The ledger keys (hex) that the nodes of a coordinator's data directory bound to certificates of the federation
/// CA in `ca`: each stored binding is checked (chain, validity now, name, client role, signature); one that does
/// not verify is an error naming the node.
fn bound_signers(dir: &Path, ca: &Path) -> anyhow::Result<Vec<String>> {
    use cohort_coordinator::recorder::{BINDING_SUFFIX, StoredBinding};
    use cohort_core::binding::{FederationTrust, UnixTime};
    let trust = FederationTrust::load(ca)?;
    let copies = dir.join(LEDGER_COPIES_DIR);
    let mut signers = Vec::new();
    for entry in std::fs::read_dir(&copies).with_context(|| format!("listing {}", copies.display()))? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(BINDING_SUFFIX) {
            continue;
        }
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let stored: StoredBinding =
            serde_json::from_slice(&text).with_context(|| format!("{}: not a key binding", path.display()))?;
        let node = stored.binding.node.clone();
        trust
            .verify_binding(&stored.binding, &stored.federation, &node, cohort_core::pki::Role::Client, UnixTime::now())
            .with_context(|| {
                format!("{}: the key binding of {node} does not verify against {}", path.display(), ca.display())
            })?;
        match stored.binding.keys.ledger_ed25519 {
            Some(key) => signers.push(hex::encode(key)),
            None => eprintln!("note: {node} bound no ledger key (it runs without DP)"),
        }
    }
    Ok(signers)
}

/// Per model version, the clients that trained it and their cumulative ε then, from the registry (if any).
fn version_privacy(dir: &Path) -> anyhow::Result<Vec<VersionPrivacy>> {
    if !dir.join(cohort_coordinator::registry::DB_FILE).exists() {
        return Ok(Vec::new());
    }
    let registry = Registry::open(dir).with_context(|| format!("opening the registry in {}", dir.display()))?;
    Ok(registry
        .list(None)?
        .into_iter()
        .map(|v| VersionPrivacy {
            name: v.name,
            version: v.version.0,
            round: v.round.0,
            clients: v.clients.iter().map(|c| (c.clone(), v.privacy.get(c).map_or(0.0, |p| p.epsilon))).collect(),
        })
        .collect())
}

fn print_verdict(verdict: &AuditVerdict, source: &str, json: bool) {
    if json {
        println!("{}", serde_json::to_string(verdict).unwrap_or_default());
        return;
    }
    println!(
        "{source}: {} records, {} node(s), accountant {}",
        verdict.records,
        verdict.nodes.len(),
        verdict.accountant
    );
    for n in &verdict.nodes {
        let recomputed = n.recomputed_epsilon.map_or_else(|| "-".to_owned(), |e| format!("{e:.6}"));
        println!(
            "  {:<16} {:>4} records  recorded ε {:.6}  recomputed ε {recomputed}  δ {:e}  {}",
            n.node,
            n.records,
            n.recorded_epsilon,
            n.delta,
            if n.verified { "ok" } else { "NOT VERIFIED" }
        );
    }
    for w in &verdict.warnings {
        println!("  warning: {w}");
    }
    match &verdict.failure {
        None => println!("verified: every hash, link and signature is valid and every cumulative ε recomputes"),
        Some(f) => println!("FAILED: {f}"),
    }
}

pub(crate) fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Export { data_dir, out } => {
            let dir = read_dir_ledger(&data_dir)?;
            let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let n = ledger::write_jsonl(&dir.records, BufWriter::new(file))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("exported {n} records ({}) to {}", dir.kind, out.display());
        }
        AuditCommand::Verify { file, data_dir, ca, json } => {
            let (records, mut verdict, source) = match (file, &data_dir) {
                (Some(path), _) => {
                    let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                    let (records, verdict) = audit::verify_jsonl(std::io::BufReader::new(f), None);
                    (records, verdict, path.display().to_string())
                }
                (None, Some(dir)) => {
                    let mut ledger = read_dir_ledger(dir)?;
                    if let (Some(ca), None) = (&ca, &ledger.trusted) {
                        ledger.trusted = Some(bound_signers(dir, ca)?);
                    } else if ledger.trusted.is_none() {
                        eprintln!(
                            "note: each node's ledger signer is trusted on first use; pass --ca FEDERATION-CA.pem to \
                             check every signer against the key the node bound to its certificate"
                        );
                    }
                    let verdict = audit::verify_records_with(&ledger.records, ledger.trusted.as_deref());
                    (ledger.records, verdict, format!("{} ({})", dir.display(), ledger.kind))
                }
                (None, None) => bail!("give a ledger file (JSON Lines), --data-dir, or both"),
            };
            // The registry (if the data directory has one) anchors every chain's end.
            if let Some(dir) = &data_dir {
                audit::check_against_registry(&mut verdict, &records, &version_privacy(dir)?);
            }
            print_verdict(&verdict, &source, json);
            if let Some(f) = verdict.failure {
                bail!("the ledger does not verify: {f}");
            }
        }
        AuditCommand::Report { data_dir, format, out } => {
            let ledger = read_dir_ledger(&data_dir)?;
            let mut verdict = audit::verify_records_with(&ledger.records, ledger.trusted.as_deref());
            let versions = version_privacy(&data_dir)?;
            audit::check_against_registry(&mut verdict, &ledger.records, &versions);
            let format = match format {
                ReportFormatArg::Html => ReportFormat::Html,
                ReportFormatArg::Md => ReportFormat::Markdown,
                ReportFormatArg::Json => ReportFormat::Json,
            };
            let text = report::report(&ledger.records, &verdict, &BTreeMap::new(), &versions, format);
            let written = match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote the privacy report to {}", path.display());
                    path.display().to_string()
                }
                None => {
                    print!("{text}");
                    "standard output".to_owned()
                }
            };
            // The report is written either way (it is the evidence), and the exit status says it failed.
            if let Some(f) = &verdict.failure {
                bail!("the ledger does not verify: {f}. The report on {written} says so");
            }
        }
    }
    Ok(())
}
