//! What the credentials allow: a dry call of each SESv2 API in use, at
//! `serve` start-up and by `bouncer ses check`, naming each missing
//! `ses:` permission. SES has no dry-run flag, so each call is one that
//! changes nothing: reads as they are; a sending switch written back with
//! the value SES just reported (under the target's lease, so that no worker
//! writes in between); a reserved address (RFC 2606 `example.com`) put on
//! the suppression list and deleted again.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::SesSettings;
use super::client::{AccountView, CALL_TIMEOUT, FailureKind, ListFilter, SesClient, SesFailure};
use crate::clock::Clock;
use crate::store::Store;
use crate::store::alerts::{AlertDraft, enqueue};
use crate::store::ses::{CheckLease, SendingTarget, record_ses_check};

/// Put on and deleted from the SES list to prove both permissions.
pub const CHECK_ADDRESS: &str = "bouncer-permission-check@example.com";
const LEASE: time::Duration = time::Duration::seconds(60);
/// How long the check waits while a worker calls SES for the same target:
/// longer than one call may take, so that a check at start-up, beside a
/// worker carrying out a pending pause, still tries the permission.
const BUSY_WAIT: Duration = CALL_TIMEOUT.saturating_add(Duration::from_secs(5));
const BUSY_POLL: Duration = Duration::from_millis(100);

/// The verdict on one permission.
#[derive(Debug, Clone, Serialize)]
pub struct PermissionCheck {
    /// The `ses:` action.
    pub permission: String,
    /// What needs it.
    pub needed_for: String,
    /// `allowed`, `missing`, or `unknown` (the call failed otherwise).
    pub verdict: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub region: String,
    pub account: Option<AccountView>,
    pub permissions: Vec<PermissionCheck>,
    pub missing: Vec<String>,
    /// The permissions whose call failed otherwise (no credentials, SES
    /// unreachable): neither allowed nor missing, so a report with none
    /// missing is not a clean one while this is not empty.
    pub unchecked: Vec<String>,
    /// `serve` began stopping during the check: calls after that were not
    /// made, so the report is not kept in place of the last whole one.
    #[serde(skip)]
    pub cut_short: bool,
}

