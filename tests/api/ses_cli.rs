//! `bouncer ses import|diff|check` against the local SESv2 stand-in (the
//! binary itself, credentials from its environment: the standard chain),
//! the start-up refusals of a mode without what it needs, the settings in
//! `--help` and the README, and the pruning of finished pushes.

use std::process::Output;

use bouncer::app::Hooks;
use bouncer::clock::Clock;
use bouncer::config::{ManualAs, SesPauseMode, Settings};
use bouncer::time::Timestamp;
use serde_json::json;

use crate::guard::alert_kinds;
use crate::helpers::{Backend, TempDir, eventually, spawn_app_with, test_settings};
use crate::on_both_databases;
use crate::ses_account::{ACCESS_KEY, REGION, at_ses, checked, cli_status, ses_state};
use crate::ses_stand_in::SesApi;
use crate::ses_suppressions::{CHECK_ADDRESS, add};

/// `bouncer ARGS...` against `db_url` and the stand-in, with credentials
/// in the environment (the standard chain's first link).
fn ses_cli(db_url: &str, api: &SesApi, env: &[(&str, &str)], args: &[&str]) -> Output {
    let dir = TempDir::new();
    let mut cmd = crate::cli::bouncer(dir.path());
    cmd.env("DATABASE_URL", db_url)
        .env("SES_REGION", REGION)
        .env("SES_API_ENDPOINT", &api.url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", "test-only-secret")
        .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("no-credentials"),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// SES fails after the first page: the import says what it had stored by
/// then (each page is kept as it comes), and run again it finishes.
async fn an_import_cut_short_says_what_it_stored_and_a_rerun_finishes(backend: Backend) {
    let api = SesApi::start().await;
    api.cap_pages(2);
    for email in ["a@example.org", "b@example.org", "c@example.org"] {
        api.preload(email, "BOUNCE", 1_795_000_000);
    }
    let app = spawn_app_with(backend, |_, _| {}).await;
    api.fail_later_pages(400, "BadRequestException");
    let output = ses_cli(&app.db.url, &api, &[], &["ses", "import"]);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{}{err}", stdout(&output));
    assert!(
        err.contains("before it, 2 addresses were listed: 2 added, 0 in bouncer already. Run it again to finish"),
        "{err}"
    );
    api.heal("ListSuppressedDestinations");
    let output = ses_cli(&app.db.url, &api, &[], &["ses", "import"]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("3 listed in 2 pages; 1 added (source ses-account); 2 already in bouncer"),
        "{out}"
    );
    app.stop().await;
    api.stop().await;
}

async fn import_pages_through_the_ses_list_and_never_erases_a_row(backend: Backend) {
    let api = SesApi::start().await;
    api.cap_pages(2);
    let day = 1_795_000_000; // 2026-11-18
    for (email, reason) in [
        ("a@example.org", "BOUNCE"),
        ("b@example.org", "BOUNCE"),
        ("c@example.org", "COMPLAINT"),
        ("known@example.org", "BOUNCE"),
        ("e@example.org", "BOUNCE"),
    ] {
        api.preload(email, reason, day);
    }
    api.preload("old@example.org", "BOUNCE", day - 400 * 86_400);
    let app = spawn_app_with(backend, |_, _| {}).await;
    add(&app, "known@example.org").await;
    let output = ses_cli(
        &app.db.url,
        &api,
        &[],
        &[
            "ses",
            "import",
            "--reason",
            "bounce",
            "--since",
            "2026-01-01",
        ],
    );
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.contains("4 listed in 2 pages; 3 added (source ses-account); 1 already in bouncer"),
        "{out}"
    );
    let lists = api.calls_of("ListSuppressedDestinations");
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].query_values("Reason"), ["BOUNCE"]);
    assert_eq!(lists[0].query_values("StartDate"), ["2026-01-01T00:00:00Z"]);
    assert!(lists[0].query_values("NextToken").is_empty());
    assert_eq!(lists[1].query_values("NextToken"), ["page-2"]);
    assert_eq!(lists[0].scope().map(|s| s.2), Some("ses".into()));
    let source = |email: &'static str| {
        app.db
            .text("SELECT source FROM suppressions WHERE email = $1", email)
    };
    assert_eq!(
        source("a@example.org").await.as_deref(),
        Some("ses-account")
    );
    assert_eq!(
        source("c@example.org").await,
        None,
        "only bounces were asked for"
    );
    assert_eq!(source("old@example.org").await, None, "only since 2026");
    let known = app.admin_get("/v1/suppressions/known@example.org").await.1;
    assert_eq!(known["suppression"]["reason"], "manual", "kept: {known}");
    assert_eq!(known["suppression"]["note"], "asked us to stop");
    // Everything, the second time: the complaint comes in as a complaint.
    let output = ses_cli(&app.db.url, &api, &[], &["ses", "import"]);
    assert!(
        stdout(&output).contains("6 listed in 3 pages; 2 added"),
        "{}",
        stdout(&output)
    );
    let c = app.admin_get("/v1/suppressions/c@example.org").await.1;
    assert_eq!(c["suppression"]["reason"], "complaint");
    app.stop().await;
    api.stop().await;
}

