//! The README and the other documents as a reader gets them: nothing pasted
//! in by mistake (a stack trace, terminal colour codes), and the Rust
//! version they ask for is the one Cargo.toml declares.

use crate::helpers::fixture;

const DOCUMENTS: [&str; 4] = [
    "README.md",
    "fixtures/README.md",
    "docs/decisions.md",
    "BENCHMARKS.md",
];

#[test]
fn the_documents_hold_no_stack_trace_or_colour_codes() {
    for document in DOCUMENTS {
        let text = std::fs::read_to_string(fixture(document)).expect("readable");
        for (pasted, what) in [
            ("stack backtrace:", "a stack trace"),
            ("panicked at", "a panic message"),
            ("\u{1b}[", "a terminal colour code"),
        ] {
            let at = text.find(pasted);
            assert!(
                at.is_none(),
                "{document} holds {what} at line {}",
                at.map(|i| text[..i].lines().count() + 1).unwrap_or(0)
            );
        }
    }
}

#[test]
fn the_readme_asks_for_the_rust_version_cargo_toml_declares() {
    let manifest = std::fs::read_to_string(fixture("Cargo.toml")).expect("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml declares rust-version");
    let readme = std::fs::read_to_string(fixture("README.md")).expect("README");
    assert!(
        readme.contains(&format!("Rust toolchain ({version} or later)")),
        "the README does not ask for Rust {version}"
    );
}
