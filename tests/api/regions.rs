//! Every AWS region (SPEC §1): one TEST-ONLY certificate per naming shape of
//! `reference/sns.md` ("Signing certificate names by region"), all for the
//! test key, so a test message verifies under each. A certificate serves its
//! own region's URL only, the URL's host must be its region's partition's,
//! and the certificate URL's region must be the topic's.

use bouncer::app::{Application, Hooks};

use crate::cert_fetch::CertHost;
use crate::helpers::{
    Backend, TempDir, TestApp, assert_refused, assert_status, fixture, spawn_app_with,
    test_settings,
};
use crate::on_both_databases;
use crate::signing::{Msg, TEST_CERT_FILE, TOPIC};

/// A region of one naming shape, and the TEST-ONLY certificate made for it.
struct Shape {
    partition: &'static str,
    region: &'static str,
    domain: &'static str,
    /// The subject CN its certificates carry.
    cn: &'static str,
    cert: &'static str,
}

const REGIONS: &str = "fixtures/test-only/regions";

const SHAPES: [Shape; 7] = [
    // Most regions.
    Shape {
        partition: "aws",
        region: "us-east-1",
        domain: "amazonaws.com",
        cn: "sns.amazonaws.com",
        cert: TEST_CERT_FILE,
    },
    // An opt-in region.
    Shape {
        partition: "aws",
        region: "eu-south-1",
        domain: "amazonaws.com",
        cn: "sns-signing.eu-south-1.amazonaws.com",
        cert: "TEST-ONLY-sns-signing.eu-south-1.amazonaws.com.pem",
    },
    // GovCloud: the east region signs with the west region's name.
    Shape {
        partition: "aws-us-gov",
        region: "us-gov-east-1",
        domain: "amazonaws.com",
        cn: "sns-us-gov-west-1.amazonaws.com",
        cert: "TEST-ONLY-sns-us-gov-west-1.amazonaws.com.pem",
    },
    Shape {
        partition: "aws-cn",
        region: "cn-northwest-1",
        domain: "amazonaws.com.cn",
        cn: "sns-cn-northwest-1.amazonaws.com.cn",
        cert: "TEST-ONLY-sns-cn-northwest-1.amazonaws.com.cn.pem",
    },
    // An isolated partition.
    Shape {
        partition: "aws-iso",
        region: "us-iso-east-1",
        domain: "c2s.ic.gov",
        cn: "sns-us-iso-east-1.c2s.ic.gov",
        cert: "TEST-ONLY-sns-us-iso-east-1.c2s.ic.gov.pem",
    },
    // The European Sovereign Cloud.
    Shape {
        partition: "aws-eusc",
        region: "eusc-de-east-1",
        domain: "amazonaws.eu",
        cn: "sns-signing.eusc-de-east-1.amazonaws.eu",
        cert: "TEST-ONLY-sns-signing.eusc-de-east-1.amazonaws.eu.pem",
    },
    // A region not known yet: `sns.` and its partition's domain.
    Shape {
        partition: "aws-cn",
        region: "cn-future-1",
        domain: "amazonaws.com.cn",
        cn: "sns.amazonaws.com.cn",
        cert: "TEST-ONLY-sns.amazonaws.com.cn.pem",
    },
];

impl Shape {
    fn topic(&self) -> String {
        format!(
            "arn:{}:sns:{}:123456789012:ses-feedback",
            self.partition, self.region
        )
    }

    fn cert_url(&self) -> String {
        format!(
            "https://sns.{}.{}/SimpleNotificationService-bouncer-TEST-ONLY.pem",
            self.region, self.domain
        )
    }

    fn cert_file(&self) -> std::path::PathBuf {
        if self.cert == TEST_CERT_FILE {
            fixture(TEST_CERT_FILE)
        } else {
            fixture(&format!("{REGIONS}/{}", self.cert))
        }
    }

    /// An `SNS_CERT_PINS` entry: this shape's certificate at `url`.
    fn pinned_at(&self, url: &str) -> String {
        format!("{url}={}", self.cert_file().display())
    }

    /// A notification from this region's topic, naming `cert_url`.
    fn message(&self, cert_url: &str) -> Msg {
        Msg::notification(&self.topic(), &format!("from {}", self.region))
            .set("SigningCertURL", cert_url)
            .sign()
    }
}

/// Every region's topic allowed and its certificate pinned at its own URL.
async fn app_for_every_region(backend: Backend, hooks: Hooks) -> TestApp {
    spawn_app_with(backend, move |s, h| {
        s.sns_topic_arns = SHAPES.iter().map(Shape::topic).collect();
        s.sns_cert_pins = SHAPES.iter().map(|r| r.pinned_at(&r.cert_url())).collect();
        *h = hooks;
    })
    .await
}

async fn a_message_from_every_region_verifies_with_its_regions_certificate(backend: Backend) {
    let app = app_for_every_region(backend, Hooks::default()).await;
    for shape in &SHAPES {
        let msg = shape.message(&shape.cert_url());
        assert_status(&app.post(&msg).await, 200, "stored");
        assert_eq!(
            app.db.count_messages(&msg.id()).await,
            1,
            "{}",
            shape.region
        );
    }
    app.stop().await;
}