async fn diff_prints_what_only_one_list_holds(backend: Backend) {
    let api = SesApi::start().await;
    api.preload("both@example.org", "BOUNCE", 1_795_000_000);
    api.preload("ses-only@example.org", "COMPLAINT", 1_795_000_000);
    let app = spawn_app_with(backend, |_, _| {}).await;
    add(&app, "both@example.org").await;
    add(&app, "ours-only@example.org").await;
    assert_eq!(
        ses_state(&app).await["push"]["pending"],
        0,
        "pushing is off: nothing is queued"
    );
    let output = ses_cli(&app.db.url, &api, &[], &["ses", "diff"]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("only-in-bouncer\tours-only@example.org\tmanual\n"),
        "{out}"
    );
    assert!(
        out.contains("only-at-ses\tses-only@example.org\tCOMPLAINT\n"),
        "{out}"
    );
    assert!(!out.contains("\tboth@example.org"), "{out}");
    assert!(api.calls_of("PutSuppressedDestination").is_empty());
    assert!(
        out.contains("in both: 1; only in bouncer: 1; only at SES (eu-west-1): 1"),
        "{out}"
    );
    app.stop().await;
    api.stop().await;
}

/// `serve` pushing suppressions and pausing the account at the stand-in,
/// whose credentials lack `ses:PutSuppressedDestination`; its start-up
/// check done.
async fn started_without_put_permission(backend: Backend) -> (SesApi, crate::helpers::TestApp) {
    let api = SesApi::start().await;
    api.fail_always("PutSuppressedDestination", 403, "AccessDeniedException");
    let app = spawn_app_with(backend, |s, h| {
        at_ses(s, h, &api);
        s.ses_push_suppressions = true;
        s.ses_pause_mode = SesPauseMode::Account;
    })
    .await;
    checked(&app).await;
    (api, app)
}

async fn check_names_the_missing_permission(backend: Backend) {
    // `serve` says it at start-up: recorded, shown, alerted.
    let (api, app) = started_without_put_permission(backend).await;
    let check = ses_state(&app).await["check"].clone();
    assert_eq!(
        check["missing"],
        json!(["ses:PutSuppressedDestination"]),
        "{check}"
    );
    assert!(
        alert_kinds(&app)
            .await
            .contains(&"ses_permissions".to_owned())
    );
    assert!(cli_status(&app).contains("missing ses:PutSuppressedDestination"));
    // And `bouncer ses check` on demand, with each API's verdict.
    let env = [
        ("SES_PUSH_SUPPRESSIONS", "true"),
        ("SES_PAUSE_MODE", "account"),
    ];
    let output = ses_cli(&app.db.url, &api, &env, &["ses", "check"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("missing permissions: ses:PutSuppressedDestination\n"),
        "{out}"
    );
    for allowed in [
        "ses:GetAccount",
        "ses:PutAccountSendingAttributes",
        "ses:DeleteSuppressedDestination",
        "ses:ListSuppressedDestinations",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("allowed") && l.contains(allowed)),
            "{allowed}: {out}"
        );
    }
    assert!(
        out.contains("SES account in eu-west-1: sending enabled, enforcement HEALTHY"),
        "{out}"
    );
    assert!(api.account_enabled(), "the dry call changed nothing");
    assert!(!api.listed().contains_key(CHECK_ADDRESS));
    app.stop().await;
    api.stop().await;
}

