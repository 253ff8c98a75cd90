//! What the end-to-end benchmarks share: the server process, the load
//! generator, and SES messages of real size.

pub mod http;
pub mod server;
pub mod ses;

#[path = "../../tests/api/signing.rs"]
#[allow(dead_code)]
pub mod signing;
