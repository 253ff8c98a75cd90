//! SNS notifications of real SES size (about 2 KB: the whole `mail` object
//! with headers, a diagnostic code), signed SignatureVersion 1 by the
//! TEST-ONLY key through the tests' own signer, for the two workloads of
//! SPEC §9: the bounce storm and the feed mix.

use serde_json::{Value, json};

use super::signing::{Msg, TOPIC};

/// A small deterministic generator (xorshift), so a run is repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// 0..n
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn mail(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "timestamp": at,
        "source": "\"Signals Desk\" <signals@signals.example>",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/signals.example",
        "sourceIp": "198.51.100.17",
        "callerIdentity": "ses-smtp-user.20261125-101010",
        "sendingAccountId": "123456789012",
        "messageId": ses_id,
        "destination": [recipient],
        "headersTruncated": false,
        "headers": [
            {"name": "Received", "value": "from app-1.signals.example (app-1.signals.example [198.51.100.17]) by email-smtp.amazonaws.com with SMTP (SimpleEmailService-d-ABCDEFGHI) id abcdefghijklmnop for <" },
            {"name": "From", "value": "\"Signals Desk\" <signals@signals.example>"},
            {"name": "To", "value": recipient},
            {"name": "Subject", "value": "Your weekly trading signals: BTC, ETH and the week ahead"},
            {"name": "Message-ID", "value": format!("<{ses_id}@signals.example>")},
            {"name": "Date", "value": "Wed, 25 Nov 2026 10:00:00 +0000"},
            {"name": "MIME-Version", "value": "1.0"},
            {"name": "Content-Type", "value": "multipart/alternative; boundary=\"----=_Part_123456_7890.1764064800000\""},
            {"name": "List-Unsubscribe", "value": "<https://signals.example/unsubscribe?u=abcdef0123456789>, <mailto:unsubscribe@signals.example>"},
            {"name": "X-SES-CONFIGURATION-SET", "value": "signals-production"}
        ],
        "commonHeaders": {
            "from": ["\"Signals Desk\" <signals@signals.example>"],
            "to": [recipient],
            "messageId": format!("<{ses_id}@signals.example>"),
            "subject": "Your weekly trading signals: BTC, ETH and the week ahead",
            "date": "Wed, 25 Nov 2026 10:00:00 +0000"
        },
        "tags": {"ses:configuration-set": ["signals-production"], "ses:source-ip": ["198.51.100.17"], "campaign": ["weekly-2026-48"]}
    })
}

fn permanent_bounce(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": "5.1.1",
                "diagnosticCode": format!("smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)")}],
            "timestamp": at, "feedbackId": format!("0100019a-{ses_id}-000000"),
            "remoteMtaIp": "203.0.113.25", "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"
        },
        "mail": mail(ses_id, at, recipient)
    })
}

fn soft_bounce(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Transient", "bounceSubType": "MailboxFull",
            "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": "4.2.2",
                "diagnosticCode": "smtp; 452 4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.example/mail/?p=OverQuotaTemp"}],
            "timestamp": at, "feedbackId": format!("0100019a-{ses_id}-000000"),
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"
        },
        "mail": mail(ses_id, at, recipient)
    })
}

fn complaint(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": recipient}], "timestamp": at,
            "feedbackId": format!("0100019a-{ses_id}-000000"), "complaintFeedbackType": "abuse",
            "userAgent": "Yahoo!-Mail-Feedback/2.0", "arrivalDate": at
        },
        "mail": mail(ses_id, at, recipient)
    })
}

fn delivery(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "notificationType": "Delivery",
        "delivery": {
            "timestamp": at, "processingTimeMillis": 812, "recipients": [recipient],
            "smtpResponse": "250 2.0.0 OK  1764064801 d2e1a72fcca58-7b2a3c4d5e6f7si1234567pgb.123 - gsmtp",
            "remoteMtaIp": "203.0.113.25", "reportingMTA": "a8-70.smtp-out.amazonses.com"
        },
        "mail": mail(ses_id, at, recipient)
    })
}

fn open(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "eventType": "Open",
        "open": {"timestamp": at, "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "ipAddress": "192.0.2.44"},
        "mail": mail(ses_id, at, recipient)
    })
}

/// A Send event, as a configuration set publishes it: every recipient of
/// the mail counted as sent.
fn send_event(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "eventType": "Send",
        "send": {},
        "mail": mail(ses_id, at, recipient)
    })
}