/// Without credentials no call is made: `bouncer ses check` says what it
/// could not check and exits 2, and the check it keeps is shown as such by
/// `bouncer status` and `GET /v1/sending`, never as "no permission missing".
#[tokio::test]
async fn a_check_without_credentials_is_not_kept_as_a_clean_one() {
    let api = SesApi::start().await;
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.path().join("b.db").display());
    let run = |args: &[&str]| {
        let output = crate::cli::bouncer(dir.path())
            .env("DATABASE_URL", &url)
            .env("SES_REGION", REGION)
            .env("SES_API_ENDPOINT", &api.url)
            .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-credentials"),
            )
            .args(args)
            .output()
            .expect("runs");
        (output.status.code(), stdout(&output))
    };
    assert_eq!(run(&["migrate"]).0, Some(0));
    let (code, out) = run(&["ses", "check"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(!out.contains("missing permissions: none"), "{out}");
    assert!(
        out.contains("not checked (could not be checked; the lines above say why): ses:GetAccount, ses:ListSuppressedDestinations"),
        "{out}"
    );
    assert!(api.calls().is_empty(), "no call without credentials");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("unknown")).count(),
        2,
        "one line a permission, the SDK's reason included: {out}"
    );
    assert!(!out.contains("\n  Environment:"), "{out}");
    let (code, status) = run(&["status"]);
    assert_eq!(code, Some(0), "{status}");
    let line = status
        .lines()
        .find(|l| l.starts_with("SES check:"))
        .unwrap_or_default();
    assert!(!line.contains("no permission missing"), "{status}");
    assert!(
        line.contains("could not check ses:GetAccount, ses:ListSuppressedDestinations (")
            && line.contains("no credentials found in chain"),
        "{status}"
    );
    assert!(
        !status.contains("  Environment:"),
        "the SDK's reason in one line: {status}"
    );
    let app = spawn_app_with(Backend::Sqlite, |s, _| {
        s.database_url = url.clone();
    })
    .await;
    let check = ses_state(&app).await["check"].clone();
    assert_eq!(check["missing"], json!([]), "{check}");
    assert_eq!(
        check["unchecked"],
        json!(["ses:GetAccount", "ses:ListSuppressedDestinations"]),
        "{check}"
    );
    app.stop().await;
    api.stop().await;
}

/// The start-up check finds a permission missing (alerted), the next
/// start's check can call nothing, the one after finds it missing again:
/// it was never found allowed in between, so it is not newly missing and
/// is not alerted twice.
async fn a_permission_still_missing_after_a_check_that_could_not_tell_is_alerted_once(
    backend: Backend,
) {
    const ALL: [&str; 4] = [
        "GetAccount",
        "PutAccountSendingAttributes",
        "PutSuppressedDestination",
        "DeleteSuppressedDestination",
    ];
    let (api, app) = started_without_put_permission(backend).await;
    let alerted = |kinds: Vec<String>| kinds.iter().filter(|k| *k == "ses_permissions").count();
    assert_eq!(alerted(alert_kinds(&app).await), 1);
    let (db, dir, settings, hooks) = app.stop().await;

    // Every call refused for another reason: nothing can be told.
    for operation in ALL {
        api.fail_always(operation, 400, "BadRequestException");
    }
    let app = crate::helpers::start(settings, hooks, db, dir).await;
    eventually("a check that could tell nothing is recorded", || async {
        ses_state(&app).await["check"]["unchecked"]
            .as_array()
            .is_some_and(|u| u.len() == ALL.len())
    })
    .await;
    let (db, dir, settings, hooks) = app.stop().await;

    for operation in ALL {
        api.heal(operation);
    }
    api.fail_always("PutSuppressedDestination", 403, "AccessDeniedException");
    let app = crate::helpers::start(settings, hooks, db, dir).await;
    eventually("the permission is found missing again", || async {
        ses_state(&app).await["check"]["missing"] == json!(["ses:PutSuppressedDestination"])
    })
    .await;
    assert_eq!(
        alerted(alert_kinds(&app).await),
        1,
        "the same missing permission is not alerted again"
    );
    app.stop().await;
    api.stop().await;
}

