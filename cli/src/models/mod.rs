//! `cohort models`: the versioned registry of a coordinator's data directory. Tables and text by default, JSON
//! with `--json`.

mod text;

use crate::args::ModelsCommand;
use anyhow::{Context, bail};
use cohort_coordinator::registry::{Registry, Version, VersionRecord};

/// Who records a promotion or a rollback: `--actor`, else `$USER`, else `$LOGNAME`. Never a made-up name: without
/// any of them the command is refused before the registry changes.
fn actor(actor: Option<String>) -> anyhow::Result<String> {
    let given = |name: String| {
        let name = name.trim().to_owned();
        (!name.is_empty()).then_some(name)
    };
    actor
        .and_then(given)
        .or_else(|| std::env::var("USER").ok().and_then(given))
        .or_else(|| std::env::var("LOGNAME").ok().and_then(given))
        .context(
            "cannot tell who is making this change: neither $USER nor $LOGNAME is set. Pass --actor NAME (it is \
             recorded in the registry with the reason)",
        )
}

/// The model name to use: the one given, or the only one in the registry.
fn resolve_name(registry: &Registry, name: Option<String>) -> anyhow::Result<String> {
    if let Some(name) = name {
        return Ok(name);
    }
    let mut names: Vec<String> = registry.list(None)?.into_iter().map(|r| r.name).collect();
    names.dedup();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("the registry in {} holds no model yet", registry.data_dir().display()),
        many => bail!("the registry holds several models ({}); pass --name", many.join(", ")),
    }
}

pub(crate) fn run(command: ModelsCommand) -> anyhow::Result<()> {
    let data_dir = command.data_dir();
    if !data_dir.join(cohort_coordinator::registry::DB_FILE).exists() {
        bail!("no registry in {}: pass the data directory of a coordinator (or of `cohort demo`)", data_dir.display());
    }
    let mut registry =
        Registry::open(data_dir).with_context(|| format!("opening the registry in {}", data_dir.display()))?;
    match command {
        ModelsCommand::List { name, json, .. } => {
            let versions = registry.list(name.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&versions)?);
            } else if versions.is_empty() {
                println!("no versions");
            } else {
                versions.iter().for_each(|r| println!("{}", text::line(r)));
            }
        }
        ModelsCommand::Show { name, version, json, .. } => {
            let name = resolve_name(&registry, name)?;
            let details = registry.show(&name, version)?;
            if json {
                println!("{}", serde_json::to_string(&details)?);
            } else {
                print!("{}", text::show(&details));
            }
        }
        ModelsCommand::Diff { name, a, b, json, .. } => {
            let name = resolve_name(&registry, name)?;
            let diff = registry.diff(&name, a, b)?;
            if json {
                println!("{}", serde_json::to_string(&diff)?);
            } else {
                print!("{}", text::diff(&diff));
            }
        }
        ModelsCommand::Promote { name, version, actor: who, reason, json, .. } => {
            let who = actor(who)?;
            let name = resolve_name(&registry, name)?;
            let record = registry.promote(&name, version, &who, &reason)?;
            report(&record, json, "promoted to production")?;
        }
        ModelsCommand::Rollback { name, actor: who, reason, json, .. } => {
            let who = actor(who)?;
            let name = resolve_name(&registry, name)?;
            let record = registry.rollback(&name, &who, &reason)?;
            report(&record, json, "restored to production")?;
        }
        ModelsCommand::Export { name, version, out, .. } => {
            let name = resolve_name(&registry, name)?;
            let version = match version {
                Some(v) => v,
                None => registry
                    .production(&name)?
                    .or(registry.latest(&name)?)
                    .map(|r| r.version)
                    .context("no version to export")?,
            };
            let doc = registry.export(&name, version, &out)?;
            println!("exported {name} {version} ({} parameters) to {}", doc.weights.count, out.display());
        }
    }
    Ok(())
}

fn report(record: &VersionRecord, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(record)?);
    } else {
        println!("{} {} {what}", record.name, record.version);
    }
    Ok(())
}

/// Parses a version argument ("3" or "v3").
pub(crate) fn parse_version(s: &str) -> Result<Version, String> {
    s.parse().map_err(|e| format!("{e}"))
}
