//! `bouncer ses ...`: the SES account-level suppression list read back
//! (`import`, `diff`) and what the credentials allow (`check`), against
//! the account in SES_REGION; and the SES lines of `bouncer status`.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::routes::api::parse_since;
use crate::ses_account::SesSettings;
use crate::ses_account::client::ListFilter;
use crate::ses_account::{check, import};
use crate::store::Store;

#[derive(Subcommand)]
pub enum SesCommand {
    /// Copy the SES account-level suppression list into bouncer's (source
    /// `ses-account`); an address bouncer has keeps its row as it is.
    Import {
        /// Only this reason (repeat for both): bounce or complaint.
        #[arg(long, value_enum)]
        reason: Vec<SesReason>,
        /// Only addresses SES listed (or updated) at or after this date or
        /// time (ISO 8601).
        #[arg(long)]
        since: Option<String>,
        /// ... and before this one.
        #[arg(long)]
        until: Option<String>,
    },
    /// Print the addresses only one of the two lists holds (tab-separated:
    /// only-in-bouncer or only-at-ses, address, reason).
    Diff,
    /// Make a dry call of each SESv2 API in use and name the missing
    /// permissions; exits 1 if any is missing, 2 if some could not be
    /// checked (SES unreachable, say).
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SesReason {
    Bounce,
    Complaint,
}

pub async fn run(settings: &Settings, command: SesCommand) -> anyhow::Result<ExitCode> {
    crate::outbound::install_default_provider();
    let ses = SesSettings::from_settings(settings)?;
    let client = ses.client(None, true, Metrics::new()).await?;
    // The database must exist and be migrated (only `serve` and `migrate`
    // create it); import and check write to it.
    let store = Store::open(settings, crate::store::Access::Write).await?;
    let region = client.region().to_owned();
    match command {
        SesCommand::Import {
            reason,
            since,
            until,
        } => {
            let time = |t: Option<String>| {
                t.as_deref()
                    .map(parse_since)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("{e}"))
            };
            let filter = ListFilter {
                reasons: reason
                    .iter()
                    .map(|r| match r {
                        SesReason::Bounce => "BOUNCE".to_owned(),
                        SesReason::Complaint => "COMPLAINT".to_owned(),
                    })
                    .collect(),
                since: time(since)?,
                until: time(until)?,
            };
            let report = import::import(&store, &client, &filter).await?;
            for skipped in &report.skipped {
                eprintln!("skipped: {skipped}");
            }
            println!(
                "imported from the SES account-level list in {region}: {} listed in {} pages; {} added (source ses-account); {} already in bouncer, kept as they were; {} skipped",
                report.listed,
                report.pages,
                report.added,
                report.kept,
                report.skipped.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        SesCommand::Diff => {
            let diff = import::diff(&store, &client).await?;
            for (email, reason) in &diff.only_in_bouncer {
                println!("only-in-bouncer\t{email}\t{reason}");
            }
            for (email, reason) in &diff.only_at_ses {
                println!("only-at-ses\t{email}\t{reason}");
            }
            for (email, ours, theirs) in &diff.reason_differs {
                println!("reason-differs\t{email}\t{ours}\t{theirs}");
            }
            println!(
                "in both: {}; only in bouncer: {}; only at SES ({region}): {}; reasons differ: {}",
                diff.in_both,
                diff.only_in_bouncer.len(),
                diff.only_at_ses.len(),
                diff.reason_differs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        SesCommand::Check => {
            let clock = Clock::system();
            // Nothing stops the CLI's wait but its bound.
            let never = tokio_util::sync::CancellationToken::new();
            let report = check::run(&store, &client, &ses, &clock, true, &never).await;
            for line in check::lines(&report) {
                println!("{line}");
            }
            check::record(&store, &report, &clock, false).await?;
            let unknown = report.permissions.iter().any(|p| p.verdict != "allowed");
            Ok(if !report.missing.is_empty() {
                ExitCode::from(1)
            } else if unknown {
                eprintln!("some permissions could not be checked: see the lines above");
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// The SES lines of `bouncer status`, from the report's `ses` object.
pub fn print_status(ses: &Value) {
    let targets = ses["targets"].as_array().cloned().unwrap_or_default();
    if targets.is_empty() {
        println!("SES pause:      off (SES_PAUSE_MODE)");
    }
    for t in &targets {
        let wanted = text(&t["wanted"]);
        if t["state"] == "idle" {
            println!(
                "SES pause:      {}: no pause or resume since it was set up; SES's switch untouched",
                text(&t["target"])
            );
        } else if t["state"] == "confirmed" {
            println!(
                "SES pause:      {}: sending {} at SES, confirmed {}",
                text(&t["target"]),
                text(&t["confirmed"]),
                text(&t["confirmed_at"])
            );
        } else {
            println!(
                "SES pause:      {}: bouncer wants sending {wanted}; SES has not confirmed it yet ({} attempts; SES last confirmed: {})",
                text(&t["target"]),
                t["attempts"],
                text(&t["confirmed"])
            );
        }
        if !t["last_error"].is_null() {
            println!(
                "                last error ({}): {}",
                text(&t["last_error_at"]),
                text(&t["last_error"])
            );
        }
    }
    let push = &ses["push"];
    if push["enabled"] == Value::Bool(true) {
        println!(
            "SES push:       on: {} pending, {} done, {} skipped, {} refused",
            push["pending"], push["done"], push["skipped"], push["refused"]
        );
    } else {
        println!(
            "SES push:       off (SES_PUSH_SUPPRESSIONS); outbox: {} pending, {} refused",
            push["pending"], push["refused"]
        );
    }
    if !push["last_error"].is_null() {
        println!(
            "                last error ({}, {}): {}",
            text(&push["last_error_at"]),
            text(&push["last_error_email"]),
            text(&push["last_error"])
        );
    }
    let check = &ses["check"];
    if !check.is_null() {
        println!(
            "SES check:      {} in {}: {}",
            text(&check["checked_at"]),
            text(&check["region"]),
            check_verdict(check)
        );
    }
}

/// What the last permission check found, in a few words: a check whose
/// calls failed for another reason (no credentials, SES unreachable) found
/// nothing missing, and says it could not tell. `check` as `GET
/// /v1/sending` shows it (`unchecked` filled in for checks kept before it
/// existed).
fn check_verdict(check: &Value) -> String {
    let names = |key: &str| -> Vec<&str> {
        check[key]
            .as_array()
            .map(|all| all.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let (missing, unchecked) = (names("missing"), names("unchecked"));
    let mut said = Vec::new();
    if !missing.is_empty() {
        said.push(format!("missing {}", missing.join(", ")));
    }
    if let Some(first) = check["permissions"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["verdict"] == "unknown"))
    {
        // The SDK's reason can run over lines (the credential chain's
        // every link, after "Attempted:"): its first says it, and `bouncer
        // ses check` gives the rest, and each permission's own.
        let why = text(&first["detail"]).lines().next().unwrap_or_default();
        let why = why
            .split("Attempted:")
            .next()
            .unwrap_or_default()
            .trim_end();
        said.push(format!(
            "could not check {} ({why}; `bouncer ses check` says more)",
            unchecked.join(", ")
        ));
    }
    if said.is_empty() {
        "no permission missing".to_owned()
    } else {
        said.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn permission(name: &str, verdict: &str, detail: &str) -> Value {
        json!({ "permission": name, "verdict": verdict, "detail": detail })
    }

    #[test]
    fn a_check_reads_as_what_it_found() {
        let clean = json!({ "permissions": [permission("ses:GetAccount", "allowed", "read")] });
        assert_eq!(check_verdict(&clean), "no permission missing");
        // An older reason, over several lines.
        let both = json!({
            "missing": ["ses:PutSuppressedDestination"],
            "unchecked": ["ses:GetAccount", "ses:ListSuppressedDestinations"],
            "permissions": [
                permission("ses:PutSuppressedDestination", "missing", "AccessDenied"),
                permission("ses:GetAccount", "unknown", "dispatch failure: no credentials found in chain. Attempted:\n  Environment: not set"),
                permission("ses:ListSuppressedDestinations", "unknown", "timed out"),
            ]
        });
        assert_eq!(
            check_verdict(&both),
            "missing ses:PutSuppressedDestination; could not check ses:GetAccount, \
             ses:ListSuppressedDestinations (dispatch failure: no credentials found in chain.; \
             `bouncer ses check` says more)"
        );
        // Kept by this version: the reason in one line.
        let one_line = json!({
            "unchecked": ["ses:GetAccount"],
            "permissions": [
                permission("ses:GetAccount", "unknown", "dispatch failure: no credentials found in chain. Attempted: Environment: not set"),
            ]
        });
        assert_eq!(
            check_verdict(&one_line),
            "could not check ses:GetAccount (dispatch failure: no credentials found in chain.; \
             `bouncer ses check` says more)"
        );
    }
}