/// The SDK's reasons can run over lines (the credential chain lists each
/// link it tried): one line each, so that `bouncer ses check` prints a
/// line per permission and a log record stays one line.
fn one_line(detail: &str) -> String {
    detail.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn verdict(
    operation: &str,
    needed_for: &str,
    result: &Result<(), SesFailure>,
    ok: &str,
) -> PermissionCheck {
    let (verdict, detail) = match result {
        Ok(()) => ("allowed", ok.to_owned()),
        Err(f) if f.kind == FailureKind::Denied => ("missing", f.detail.clone()),
        Err(f) => ("unknown", f.detail.clone()),
    };
    PermissionCheck {
        permission: format!("ses:{operation}"),
        needed_for: needed_for.to_owned(),
        verdict,
        detail: one_line(&detail),
    }
}

fn not_tried(operation: &str, needed_for: &str, why: String) -> PermissionCheck {
    PermissionCheck {
        permission: format!("ses:{operation}"),
        needed_for: needed_for.to_owned(),
        verdict: "unknown",
        detail: format!("not tried: {why}"),
    }
}

/// Checks the APIs `ses` uses (and `ListSuppressedDestinations`, which
/// `bouncer ses import|diff` use, when `with_list`). `stop` ends a wait for
/// a target that a worker holds (`serve` is stopping).
pub async fn run(
    store: &Store,
    client: &SesClient,
    ses: &SesSettings,
    clock: &Clock,
    with_list: bool,
    stop: &CancellationToken,
) -> CheckReport {
    let mut checks = Vec::new();
    let account = unless_stopped(stop, "GetAccount", client.account()).await;
    checks.push(verdict(
        "GetAccount",
        "bouncer ses check (SES's own view of the account)",
        &account.as_ref().map(|_| ()).map_err(Clone::clone),
        "read",
    ));
    let account = account.ok();
    for target in &ses.pause {
        // After a stop the report is not kept: no more leases to take.
        if stop.is_cancelled() {
            break;
        }
        let (operation, read_op) = match target {
            SendingTarget::Account => ("PutAccountSendingAttributes", "GetAccount"),
            SendingTarget::ConfigurationSet(_) => {
                ("PutConfigurationSetSendingOptions", "GetConfigurationSet")
            }
        };
        let needed_for = format!("SES_PAUSE_MODE ({})", target.key());
        let key = target.key();
        // Read and write back under the target's lease: no worker writes
        // in between, so the write-back changes nothing.
        let lease = match lease_when_free(store, &key, clock, stop).await {
            // (After a stop the report is not kept, so no reason of its own.)
            Ok(CheckLease::Busy) => {
                let why = format!(
                    "a worker was changing it for all of {} s",
                    BUSY_WAIT.as_secs()
                );
                checks.push(not_tried(operation, &needed_for, why));
                continue;
            }
            Ok(lease) => lease,
            Err(e) => {
                checks.push(not_tried(
                    operation,
                    &needed_for,
                    format!("the database is not available ({e})"),
                ));
                continue;
            }
        };
        let read = unless_stopped(stop, read_op, client.sending_enabled(target)).await;
        if matches!(target, SendingTarget::ConfigurationSet(_)) {
            checks.push(verdict(
                read_op,
                &needed_for,
                &read.as_ref().map(|_| ()).map_err(Clone::clone),
                "read",
            ));
        }
        checks.push(match read {
            Err(f) => not_tried(
                operation,
                &needed_for,
                format!("reading the current value first failed ({})", f.detail),
            ),
            Ok(enabled) => {
                let ok = format!(
                    "sending {} there, written back unchanged",
                    if enabled { "enabled" } else { "disabled" }
                );
                verdict(
                    operation,
                    &needed_for,
                    &unless_stopped(stop, operation, client.set_sending(target, enabled)).await,
                    &ok,
                )
            }
        });
        if lease == CheckLease::Held
            && let Err(e) = store.release_target(&key).await
        {
            tracing::warn!(target = %key, error = %e, "cannot release the check's lease; it ends by itself within a minute");
        }
    }
    if ses.push.is_some() {
        let put = unless_stopped(
            stop,
            "PutSuppressedDestination",
            client.put_suppressed(CHECK_ADDRESS, "BOUNCE"),
        )
        .await;
        checks.push(verdict(
            "PutSuppressedDestination",
            "SES_PUSH_SUPPRESSIONS",
            &put,
            &format!("{CHECK_ADDRESS} put on the list"),
        ));
        let delete = unless_stopped(
            stop,
            "DeleteSuppressedDestination",
            client.delete_suppressed(CHECK_ADDRESS),
        );
        let delete = match delete.await {
            Err(f) if f.kind == FailureKind::NotFound => Ok(()),
            other => other,
        };
        checks.push(verdict(
            "DeleteSuppressedDestination",
            "SES_PUSH_SUPPRESSIONS",
            &delete,
            &format!("{CHECK_ADDRESS} deleted again"),
        ));
    }
    if with_list {
        let list = unless_stopped(
            stop,
            "ListSuppressedDestinations",
            client.list_suppressed(&ListFilter::default(), 1, None),
        )
        .await
        .map(|_| ());
        checks.push(verdict(
            "ListSuppressedDestinations",
            "bouncer ses import, bouncer ses diff",
            &list,
            "read",
        ));
    }
    let with_verdict = |verdict: &str| {
        checks
            .iter()
            .filter(|c| c.verdict == verdict)
            .map(|c| c.permission.clone())
            .collect()
    };
    let missing = with_verdict("missing");
    let unchecked = with_verdict("unknown");
    CheckReport {
        region: client.region().to_owned(),
        account,
        permissions: checks,
        missing,
        unchecked,
        cut_short: stop.is_cancelled(),
    }
}

/// `call`, unless `serve` stops first: a stop does not wait for SES (a
/// call cut off changes nothing: the check only reads and writes back).
async fn unless_stopped<T>(
    stop: &CancellationToken,
    operation: &'static str,
    call: impl Future<Output = Result<T, SesFailure>>,
) -> Result<T, SesFailure> {
    stop.run_until_cancelled(call).await.unwrap_or_else(|| {
        Err(SesFailure {
            operation,
            kind: FailureKind::Unavailable,
            code: None,
            detail: "not tried: bouncer stopped".into(),
        })
    })
}

/// The target's lease for the check, waiting up to [`BUSY_WAIT`] while a
/// worker holds it (its call ends within that), or until `stop`: a stop
/// must not wait for a lease that another process may hold for a minute.
async fn lease_when_free(
    store: &Store,
    key: &str,
    clock: &Clock,
    stop: &CancellationToken,
) -> crate::store::DbResult<CheckLease> {
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        let lease = store
            .lease_target_for_check(key, clock.now(), LEASE)
            .await?;
        if lease != CheckLease::Busy || Instant::now() >= deadline || stop.is_cancelled() {
            return Ok(lease);
        }
        stop.run_until_cancelled(tokio::time::sleep(BUSY_POLL))
            .await;
    }
}

