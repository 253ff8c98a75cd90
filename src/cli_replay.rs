//! `bouncer replay`: stored SNS messages, verified and applied to the
//! database directly, or POSTed to a running endpoint (`--url`).
//!
//! Directly, each message is verified like `POST /sns` would (signature,
//! allowed topic; its age unless `--ignore-age`) and applied in its own
//! transaction, without the writer or the spool: replay runs beside a
//! running service (whose spool is locked) and answers "database
//! unavailable" rather than spooling. Subscription confirmations are
//! recorded, never confirmed. Over HTTP the endpoint decides everything,
//! which is why `--ignore-age` cannot go with `--url`.
//!
//! Each output line is `SOURCE<TAB>MESSAGE_ID<TAB>WHAT`, SOURCE being the
//! file (and line, for JSON lines); a summary goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::app::{Hooks, apply_policy, build_verifier};
use crate::cli::say;
use crate::config::Settings;
use crate::ingest::apply::{ApplyPolicy, apply_batch};
use crate::ingest::recorded::{Compared, service_rules};
use crate::ingest::{Accepted, Applied, Content, StoreOutcome};
use crate::metrics::Metrics;
use crate::sns::envelope::Envelope;
use crate::sns::verify::Verifier;
use crate::store::{Access, DbErrorKind, DbResult, Store};

/// One stored message and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// `FILE` for a file holding one envelope, `FILE:LINE` for JSON lines.
    pub source: String,
    pub message_type: String,
    pub message_id: String,
    /// The envelope as SNS sent it.
    pub body: String,
}

/// Every SNS envelope in the files: a file is one JSON object, or JSON
/// lines; a line `{"body": "<envelope>", ...}` (a message bouncer set
/// aside) stands for its `body`.
pub fn read_envelopes(files: &[PathBuf]) -> anyhow::Result<Vec<Stored>> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if serde_json::from_str::<Value>(&text).is_ok() {
            out.push(stored(file.display().to_string(), text)?);
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                let source = format!("{}:{}", file.display(), i + 1);
                out.push(stored(source, line.to_owned())?);
            }
        }
    }
    Ok(out)
}

fn stored(source: String, text: String) -> anyhow::Result<Stored> {
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{source} is not JSON ({e}); nothing was replayed"))?;
    let (value, body) = match value.get("body").and_then(Value::as_str) {
        Some(inner) if value.get("Type").is_none() => {
            let envelope = serde_json::from_str(inner).map_err(|e| {
                anyhow!("{source}: its `body` is not a JSON envelope ({e}); nothing was replayed")
            })?;
            (envelope, inner.to_owned())
        }
        _ => (value, text),
    };
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(Stored {
        message_type: field("Type").unwrap_or_default(),
        message_id: field("MessageId").unwrap_or_else(|| "-".into()),
        body,
        source,
    })
}

/// What became of the messages.
#[derive(Debug, Default)]
struct Tally {
    stored: usize,
    duplicate: usize,
    spooled: usize,
    refused: usize,
}

pub async fn run(
    settings: &Settings,
    files: &[PathBuf],
    url: Option<&str>,
    ignore_age: bool,
) -> anyhow::Result<ExitCode> {
    if url.is_some() && ignore_age {
        bail!(
            "--ignore-age cannot be used with --url: the endpoint checks every message's age itself. \
             Replay old messages without --url, with the service's DATABASE_URL, SNS_TOPIC_ARNS and \
             SNS_CERT_PINS: that works beside a running service"
        );
    }
    let messages = read_envelopes(files)?;
    let tally = match url {
        Some(url) => over_http(url, &messages).await?,
        None => directly(settings, &messages, ignore_age).await?,
    };
    eprintln!(
        "replayed {} message{}: {} stored, {} duplicate, {} spooled, {} refused",
        messages.len(),
        if messages.len() == 1 { "" } else { "s" },
        tally.stored,
        tally.duplicate,
        tally.spooled,
        tally.refused
    );
    Ok(if tally.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn over_http(url: &str, messages: &[Stored]) -> anyhow::Result<Tally> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::outbound::tls_client_config(&Default::default())?)
        .build()?;
    let mut tally = Tally::default();
    for (done, m) in messages.iter().enumerate() {
        let response = client
            .post(url)
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", &m.message_type)
            .body(m.body.clone())
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot reach {url} ({e}); {done} of {} messages were sent before",
                    messages.len()
                )
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let word = |name: &str| answer[name].as_str().unwrap_or_default().to_owned();
        let what = if status.is_success() {
            let outcome = word("status");
            match outcome.as_str() {
                "duplicate" => tally.duplicate += 1,
                "spooled" => tally.spooled += 1,
                // Taken, but the database refused it: it waits in the
                // service's set-aside file, not in the database.
                "set_aside" => tally.refused += 1,
                _ => tally.stored += 1,
            }
            match answer["unrecognized"].as_str() {
                Some(why) => format!("{} {outcome} (not SES feedback: {why})", status.as_u16()),
                None => format!("{} {outcome}", status.as_u16()),
            }
        } else {
            tally.refused += 1;
            match (word("error"), word("detail")) {
                (code, detail) if !code.is_empty() => {
                    format!("{} refused {code}: {detail}", status.as_u16())
                }
                _ => format!("{} refused: {}", status.as_u16(), text.trim()),
            }
        };
        say!("{}\t{}\t{what}", m.source, m.message_id);
    }
    Ok(tally)
}

