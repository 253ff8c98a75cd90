//! The suppression policy: one table that says what each SES event does to
//! the address it is about, and whether it counts toward the reputation
//! rates. The README shows the same table (a test keeps them equal).

use super::feedback::Detail;

/// What an event does to its recipient's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Suppress the address now.
    Suppress,
    /// Count a soft bounce; suppress after `SOFT_BOUNCE_LIMIT` of them within
    /// `SOFT_BOUNCE_WINDOW_DAYS`.
    CountSoftBounce,
    /// The message was refused, not the address: recorded as a content
    /// problem, never counted against the address.
    ContentProblem,
    /// The recipient said the mail was wanted: recorded, never suppresses.
    NotSpam,
    /// A delivery proves the address alive: its soft-bounce count resets.
    ResetSoftBounces,
    /// Recorded and counted; no effect on the list.
    Record,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Suppress => "suppress",
            Action::CountSoftBounce => "count_soft_bounce",
            Action::ContentProblem => "content_problem",
            Action::NotSpam => "not_spam",
            Action::ResetSoftBounces => "reset_soft_bounces",
            Action::Record => "record",
        }
    }
}

/// Which reputation rate an event counts toward (SES's own rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    HardBounce,
    Complaint,
    None,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub event: &'static str,
    /// `bounceType` for bounces, `complaintFeedbackType` for complaints;
    /// `*` matches anything (including a missing value).
    pub kind: &'static str,
    /// `bounceSubType` for bounces, `complaintSubType` for complaints.
    pub subtype: &'static str,
    pub action: Action,
    pub rate: Rate,
    pub why: &'static str,
}

const fn rule(
    event: &'static str,
    kind: &'static str,
    subtype: &'static str,
    action: Action,
    rate: Rate,
    why: &'static str,
) -> Rule {
    Rule {
        event,
        kind,
        subtype,
        action,
        rate,
        why,
    }
}

/// First match wins.
pub const RULES: &[Rule] = &[
    rule(
        "Bounce",
        "Permanent",
        "OnAccountSuppressionList",
        Action::Suppress,
        Rate::None,
        "on the account's SES suppression list; SES excludes it from the bounce rate",
    ),
    rule(
        "Bounce",
        "Permanent",
        "General",
        Action::Suppress,
        Rate::HardBounce,
        "hard bounce",
    ),
    rule(
        "Bounce",
        "Permanent",
        "NoEmail",
        Action::Suppress,
        Rate::HardBounce,
        "the address does not exist",
    ),
    rule(
        "Bounce",
        "Permanent",
        "Suppressed",
        Action::Suppress,
        Rate::HardBounce,
        "on the SES global suppression list",
    ),
    rule(
        "Bounce",
        "Permanent",
        "*",
        Action::Suppress,
        Rate::HardBounce,
        "any other permanent bounce",
    ),
    rule(
        "Bounce",
        "Transient",
        "MessageTooLarge",
        Action::ContentProblem,
        Rate::None,
        "the message was too large, not the address's fault",
    ),
    rule(
        "Bounce",
        "Transient",
        "ContentRejected",
        Action::ContentProblem,
        Rate::None,
        "the content was refused, not the address",
    ),
    rule(
        "Bounce",
        "Transient",
        "AttachmentRejected",
        Action::ContentProblem,
        Rate::None,
        "an attachment was refused, not the address",
    ),
    rule(
        "Bounce",
        "Transient",
        "General",
        Action::CountSoftBounce,
        Rate::None,
        "soft bounce after SES stopped retrying",
    ),
    rule(
        "Bounce",
        "Transient",
        "MailboxFull",
        Action::CountSoftBounce,
        Rate::None,
        "soft bounce",
    ),
    rule(
        "Bounce",
        "Transient",
        "*",
        Action::CountSoftBounce,
        Rate::None,
        "any other transient bounce",
    ),
    rule(
        "Bounce",
        "Undetermined",
        "*",
        Action::CountSoftBounce,
        Rate::None,
        "SES could not classify it: treated as soft",
    ),
    rule(
        "Bounce",
        "*",
        "*",
        Action::CountSoftBounce,
        Rate::None,
        "an unknown bounce type: treated as soft",
    ),
    rule(
        "Complaint",
        "*",
        "OnAccountSuppressionList",
        Action::Suppress,
        Rate::None,
        "on the account's SES suppression list; not sent, not in the rate",
    ),
    rule(
        "Complaint",
        "not-spam",
        "*",
        Action::NotSpam,
        Rate::None,
        "the recipient said the mail was wanted",
    ),
    rule(
        "Complaint",
        "*",
        "*",
        Action::Suppress,
        Rate::Complaint,
        "abuse, auth-failure, fraud, other, virus, or no type given",
    ),
    rule(
        "Delivery",
        "*",
        "*",
        Action::ResetSoftBounces,
        Rate::None,
        "delivered: the address is alive",
    ),
    rule(
        "Send, Reject, DeliveryDelay, Rendering Failure, Open, Click, Subscription",
        "*",
        "*",
        Action::Record,
        Rate::None,
        "recorded; a Send counts its mail's recipients as sent, a Reject or Rendering Failure takes them back",
    ),
];

