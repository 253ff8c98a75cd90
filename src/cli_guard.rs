//! `bouncer status`, `pause`, `resume` and `alerts test`: the guard and its
//! alerts from a shell. A pause or resume raises its alert in the outbox;
//! the running service delivers it through its own channels.

use std::process::ExitCode;

use crate::cli::say;
use crate::config::Settings;
use crate::store::{Access, Store};

/// Prints `/v1/sending`'s report for people.
pub fn print_status(report: &serde_json::Value) {
    let r = &report["rates"];
    let p = &report["policy"];
    let pct = |v: &serde_json::Value| format!("{:.3}%", v.as_f64().unwrap_or(0.0));
    let counted = |v: &serde_json::Value, one: &str, many: &str| {
        crate::guard::counted(v.as_i64().unwrap_or(0), one, many)
    };
    // Before any resume the rates count from the start of the history.
    let counting_since = match r["counting_since"].as_str() {
        Some(at) if !at.starts_with("1970-01-01") => format!("counting since the resume at {at}"),
        _ => "counting since the start".to_owned(),
    };
    say!(
        "sending:        {}",
        report["state"].as_str().unwrap_or("?")
    );
    say!(
        "since:          {} by {}: {}",
        report["changed_at"].as_str().unwrap_or("?"),
        report["changed_by"].as_str().unwrap_or("?"),
        report["reason"].as_str().unwrap_or("")
    );
    say!(
        "bounce rate:    {} ({}; pauses above {}%)",
        pct(&r["bounce_rate_percent"]),
        counted(&r["hard_bounces"], "hard bounce", "hard bounces"),
        p["bounce_pause_percent"]
    );
    say!(
        "complaint rate: {} ({}; pauses above {}%)",
        pct(&r["complaint_rate_percent"]),
        counted(&r["complaints"], "complaint", "complaints"),
        p["complaint_pause_percent"]
    );
    say!(
        "window:         {} (last {}, at most {} days; from {}; {counting_since})",
        counted(&r["sends"], "send", "sends"),
        counted(&p["window_sends"], "send", "sends"),
        p["max_age_days"],
        r["window_start"].as_str().unwrap_or("-"),
    );
    if r["enough_volume"] != serde_json::Value::Bool(true) {
        // A pause stands whatever the volume now (a restart with a higher
        // minimum, a resume's fresh count): only a resume ends it.
        let acts = if report["state"] == "paused" {
            "the guard would not pause now; the pause stands until a resume"
        } else {
            "the guard does not act yet"
        };
        say!(
            "note:           fewer than {} in the window: {acts}",
            counted(&p["min_volume"], "send", "sends")
        );
    }
    if r["volume_known"] != serde_json::Value::Bool(true) && r["sends"].as_i64().unwrap_or(0) > 0 {
        say!(
            "note:           no Delivery or Send events in the window: publish them to SNS, or the guard cannot know the volume"
        );
    }
}

pub async fn set_sending(
    settings: &Settings,
    paused: bool,
    by: &str,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(settings, Access::Write).await?;
    let user = crate::cli_suppressions::operator();
    let by = format!("{} (cli:{user})", by.trim());
    let policy = crate::guard::GuardPolicy::from_settings(settings)?;
    let clock = crate::clock::Clock::system();
    let changed =
        crate::guard::set_sending(&store, &policy, paused, &by, reason.trim(), &clock).await?;
    let word = if paused { "paused" } else { "active" };
    if changed {
        say!("sending is now {word}");
    } else {
        say!("sending was already {word}: nothing changed");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn alerts_test(settings: &Settings) -> anyhow::Result<ExitCode> {
    crate::outbound::install_default_provider();
    let channels = crate::alerts::Channels::from_settings(settings, &Default::default())?;
    let names = channels.names();
    if names.is_empty() {
        eprintln!(
            "no alert channel is configured: set ALERT_WEBHOOK_URL, or SMTP_HOST, SMTP_FROM_EMAIL and ALERT_EMAILS"
        );
        // A missing setting is an error (2), not a channel that failed (1).
        return Ok(ExitCode::from(2));
    }
    let now = crate::time::Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    let alert = crate::store::alerts::Alert {
        id: 0,
        kind: "test".into(),
        subject: "bouncer test alert".into(),
        text: ":test_tube: bouncer test alert: if you read this, admin alerts reach you.".into(),
        details_json: "{}".into(),
        created_at: now,
    };
    let mut failed = false;
    for name in names {
        match channels.send(name, &alert, now).await {
            Ok(()) => say!("{name}: sent"),
            Err(e) => {
                failed = true;
                say!("{name}: FAILED: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
