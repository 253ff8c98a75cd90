//! What the end-to-end benchmarks share: the server process, the load
//! generator, and SES messages of real size. Each benchmark uses a part of
//! it, so what one leaves unused is not dead code.
#![allow(dead_code)]

pub mod http;
pub mod server;
pub mod ses;

#[path = "../../tests/api/signing.rs"]
#[allow(dead_code)]
pub mod signing;
