//! Signs every envelope template in `fixtures/templates/` with the TEST-ONLY
//! key and writes it to `fixtures/signed/` (same file name). RSA PKCS#1 v1.5
//! signatures are deterministic, so re-running changes nothing unless a
//! template changed; a test checks that the two folders agree.
//!
//! cargo run --example sign_fixtures

#[path = "../tests/api/signing.rs"]
#[allow(dead_code)]
mod signing;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut names: Vec<_> = std::fs::read_dir(root.join("templates"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    for template in names {
        let body = std::fs::read_to_string(&template)?;
        let signed = signing::sign_template(&body)?;
        let name = template.file_name().ok_or("no file name")?;
        std::fs::write(root.join("signed").join(name), signed)?;
        println!("signed {}", name.to_string_lossy());
    }
    Ok(())
}
