//! Signature verification (v1, v2) with ring, the verifier in use, beside the
//! `rsa` crate on the same real AWS messages; and the whole POST /sns handler
//! on a cached (pinned) certificate, SQLite, one message at a time.
//!
//! cargo bench --bench verify

use std::time::{Duration, Instant};

use actix_web::{App, test, web};
use base64::Engine;
use bouncer::app::{Hooks, Pipeline, configure_public};
use bouncer::config::Settings;
use bouncer::sns::envelope::Envelope;
use bouncer::sns::signature::{self, SignatureVersion};
use criterion::{Criterion, criterion_group, criterion_main};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier as _;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;

fn real(name: &str) -> Envelope {
    let path = format!("{}/fixtures/aws-real/{name}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(path).expect("fixture");
    Envelope::parse(&body, Some("Notification")).expect("envelope")
}

/// The public key of the real AWS certificate, as ring (PKCS#1) and as the
/// rsa crate (SubjectPublicKeyInfo) take it.
fn real_keys() -> (Vec<u8>, rsa::PublicKey) {
    let path = format!(
        "{}/fixtures/aws-real/certs/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let pem = std::fs::read(path).expect("cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
    let cert = pem.parse_x509().expect("x509");
    let pkcs1 = cert.public_key().subject_public_key.data.to_vec();
    let rsa_key = rsa::PublicKey::from_public_key_der(cert.public_key().raw).expect("rsa key");
    (pkcs1, rsa_key)
}

fn bench_signatures(c: &mut Criterion) {
    let (pkcs1, rsa_key) = real_keys();
    let mut group = c.benchmark_group("signature");
    for (label, file, version) in [
        ("v1", "notification-sv1.json", SignatureVersion::V1),
        ("v2", "notification-sv2.json", SignatureVersion::V2),
    ] {
        let envelope = real(file);
        let signed = signature::string_to_sign(&envelope);
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&envelope.signature)
            .expect("b64");
        group.bench_function(format!("ring_{label}"), |b| {
            b.iter(|| {
                signature::verify(&pkcs1, version, signed.as_bytes(), &sig).expect("verifies")
            })
        });
        let rsa_sig = Signature::try_from(sig.as_slice()).expect("sig");
        group.bench_function(format!("rsa_crate_{label}"), |b| match version {
            SignatureVersion::V1 => {
                let key = VerifyingKey::<sha1::Sha1>::new(rsa_key.clone());
                b.iter(|| key.verify(signed.as_bytes(), &rsa_sig).expect("verifies"))
            }
            SignatureVersion::V2 => {
                let key = VerifyingKey::<sha2::Sha256>::new(rsa_key.clone());
                b.iter(|| key.verify(signed.as_bytes(), &rsa_sig).expect("verifies"))
            }
        });
    }
    group.finish();
}

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-feedback";
const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bouncer-TEST-ONLY.pem";

/// Signs fresh notifications with the TEST-ONLY key (SignatureVersion 2).
struct Signer {
    key: ring::rsa::KeyPair,
    rng: ring::rand::SystemRandom,
    next: u64,
}

impl Signer {
    fn new() -> Signer {
        let path = format!(
            "{}/fixtures/test-only/TEST-ONLY-sns-signing-key.pem",
            env!("CARGO_MANIFEST_DIR")
        );
        let der = PrivatePkcs8KeyDer::from_pem_file(path).expect("key");
        Signer {
            key: ring::rsa::KeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("pkcs8"),
            rng: ring::rand::SystemRandom::new(),
            next: 0,
        }
    }

    fn notification(&mut self) -> String {
        self.next += 1;
        let id = format!("bench-{}-{}", std::process::id(), self.next);
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("now");
        let message = r#"{"notificationType":"Delivery","mail":{"messageId":"x"}}"#;
        let signed = format!(
            "Message\n{message}\nMessageId\n{id}\nTimestamp\n{now}\nTopicArn\n{TOPIC}\nType\nNotification\n"
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &self.rng,
                signed.as_bytes(),
                &mut sig,
            )
            .expect("sign");
        serde_json::json!({
            "Type": "Notification", "MessageId": id, "TopicArn": TOPIC, "Message": message,
            "Timestamp": now, "SignatureVersion": "2",
            "Signature": base64::engine::general_purpose::STANDARD.encode(sig),
            "SigningCertURL": CERT_URL,
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        })
        .to_string()
    }
}

fn bench_handler(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = std::env::temp_dir().join(format!("bouncer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut settings = Settings::defaults();
    settings.database_url = format!("sqlite:{}", dir.join("bench.db").display());
    settings.spool_path = dir.join("bench.spool");
    settings.sns_topic_arns = vec![TOPIC.into()];
    settings.sns_cert_pins = vec![format!(
        "{CERT_URL}={}/fixtures/test-only/TEST-ONLY-sns-signing-cert.pem",
        env!("CARGO_MANIFEST_DIR")
    )];
    let pipeline = runtime
        .block_on(Pipeline::build(&settings, &Hooks::default()))
        .expect("pipeline");
    let data = web::Data::from(pipeline.state.clone());
    let service = runtime.block_on(test::init_service(
        App::new().configure(|cfg| configure_public(cfg, data.clone())),
    ));
    let mut signer = Signer::new();
    let mut group = c.benchmark_group("handler");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("post_sns_cached_cert_sqlite", |b| {
        b.iter_custom(|iters| {
            let bodies: Vec<String> = (0..iters).map(|_| signer.notification()).collect();
            runtime.block_on(async {
                let start = Instant::now();
                for body in bodies {
                    let req = test::TestRequest::post()
                        .uri("/sns")
                        .insert_header(("x-amz-sns-message-type", "Notification"))
                        .set_payload(body)
                        .to_request();
                    let resp = test::call_service(&service, req).await;
                    assert!(resp.status().is_success());
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("parse_and_verify_cached_cert", |b| {
        b.iter_custom(|iters| {
            let bodies: Vec<String> = (0..iters).map(|_| signer.notification()).collect();
            runtime.block_on(async {
                let start = Instant::now();
                for body in bodies {
                    let envelope =
                        Envelope::parse(body.as_bytes(), Some("Notification")).expect("parse");
                    pipeline
                        .state
                        .verifier
                        .verify(envelope, body.as_bytes())
                        .await
                        .expect("verify");
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_signatures, bench_handler);
criterion_main!(benches);