fn matches(pattern: &str, value: Option<&str>) -> bool {
    pattern == "*" || value == Some(pattern)
}

/// The rule for an event's detail.
pub fn decide(detail: &Detail) -> &'static Rule {
    let (event, kind, subtype) = match detail {
        Detail::Bounce {
            bounce_type,
            bounce_subtype,
            ..
        } => (
            "Bounce",
            Some(bounce_type.as_str()),
            bounce_subtype.as_deref(),
        ),
        Detail::Complaint {
            feedback_type,
            complaint_subtype,
        } => (
            "Complaint",
            feedback_type.as_deref(),
            complaint_subtype.as_deref(),
        ),
        Detail::Delivery => ("Delivery", None, None),
        Detail::Other => ("Other", None, None),
    };
    RULES
        .iter()
        .find(|r| {
            (r.event == event || (event == "Other" && r.action == Action::Record))
                && matches(r.kind, kind)
                && matches(r.subtype, subtype)
        })
        .unwrap_or(&RULES[RULES.len() - 1])
}

/// The table as Markdown, exactly as the README shows it.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| event | type | subtype | action | counts toward | why |\n|---|---|---|---|---|---|\n",
    );
    for r in RULES {
        let rate = match r.rate {
            Rate::HardBounce => "bounce rate",
            Rate::Complaint => "complaint rate",
            Rate::None => "-",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.event,
            r.kind,
            r.subtype,
            r.action.as_str(),
            rate,
            r.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounce(t: &str, s: &str) -> Detail {
        bounce_of(t, Some(s))
    }

    fn bounce_of(t: &str, s: Option<&str>) -> Detail {
        Detail::Bounce {
            bounce_type: t.into(),
            bounce_subtype: s.map(Into::into),
            status: None,
            diagnostic_code: None,
        }
    }

    #[test]
    fn the_table_decides_as_the_reference_says() {
        assert_eq!(
            decide(&bounce("Permanent", "NoEmail")).action,
            Action::Suppress
        );
        assert_eq!(
            decide(&bounce("Permanent", "OnAccountSuppressionList")).rate,
            Rate::None
        );
        assert_eq!(
            decide(&bounce("Permanent", "Brand-new")).rate,
            Rate::HardBounce
        );
        assert_eq!(
            decide(&bounce("Transient", "MailboxFull")).action,
            Action::CountSoftBounce
        );
        assert_eq!(
            decide(&bounce("Transient", "ContentRejected")).action,
            Action::ContentProblem
        );
        assert_eq!(
            decide(&bounce("Undetermined", "Undetermined")).action,
            Action::CountSoftBounce
        );
        // No subtype: any subtype of its type, never a content problem.
        let permanent = decide(&bounce_of("Permanent", None));
        assert_eq!(
            (permanent.action, permanent.rate),
            (Action::Suppress, Rate::HardBounce)
        );
        for kind in ["Transient", "Undetermined", "Brand-new"] {
            assert_eq!(
                decide(&bounce_of(kind, None)).action,
                Action::CountSoftBounce,
                "{kind}"
            );
        }
        let complaint = |t: Option<&str>, s: Option<&str>| Detail::Complaint {
            feedback_type: t.map(Into::into),
            complaint_subtype: s.map(Into::into),
        };
        assert_eq!(
            decide(&complaint(Some("not-spam"), None)).action,
            Action::NotSpam
        );
        assert_eq!(
            decide(&complaint(Some("abuse"), None)).rate,
            Rate::Complaint
        );
        assert_eq!(decide(&complaint(None, None)).action, Action::Suppress);
        assert_eq!(
            decide(&complaint(None, Some("OnAccountSuppressionList"))).rate,
            Rate::None
        );
        assert_eq!(decide(&Detail::Delivery).action, Action::ResetSoftBounces);
        assert_eq!(decide(&Detail::Other).action, Action::Record);
    }

    #[test]
    fn the_readme_shows_this_table() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README's policy table differs from src/ses/policy.rs; paste:\n{}",
            markdown_table()
        );
    }
}