async fn directly(
    settings: &Settings,
    messages: &[Stored],
    ignore_age: bool,
) -> anyhow::Result<Tally> {
    crate::outbound::install_default_provider();
    let store = Store::open(settings, Access::Write).await?;
    let verifier = build_verifier(settings, &Hooks::default(), &Metrics::new(), false)?;
    // As the service applies them, not as this shell's settings say: a
    // replay that decided pauses and suppressions by other lines than the
    // service's would contradict it.
    let recorded = store.recorded_apply_settings().await?;
    let (policy, whose) = service_rules(&apply_policy(settings)?, recorded, Compared::All);
    if let Some(whose) = whose {
        eprintln!("rules: {whose}");
    }
    let mut tally = Tally::default();
    for (done, m) in messages.iter().enumerate() {
        let verified = match verify(&verifier, m, ignore_age).await {
            Ok(verified) => verified,
            Err(e) => {
                tally.refused += 1;
                let hint = if e.code() == "message_too_old" {
                    " (--ignore-age replays old messages)"
                } else {
                    ""
                };
                say!(
                    "{}\t{}\trefused {}: {e}{hint}",
                    m.source,
                    m.message_id,
                    e.code()
                );
                continue;
            }
        };
        let accepted = Accepted::new(verified, false);
        let what = match apply(&store, &verifier, &accepted, &policy).await {
            Ok(applied) if applied.outcome == StoreOutcome::Duplicate => {
                tally.duplicate += 1;
                "duplicate: stored before; nothing changed".to_owned()
            }
            Ok(applied) => {
                tally.stored += 1;
                format!("stored: {}", what_it_did(&accepted, &applied))
            }
            Err(e) if e.kind() == DbErrorKind::Unavailable => {
                store.close().await;
                bail!(
                    "{e}; {done} of {} messages were applied before it. Run the same replay again once the database answers (what was applied is then a duplicate)",
                    messages.len()
                );
            }
            Err(e) => {
                tally.refused += 1;
                // A code like the verifier's, so that each refusal reads
                // `refused CODE: why`.
                let code = if e.kind() == DbErrorKind::Content {
                    "database_refused"
                } else {
                    "database_error"
                };
                format!("refused {code}: {e}")
            }
        };
        say!("{}\t{}\t{what}", m.source, m.message_id);
    }
    store.close().await;
    Ok(tally)
}

async fn verify(
    verifier: &Verifier,
    m: &Stored,
    ignore_age: bool,
) -> Result<crate::sns::verify::VerifiedMessage, crate::error::SnsError> {
    let envelope = Envelope::parse(m.body.as_bytes(), Some(&m.message_type))?;
    verifier
        .verify_with(envelope, m.body.as_bytes(), !ignore_age)
        .await
}

/// Applies one message in its own transaction, trying again a few times
/// after a conflict with a concurrent writer (the running service).
async fn apply(
    store: &Store,
    verifier: &Verifier,
    accepted: &Accepted,
    policy: &ApplyPolicy,
) -> DbResult<Applied> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result: DbResult<Applied> = async {
            let mut conn = store.conn().await?;
            let mut tx = conn.begin().await?;
            let mut applied =
                apply_batch(&mut tx, &[accepted], policy, verifier.clock().now()).await?;
            tx.commit().await?;
            applied
                .messages
                .pop()
                .ok_or_else(|| sqlx::Error::Protocol("no result for the message".into()).into())
        }
        .await;
        match result {
            Err(e) if e.kind() == DbErrorKind::Transient && attempt < 5 => {
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// What a stored message did, in a few words.
fn what_it_did(accepted: &Accepted, applied: &Applied) -> String {
    match &accepted.content {
        Content::SubscriptionConfirmation { .. } => {
            "SubscriptionConfirmation recorded as pending (replay never confirms a subscription)"
                .into()
        }
        Content::UnsubscribeConfirmation => {
            "UnsubscribeConfirmation: the topic is now marked unsubscribed and an alert was raised"
                .into()
        }
        Content::SesSetupNotice => "SES setup notice recorded".into(),
        Content::Unrecognized(why) => format!("not SES feedback, kept for an operator ({why})"),
        Content::Feedback(_) if applied.events.is_empty() => "no SES event in it".into(),
        Content::Feedback(_) => applied
            .events
            .iter()
            .map(|(event, outcome)| {
                let mut text = format!("{event} {}", outcome.rule.action.as_str());
                if !outcome.applied {
                    text.push_str(" (event seen before)");
                } else if outcome.suppressed {
                    text.push_str(" (suppressed)");
                }
                text
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}