/// Human lines for a report.
pub fn lines(report: &CheckReport) -> Vec<String> {
    let mut out = Vec::new();
    match &report.account {
        Some(a) => out.push(format!(
            "SES account in {}: sending {}, enforcement {}, production access {}; SES itself adds to its list: {}",
            report.region,
            if a.sending_enabled { "enabled" } else { "DISABLED" },
            a.enforcement_status.as_deref().unwrap_or("unknown"),
            if a.production_access_enabled { "yes" } else { "no (sandbox)" },
            if a.suppressed_reasons.is_empty() {
                "nothing".to_owned()
            } else {
                a.suppressed_reasons.join(", ")
            }
        )),
        None => out.push(format!("SES account in {}: not readable", report.region)),
    }
    for c in &report.permissions {
        out.push(format!(
            "{:<8} {:<36} for {}: {}",
            c.verdict, c.permission, c.needed_for, c.detail
        ));
    }
    if !report.missing.is_empty() {
        out.push(format!(
            "missing permissions: {}",
            report.missing.join(", ")
        ));
    } else if report.unchecked.is_empty() {
        out.push("missing permissions: none".into());
    }
    if !report.unchecked.is_empty() {
        out.push(format!(
            "not checked (could not be checked; the lines above say why): {}",
            report.unchecked.join(", ")
        ));
    }
    out
}

/// Keeps the report for `status`; with `alert`, alerts when a permission is
/// missing that the last check did not already report.
pub async fn record(
    store: &Store,
    report: &CheckReport,
    clock: &Clock,
    alert: bool,
) -> anyhow::Result<()> {
    // What earlier checks found missing and no check since has found
    // allowed: a check that could not tell (SES unreachable, credentials
    // gone for a moment) keeps it, so that the same permission is not
    // alerted as newly missing when the next check finds it so again.
    // Checks kept by earlier versions have only `missing`.
    let before: Vec<String> = store
        .last_ses_check()
        .await?
        .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(&json).ok())
        .and_then(|v| {
            let known = v.get("known_missing").unwrap_or(&v["missing"]);
            serde_json::from_value(known.clone()).ok()
        })
        .unwrap_or_default();
    let known_missing: Vec<String> = report
        .missing
        .iter()
        .chain(before.iter().filter(|p| report.unchecked.contains(p)))
        .cloned()
        .collect();
    let newly_missing = report.missing.iter().any(|p| !before.contains(p));
    let mut kept = serde_json::to_value(report)?;
    kept["known_missing"] = serde_json::json!(known_missing);
    let now = clock.now();
    let mut conn = store.conn().await?;
    let mut tx = conn.begin().await?;
    record_ses_check(&mut tx, &kept.to_string(), now).await?;
    if alert && newly_missing {
        let draft = AlertDraft {
            kind: "ses_permissions",
            subject: "bouncer cannot act at SES: permissions missing".into(),
            text: format!(
                ":warning: The AWS credentials bouncer uses lack {} in {}: bouncer cannot do at SES what its settings ask. `bouncer ses check` shows the details; the README has the IAM policy for each mode.",
                report.missing.join(", "),
                report.region
            ),
            details: serde_json::json!({ "missing": report.missing, "region": report.region }),
        };
        enqueue(&mut tx, &draft, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The start-up check of `serve`: logged, kept, alerted when newly missing.
pub async fn at_start_up(
    store: &Store,
    client: &SesClient,
    ses: &SesSettings,
    clock: &Clock,
    stop: &CancellationToken,
) {
    let report = run(store, client, ses, clock, false, stop).await;
    if report.cut_short {
        tracing::info!("SES check cut short by the stop; the last whole one stays on record");
        return;
    }
    for c in &report.permissions {
        match c.verdict {
            "allowed" => {
                tracing::info!(permission = %c.permission, needed_for = %c.needed_for, "SES check: allowed");
            }
            "missing" => {
                tracing::warn!(permission = %c.permission, needed_for = %c.needed_for, detail = %c.detail, "SES check: not allowed");
            }
            // The call failed for another reason (SES unreachable, a
            // worker holding the target): nothing is known either way.
            _ => {
                tracing::warn!(permission = %c.permission, needed_for = %c.needed_for, verdict = c.verdict, detail = %c.detail, "SES check: could not tell");
            }
        }
    }
    if !report.missing.is_empty() {
        tracing::warn!(missing = %report.missing.join(", "), region = %report.region, "SES check: the credentials lack permissions bouncer needs");
    }
    if let Err(e) = record(store, &report, clock, true).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot record the SES permission check");
    }
}
