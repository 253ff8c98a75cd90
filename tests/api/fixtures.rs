//! The signed fixtures in `fixtures/signed/` are exactly the templates signed
//! with the TEST-ONLY key, and every one is accepted by the service.

use bouncer::clock::Clock;
use bouncer::time::Timestamp;

use crate::helpers::{Backend, fixture, spawn_app_with};
use crate::on_both_databases;
use crate::signing::sign_template;

fn signed_fixtures() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = fixture("fixtures/templates");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("templates")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for template in paths {
        let name = template
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let signed = std::fs::read_to_string(fixture(&format!("fixtures/signed/{name}")))
            .unwrap_or_else(|_| {
                panic!("fixtures/signed/{name} is missing: run cargo run --example sign_fixtures")
            });
        let expected =
            sign_template(&std::fs::read_to_string(&template).expect("template")).expect("sign");
        assert_eq!(
            signed, expected,
            "fixtures/signed/{name} is stale: run cargo run --example sign_fixtures"
        );
        out.push((name, signed));
    }
    assert!(
        out.len() >= 8,
        "every message type in both signature versions"
    );
    out
}

async fn every_signed_fixture_is_accepted(backend: Backend) {
    let fixtures = signed_fixtures();
    let clock = Clock::fixed(Timestamp::parse_rfc3339("2026-11-25T08:00:05Z").expect("time"));
    let app = spawn_app_with(backend, move |_, hooks| hooks.clock = clock).await;
    for (name, body) in fixtures {
        let value: serde_json::Value = serde_json::from_str(&body).expect("json");
        let answer = app.post_raw(body.clone(), value["Type"].as_str()).await;
        assert_eq!(answer.0, 200, "{name}: {answer:?}");
    }
    app.stop().await;
}

on_both_databases!(every_signed_fixture_is_accepted);