on_both_databases!(
    a_permission_still_missing_after_a_check_that_could_not_tell_is_alerted_once,
    an_import_cut_short_says_what_it_stored_and_a_rerun_finishes,
    import_pages_through_the_ses_list_and_never_erases_a_row,
    diff_prints_what_only_one_list_holds,
    check_names_the_missing_permission,
);

#[tokio::test]
async fn start_up_refuses_a_mode_without_what_it_needs() {
    let dir = TempDir::new();
    let url = format!("sqlite:{}", dir.path().join("b.db").display());
    type Change = fn(&mut Settings);
    let cases: [(Change, &str); 3] = [
        (
            |s| s.ses_pause_mode = SesPauseMode::Account,
            "SES_PAUSE_MODE=account needs SES_REGION",
        ),
        (
            |s| {
                s.ses_pause_mode = SesPauseMode::ConfigurationSets;
                s.ses_region = Some(REGION.into());
            },
            "needs SES_CONFIGURATION_SETS",
        ),
        (
            |s| s.ses_push_suppressions = true,
            "SES_PUSH_SUPPRESSIONS=true needs SES_REGION",
        ),
    ];
    for (change, expected) in cases {
        let mut settings = test_settings(&url, dir.path());
        change(&mut settings);
        let refused = bouncer::app::Application::build(settings, Hooks::default()).await;
        let error = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn every_ses_setting_is_in_help_and_in_the_readme() {
    let dir = TempDir::new();
    let output = crate::cli::bouncer(dir.path())
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    let readme = std::fs::read_to_string(crate::helpers::fixture("README.md")).expect("README");
    for (var, default) in [
        ("SES_PAUSE_MODE", Some("off")),
        ("SES_CONFIGURATION_SETS", None),
        ("SES_REGION", None),
        ("SES_API_ENDPOINT", None),
        ("SES_PUSH_SUPPRESSIONS", Some("false")),
        ("SES_PUSH_MANUAL_AS", Some("bounce")),
        ("SES_PUSH_RATE_PER_SEC", Some("1")),
        ("SES_RETRY_MIN_MS", Some("1000")),
        ("SES_POLL_MS", Some("1000")),
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} missing from --help"
        );
        assert!(
            readme.contains(&format!("| `{var}`")),
            "{var} is not in the README's table"
        );
        if let Some(default) = default {
            assert!(
                help.contains(&format!("[env: {var}=] [default: {default}]")),
                "default of {var}:\n{help}"
            );
        }
    }
}

async fn finished_pushes_are_pruned_a_week_after_ses_confirmed_them(backend: Backend) {
    let api = SesApi::start().await;
    let long_ago = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").expect("a time");
    let app = spawn_app_with(backend, |s, h| {
        at_ses(s, h, &api);
        s.ses_push_suppressions = true;
        s.ses_push_manual_as = ManualAs::Bounce;
        h.clock = Clock::fixed(long_ago);
    })
    .await;
    checked(&app).await;
    add(&app, "early@example.net").await;
    eventually("pushed", || async {
        ses_state(&app).await["push"]["done"] == 1
    })
    .await;
    let pruned = crate::retention::prune(&app.db.url);
    assert!(pruned.contains(", 1 ses_pushes"), "{pruned}");
    assert_eq!(ses_state(&app).await["push"]["done"], 0);
    assert!(
        api.listed().contains_key("early@example.net"),
        "only bouncer's record of the push goes"
    );
    app.stop().await;
    api.stop().await;
}

on_both_databases!(finished_pushes_are_pruned_a_week_after_ses_confirmed_them);