async fn a_certificate_url_of_another_region_than_the_topic_is_refused(backend: Backend) {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let app = app_for_every_region(
        backend,
        Hooks {
            outbound: overrides,
            ..Hooks::default()
        },
    )
    .await;
    let [us_east_1, eu_south_1, us_gov_east_1, ..] = &SHAPES;
    // Both URLs are pinned and both certificates good for their own URL.
    for (topic, url) in [
        (eu_south_1, us_east_1.cert_url()),
        (us_east_1, eu_south_1.cert_url()),
        // The same partition is not enough: the region is the topic's.
        (
            us_gov_east_1,
            us_gov_east_1
                .cert_url()
                .replace("us-gov-east-1", "us-gov-west-1"),
        ),
    ] {
        let answer = app.post(&topic.message(&url)).await;
        assert_refused(&answer, 403, "certificate_region_mismatch");
        assert!(
            answer.1["detail"]
                .as_str()
                .is_some_and(|d| d.contains(topic.region)),
            "{}",
            answer.1
        );
    }
    // Checked before anything leaves the machine.
    let fetched = CertHost::url("SimpleNotificationService-good.pem");
    assert_refused(
        &app.post(&eu_south_1.message(&fetched)).await,
        403,
        "certificate_region_mismatch",
    );
    assert_eq!(host.hits("SimpleNotificationService-good.pem"), 0);
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
    host.stop().await;
}

async fn a_fetched_certificate_of_another_region_is_refused(backend: Backend) {
    let host = CertHost::start().await;
    let overrides = host.overrides();
    let app = spawn_app_with(backend, move |_, hooks| hooks.outbound = overrides).await;
    // The stand-in plays sns.us-east-1.amazonaws.com, serving every other
    // region's certificate.
    for shape in &SHAPES[1..] {
        let msg = Msg::notification(TOPIC, "x")
            .set("SigningCertURL", &CertHost::url(shape.cert))
            .sign();
        let answer = app.post(&msg).await;
        assert_refused(&answer, 403, "certificate_invalid");
        let detail = answer.1["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(shape.cn) && detail.contains("us-east-1 signs as sns.amazonaws.com"),
            "{detail}"
        );
        assert_eq!(host.hits(shape.cert), 1);
    }
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
    host.stop().await;
}

async fn s3_look_alikes_and_hosts_under_another_partitions_domain_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |_, _| {}).await;
    for url in [
        // S3 endpoints that would serve a bucket named `sns`.
        "https://sns.s3-external-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
        // A region under a domain that is not its partition's.
        "https://sns.cn-north-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.c2s.ic.gov/SimpleNotificationService-x.pem",
    ] {
        let msg = Msg::notification(TOPIC, "x")
            .set("SigningCertURL", url)
            .sign();
        assert_refused(&app.post(&msg).await, 403, "bad_certificate_url");
    }
    assert_eq!(app.db.total_messages().await, 0);
    app.stop().await;
}

on_both_databases!(
    a_message_from_every_region_verifies_with_its_regions_certificate,
    a_certificate_url_of_another_region_than_the_topic_is_refused,
    a_fetched_certificate_of_another_region_is_refused,
    s3_look_alikes_and_hosts_under_another_partitions_domain_are_refused,
);

/// Why start-up with `configure`d settings fails (SQLite; nothing is stored).
pub async fn start_up_error(configure: impl FnOnce(&mut bouncer::config::Settings)) -> String {
    let dir = TempDir::new();
    let mut settings = test_settings(
        &format!("sqlite:{}", dir.path().join("b.db").display()),
        dir.path(),
    );
    configure(&mut settings);
    match Application::build(settings, Hooks::default()).await {
        Ok(_) => panic!("start-up should have been refused"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_pinned_at_another_regions_url_stops_start_up() {
    for (i, shape) in SHAPES.iter().enumerate() {
        let other = &SHAPES[(i + 1) % SHAPES.len()];
        let pin = shape.pinned_at(&other.cert_url());
        let error = start_up_error(|s| s.sns_cert_pins = vec![pin]).await;
        assert!(
            error.contains(&format!("{} signs as {}", other.region, other.cn)),
            "{} at {}: {error}",
            shape.cn,
            other.region
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_is_not_an_sns_topic_arn_stops_start_up() {
    for (topic, why) in [
        ("ses-feedback", "not an SNS topic ARN"),
        (
            "arn:aws:sns:cn-north-1:123456789012:ses-feedback",
            "region cn-north-1 is in partition aws-cn",
        ),
        (
            "arn:aws:sns:s3-external-1:123456789012:ses-feedback",
            "not a region name",
        ),
        (
            "arn:aws:sns:us-east-1:123456789012:ses-feedback:5f0c2a9e-2d1f-4a39-9b57-0f1e2d3c4b5a",
            "is a subscription ARN, not a topic ARN: give its topic's, `arn:aws:sns:us-east-1:123456789012:ses-feedback`",
        ),
        (
            "arn:aws:sns:us-east-1:123456789012:ses feedback",
            "a topic name is 1 to 256 letters, digits",
        ),
    ] {
        let error = start_up_error(|s| s.sns_topic_arns = vec![topic.into()]).await;
        assert!(
            error.contains("SNS_TOPIC_ARNS") && error.contains(why),
            "{topic}: {error}"
        );
    }
}
