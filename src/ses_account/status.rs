//! The SES side as the operator sees it, read from the database so that
//! every replica and the CLI report the shared truth: per target what
//! bouncer wants and what SES last confirmed, with the last error; the push
//! outbox by state; the last permission check. Shown in `GET /v1/sending`
//! (`ses`), `bouncer status` and `/metrics`.

use serde_json::{Value, json};

use crate::store::ses::{SendingTarget, SendingTargetRow};
use crate::store::{DbResult, Store};

fn word(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

fn pause_mode(rows: &[SendingTargetRow]) -> &'static str {
    match rows
        .first()
        .and_then(|r| SendingTarget::from_key(&r.target))
    {
        None => "off",
        Some(SendingTarget::Account) => "account",
        Some(SendingTarget::ConfigurationSet(_)) => "configuration-sets",
    }
}

/// The `ses` object of `GET /v1/sending`.
pub async fn report(store: &Store) -> DbResult<Value> {
    let rows = store.sending_targets().await?;
    let push = store.push_summary().await?;
    let check = store.last_ses_check().await?.map(|(at, text)| {
        let mut value = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
        if let Some(obj) = value.as_object_mut() {
            obj.insert("checked_at".into(), json!(at));
        }
        with_unchecked(value)
    });
    let targets: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "target": r.target,
                "wanted": word(r.desired_enabled),
                "state": r.state,
                "confirmed": r.confirmed_enabled.map(word),
                "requested_at": r.requested_at,
                "confirmed_at": r.confirmed_at,
                "attempts": r.attempts,
                "next_attempt_at": r.next_attempt_at,
                "last_error": r.last_error,
                "last_error_at": r.last_error_at,
            })
        })
        .collect();
    Ok(json!({
        "pause_mode": pause_mode(&rows),
        "targets": targets,
        "push": {
            "enabled": store.ses_push_on().await?,
            "pending": push.pending,
            "done": push.done,
            "skipped": push.skipped,
            "refused": push.refused,
            "last_done_at": push.last_done_at,
            "last_error": push.last_error,
            "last_error_email": push.last_error_email,
            "last_error_at": push.last_error_at,
        },
        "check": check,
    }))
}

/// A check kept by a version before `unchecked`, given it from the
/// permissions' verdicts, so that every reader finds it.
fn with_unchecked(mut check: Value) -> Value {
    if let Some(obj) = check
        .as_object_mut()
        .filter(|o| !o.contains_key("unchecked"))
    {
        let unchecked: Vec<Value> = obj
            .get("permissions")
            .and_then(Value::as_array)
            .map(|all| {
                all.iter()
                    .filter(|p| p["verdict"] == "unknown")
                    .map(|p| p["permission"].clone())
                    .collect()
            })
            .unwrap_or_default();
        obj.insert("unchecked".into(), Value::Array(unchecked));
    }
    check
}

/// Label values as Prometheus text needs them.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Gauges for `/metrics`.
pub async fn metrics_text(store: &Store) -> DbResult<String> {
    let rows = store.sending_targets().await?;
    let push = store.push_summary().await?;
    let mut out = String::new();
    if !rows.is_empty() {
        out.push_str("# HELP bouncer_ses_sending_enabled Sending at SES per target: what bouncer wants (view=wanted) and what SES last confirmed (view=confirmed).\n# TYPE bouncer_ses_sending_enabled gauge\n");
        for r in &rows {
            let target = escape(&r.target);
            out.push_str(&format!(
                "bouncer_ses_sending_enabled{{target=\"{target}\",view=\"wanted\"}} {}\n",
                i32::from(r.desired_enabled)
            ));
            if let Some(confirmed) = r.confirmed_enabled {
                out.push_str(&format!(
                    "bouncer_ses_sending_enabled{{target=\"{target}\",view=\"confirmed\"}} {}\n",
                    i32::from(confirmed)
                ));
            }
        }
        out.push_str("# HELP bouncer_ses_sending_pending 1 while SES has not confirmed the latest pause or resume at the target.\n# TYPE bouncer_ses_sending_pending gauge\n");
        for r in &rows {
            out.push_str(&format!(
                "bouncer_ses_sending_pending{{target=\"{}\"}} {}\n",
                escape(&r.target),
                i32::from(r.state == "pending")
            ));
        }
        out.push_str("# HELP bouncer_ses_sending_last_error_seconds When SES last failed to take a pause or resume at the target (Unix seconds; 0: never).\n# TYPE bouncer_ses_sending_last_error_seconds gauge\n");
        for r in &rows {
            out.push_str(&format!(
                "bouncer_ses_sending_last_error_seconds{{target=\"{}\"}} {}\n",
                escape(&r.target),
                r.last_error_at.map_or(0, |at| at.unix_millis() / 1000)
            ));
        }
    }
    out.push_str("# HELP bouncer_ses_pushes Suppression list changes for SES in the outbox, by state.\n# TYPE bouncer_ses_pushes gauge\n");
    for (state, n) in [
        ("pending", push.pending),
        ("done", push.done),
        ("skipped", push.skipped),
        ("refused", push.refused),
    ] {
        out.push_str(&format!("bouncer_ses_pushes{{state=\"{state}\"}} {n}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_kept_before_unchecked_existed_gets_it_from_its_verdicts() {
        let old = json!({
            "missing": ["ses:PutSuppressedDestination"],
            "permissions": [
                {"permission": "ses:PutSuppressedDestination", "verdict": "missing"},
                {"permission": "ses:GetAccount", "verdict": "unknown"},
                {"permission": "ses:DeleteSuppressedDestination", "verdict": "allowed"},
            ]
        });
        assert_eq!(with_unchecked(old)["unchecked"], json!(["ses:GetAccount"]));
        let new = json!({ "unchecked": [], "permissions": [{"permission": "ses:GetAccount", "verdict": "unknown"}] });
        assert_eq!(
            with_unchecked(new)["unchecked"],
            json!([]),
            "kept as recorded"
        );
    }
}
