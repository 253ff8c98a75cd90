//! Who may use the admin listener (`/v1`, `/metrics`): one middleware wraps
//! all of it, so no handler can forget it. With `API_TOKENS` set, every
//! request needs `Authorization: Bearer <token>` matching one of them
//! (the scheme in any case, RFC 7235; tokens compared in constant time, over
//! SHA-256 digests so that lengths leak nothing), from loopback or not. With
//! no token configured, the admin listener is on loopback (start-up refuses
//! otherwise) and serves whoever can connect to it. No request header
//! decides who is local: the listener's address does.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The configured tokens, as digests with the name of their holder.
pub struct ApiTokens {
    tokens: Vec<(String, [u8; 32])>,
}

fn digest(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiTokens {
    /// `API_TOKENS`: `name:token` pairs. A value that could never be
    /// presented (an empty token, one with spaces around it: the header is
    /// trimmed), one without a name to record as who made a change, or one
    /// token under two names (the later name would take the other's
    /// changes) is refused, naming the entry. A name may hold two tokens,
    /// for a rotation.
    pub fn parse(entries: &[String]) -> anyhow::Result<ApiTokens> {
        let mut tokens: Vec<(String, [u8; 32])> = Vec::new();
        let entries = entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty());
        for (n, entry) in entries.enumerate() {
            // Named by position and name, never by its token: the error
            // goes to logs, and the setting's value is a secret.
            let (name, token) = entry.split_once(':').unwrap_or(("", entry));
            let refuse = |why: &str| {
                let which = match name.trim() {
                    "" => format!("entry {}", n + 1),
                    named => format!("entry {} (`{named}`)", n + 1),
                };
                anyhow::anyhow!("API_TOKENS: {which}: {why}")
            };
            if !entry.contains(':') {
                return Err(refuse(
                    "an entry is `name:token`; the name is recorded as who made a change",
                ));
            }
            if name.trim().is_empty() {
                return Err(refuse("the name before `:` is empty"));
            }
            if name.trim() != name {
                return Err(refuse("the name has spaces around it"));
            }
            if token.is_empty() {
                return Err(refuse("the token is empty"));
            }
            // What an `Authorization` header can carry after its trimming.
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(refuse(
                    "the token holds spaces or characters other than visible ASCII, which no Authorization header can carry",
                ));
            }
            let token = digest(token);
            if let Some((other, _)) = tokens.iter().find(|(_, t)| *t == token) {
                if other != name {
                    return Err(refuse(&format!(
                        "its token is given to `{other}` too: changes could not be told apart"
                    )));
                }
                continue;
            }
            tokens.push((name.to_owned(), token));
        }
        Ok(ApiTokens { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The holder of `token`. Every token is compared, match or not.
    fn holder(&self, token: &str) -> Option<&str> {
        let presented = digest(token);
        let mut found = None;
        for (name, expected) in &self.tokens {
            if bool::from(presented.ct_eq(expected)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Who sends a request with this `Authorization` header.
    fn caller(&self, authorization: Option<&HeaderValue>) -> Result<Caller, ApiError> {
        if self.is_empty() {
            return Ok(Caller {
                name: "loopback".into(),
            });
        }
        authorization
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .and_then(|token| self.holder(token))
            .map(|name| Caller {
                name: name.to_owned(),
            })
            .ok_or(ApiError::Unauthorized)
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller of an admin request, in the request's
/// extensions for the handlers that record who made a change
/// (`web::ReqData<Caller>`).
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
}

/// The authentication layer of the admin listener (`middleware::from_fn`).
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let caller = match req.app_data::<web::Data<ApiTokens>>() {
        Some(tokens) => tokens.caller(req.headers().get(AUTHORIZATION)),
        None => {
            tracing::error!("API tokens are not configured in the admin app");
            Err(ApiError::Internal)
        }
    };
    match caller {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(refused) => {
            // Counted, not logged: someone trying tokens would otherwise
            // write the log for them.
            if let Some(state) = req.app_data::<web::Data<crate::app::AppState>>() {
                let presented = req.headers().contains_key(AUTHORIZATION);
                state
                    .metrics
                    .admin_refused(if presented { "wrong_token" } else { "no_token" });
            }
            Ok(req.error_response(refused).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in [
            "Bearer t0k",
            "bearer t0k",
            "BEARER t0k",
            "bEaReR t0k",
            "Bearer   t0k ",
            "Bearer\tt0k",
        ] {
            assert_eq!(bearer_token(header), Some("t0k"), "{header:?}");
        }
        for header in ["Basic t0k", "Bearert0k", "Bearer", "Bearer   ", "t0k", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn every_token_names_its_holder() {
        let tokens =
            ApiTokens::parse(&["backend:one".into(), "api:two".into(), " ".into()]).expect("valid");
        let caller = |h: &'static str| {
            tokens
                .caller(Some(&HeaderValue::from_static(h)))
                .map(|c| c.name)
        };
        assert_eq!(caller("Bearer one").ok().as_deref(), Some("backend"));
        assert_eq!(caller("bearer two").ok().as_deref(), Some("api"));
        assert!(caller("Bearer three").is_err());
        assert!(tokens.caller(None).is_err());
        let open = ApiTokens::parse(&[]).expect("valid");
        assert_eq!(
            open.caller(None).map(|c| c.name).ok().as_deref(),
            Some("loopback")
        );
    }

    #[test]
    fn tokens_that_cannot_work_are_refused_naming_the_entry() {
        for (entry, why) in [
            ("a:", "entry 1 (`a`): the token is empty"),
            (":s3cret", "entry 1: the name before `:` is empty"),
            ("e: s3cret", "entry 1 (`e`): the token holds spaces"),
            ("e :s3cret", "entry 1 (`e`): the name has spaces around it"),
            (
                "e:s3\u{e9}cret",
                "entry 1 (`e`): the token holds spaces or characters",
            ),
            ("s3cret", "entry 1: an entry is `name:token`"),
        ] {
            let error = ApiTokens::parse(&["ok:fine".into(), entry.into()])
                .err()
                .map(|e| e.to_string().replace("entry 2", "entry 1"));
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("API_TOKENS: ") && e.contains(why)),
                "{entry}: {error:?}"
            );
            assert!(
                error.as_deref().is_some_and(|e| !e.contains("s3")),
                "the token is not shown: {error:?}"
            );
        }
        let twice = ApiTokens::parse(&["a:s3cret".into(), "c:s3cret".into()])
            .err()
            .map(|e| e.to_string());
        assert!(
            twice.as_deref().is_some_and(|e| e
                .contains("entry 2 (`c`): its token is given to `a` too")
                && !e.contains("s3cret")),
            "{twice:?}"
        );
        // A rotation: one name, two tokens; a repeated entry is harmless.
        let rotation = ApiTokens::parse(&["web:old".into(), "web:new".into(), "web:new".into()])
            .expect("valid");
        assert_eq!(rotation.tokens.len(), 2);
    }
}