/// SES's word that it did not send to `recipient`: the address is on the
/// account's suppression list. It takes back the Send event's count.
fn listed_bounce(ses_id: &str, at: &str, recipient: &str) -> Value {
    json!({
        "eventType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "OnAccountSuppressionList",
            "bouncedRecipients": [{"emailAddress": recipient, "action": "failed", "status": "5.1.1",
                "diagnosticCode": "Amazon SES did not send the message to this address because it is on the suppression list for your account. For more information about removing addresses from the suppression list, see the Amazon SES Developer Guide at https://docs.aws.amazon.com/ses/latest/DeveloperGuide/sending-email-suppression-list.html"}],
            "timestamp": at, "feedbackId": format!("0100019a-{ses_id}-listed"),
            "reportingMTA": "dns; amazonses.com"
        },
        "mail": mail(ses_id, at, recipient)
    })
}

/// A campaign sent to a list that holds addresses on the account's
/// suppression list, with event publishing: `n` Send events, then SES's
/// word for each of those mails that it did not send it (each takes a send
/// back). The Sends come first, as SES publishes them.
pub fn listed_storm(n: usize, tag: &str) -> (Vec<String>, Vec<String>) {
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("now");
    let who = |i: usize| format!("listed-{tag}-{i}@example.com");
    let sends = (0..n)
        .map(|i| send_event(&format!("{tag}-{i:08}"), &at, &who(i)))
        .collect();
    let listed = (0..n)
        .map(|i| listed_bounce(&format!("{tag}-{i:08}"), &at, &who(i)))
        .collect();
    (
        sign_in_parallel(sends, &format!("{tag}-send")),
        sign_in_parallel(listed, &format!("{tag}-listed")),
    )
}

/// The two workloads of SPEC §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Every message a permanent bounce of a new address.
    BounceStorm,
    /// 95% deliveries, 3% permanent bounces, 1.5% soft bounces, 0.4%
    /// complaints, 0.1% other events, over a population of repeat
    /// recipients.
    FeedMix,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::BounceStorm => "bounce storm",
            Workload::FeedMix => "feed mix",
        }
    }
}

/// `n` signed envelopes of `workload`; `tag` keeps ids unique across runs.
pub fn envelopes(workload: Workload, n: usize, tag: &str) -> Vec<String> {
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("now");
    let mut rng = Rng::new(0x5eed ^ n as u64);
    let plans: Vec<Value> = (0..n)
        .map(|i| {
            let ses_id = format!("{tag}-{i:08}");
            match workload {
                Workload::BounceStorm => {
                    permanent_bounce(&ses_id, &at, &format!("storm-{tag}-{i}@example.com"))
                }
                Workload::FeedMix => {
                    // 20,000 recipients: a campaign's repeat audience.
                    let who = format!("user{}@example.com", rng.below(20_000));
                    match rng.below(1000) {
                        0..950 => delivery(&ses_id, &at, &who),
                        950..980 => permanent_bounce(&ses_id, &at, &who),
                        980..995 => soft_bounce(&ses_id, &at, &who),
                        995..999 => complaint(&ses_id, &at, &who),
                        _ => open(&ses_id, &at, &who),
                    }
                }
            }
        })
        .collect();
    sign_in_parallel(plans, tag)
}

/// How the generator names its SNS messages. SNS's `MessageId` is a UUID
/// in no order (version 5, name-based, in `fixtures/aws-real`), so each
/// stored id lands at a random place in the database's index of ids; `BENCH_MESSAGE_IDS=sequential` sends
/// `{tag}-{chunk}-{i}` instead, ids in the index's order, as the benchmark
/// did before 2026-12-07 (its figures until then were taken so).
fn sequential_ids() -> bool {
    std::env::var("BENCH_MESSAGE_IDS").is_ok_and(|v| v == "sequential")
}

/// A UUID's text, random, in the shape of SNS's `MessageId` (version 5).
fn random_uuid(rng: &mut Rng) -> String {
    let (hi, lo) = (rng.next(), rng.next());
    format!(
        "{:08x}-{:04x}-5{:03x}-{:x}{:03x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xfff,
        8 | (lo >> 62),
        (lo >> 48) & 0xfff,
        lo & 0xffff_ffff_ffff
    )
}

fn sign_in_parallel(plans: Vec<Value>, tag: &str) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let chunk = plans.len().div_ceil(threads).max(1);
    let sequential = sequential_ids();
    // Different in every run and chunk: ids never repeat across runs.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    let mut rng =
                        Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    part.iter()
                        .enumerate()
                        .map(|(i, message)| {
                            let id = if sequential {
                                format!("{tag}-{c}-{i}")
                            } else {
                                random_uuid(&mut rng)
                            };
                            Msg::notification(TOPIC, &message.to_string())
                                .set("MessageId", &id)
                                .sign()
                                .body()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signer"))
            .collect()
    })
}
