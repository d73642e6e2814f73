//! Console sessions: signing in with an access key pair of the credentials file, the session
//! kept in the store (so that it survives a restart and is known to every process sharing the
//! store), the HttpOnly, SameSite=Strict cookie that names it, its expiry, and the checks every
//! console request passes: same origin, and for a state-changing request the session's CSRF
//! token in a header that a page of another site cannot set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::policy::DEVELOPMENT_KEY;
use crate::auth::{Caller, Principal};
use crate::domain::records::ConsoleSession;
use crate::domain::{now, Scope};
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::store::sql::Param;
use crate::store::StoreExt;
use crate::throttle::Family;
use crate::wire;

use super::no_store;

/// The cookie that names a session: `ACCOUNT.REGION.TOKEN`.
pub const COOKIE: &str = "ecsd_console";
/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-ecsd-csrf";

/// A live session and the caller it acts as.
pub struct Session {
    pub record: ConsoleSession,
    pub caller: Caller,
}

/// 244 bits from the operating system's generator (two v4 UUIDs), as hex.
fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn refused(code: ErrorCode, message: &str) -> ApiError {
    ApiError::new(code, message)
}

fn not_signed_in() -> ApiError {
    refused(
        ErrorCode::MissingAuthenticationTokenException,
        "Not signed in to the console.",
    )
}

fn expired() -> ApiError {
    refused(
        ErrorCode::MissingAuthenticationTokenException,
        "The console session has expired or was ended; sign in again.",
    )
}

/// The session cookie's scope and token, if the request carries a well-formed one.
fn named_session(headers: &HeaderMap) -> Option<(Scope, String)> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
    let mut parts = value.splitn(3, '.');
    let (account, region, token) = (parts.next()?, parts.next()?, parts.next()?);
    let well_formed = account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && crate::auth::is_region_name(region)
        && token.len() == 64
        && token.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| (Scope::new(account, region), token.to_owned()))
}

/// The live session the request's cookie names.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Session, ApiError> {
    let (scope, token) = named_session(headers).ok_or_else(not_signed_in)?;
    let id = digest(&token);
    let record = state
        .store
        .read(&scope, move |tx| tx.get::<ConsoleSession>(&[Param::Text(&id)]))
        .await?
        .filter(|r| r.expires_at > now())
        .ok_or_else(expired)?;
    // The key must still be in the credentials file, and of the session's account.
    let principal = state
        .keys
        .get(&record.access_key_id)
        .filter(|p| p.account_id() == scope.account && state.regions.serves(&scope.region))
        .ok_or_else(expired)?
        .clone();
    Ok(Session {
        record,
        caller: Caller {
            principal,
            region: scope.region,
        },
    })
}

/// Refuses a request a page of another origin made: browsers say so in `Sec-Fetch-Site` and
/// `Origin`.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let cross = || {
        refused(
            ErrorCode::AccessDeniedException,
            "The console refuses requests made by pages of another origin.",
        )
    };
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if text("sec-fetch-site").is_some_and(|site| site != "same-origin" && site != "none") {
        return Err(cross());
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let host = text(header::HOST.as_str()).unwrap_or_default();
        let ours = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|h| h.eq_ignore_ascii_case(host));
        if !ours {
            return Err(cross());
        }
    }
    Ok(())
}

/// A state-changing request must come from our own page, which alone knows the CSRF token.
pub fn check_csrf(session: &Session, headers: &HeaderMap) -> Result<(), ApiError> {
    same_origin(headers)?;
    let sent = headers.get(CSRF_HEADER).map_or(&b""[..], HeaderValue::as_bytes);
    if bool::from(sent.ct_eq(session.record.csrf_token.as_bytes())) {
        Ok(())
    } else {
        Err(refused(
            ErrorCode::AccessDeniedException,
            "The request does not carry this console session's CSRF token (X-Ecsd-Csrf).",
        ))
    }
}

/// What the page learns of its session.
fn describe(principal: &Principal, region: &str, record: &ConsoleSession) -> Value {
    json!({
        "principal": principal.name(),
        "principalArn": principal.arn(),
        "account": principal.account_id(),
        "region": region,
        "expiresAt": record.expires_at,
        "csrfToken": record.csrf_token,
    })
}

fn set_cookie(response: &mut Response, value: &str, max_age: u64) {
    let cookie = format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// Whether the page may offer to sign in with the development key at one click: only when the
/// server knows no other principal, and only to a browser on this machine.
fn development_sign_in(state: &AppState, peer: Option<&SocketAddr>) -> bool {
    let development = state
        .keys
        .get(DEVELOPMENT_KEY)
        .is_some_and(|p| p.secret() == DEVELOPMENT_KEY && p.name() == DEVELOPMENT_KEY);
    development && peer.is_some_and(|p| p.ip().is_loopback())
}

/// `GET /console/session`: who the page is signed in as, or why not.
pub async fn show(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let result = match same_origin(request.headers()) {
        Ok(()) => current(&state, request.headers()).await,
        Err(e) => Err(e),
    };
    no_store(match result {
        Ok(session) => {
            let info = describe(&session.caller.principal, &session.caller.region, &session.record);
            axum::Json(info).into_response()
        }
        Err(mut e) => {
            let peer = request.extensions().get::<SocketAddr>();
            e.members
                .insert("developmentSignIn".into(), development_sign_in(&state, peer).into());
            wire::error_response(&request_id, &e)
        }
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignIn {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    session_token: Option<String>,
    region: String,
}

/// `POST /console/session`: signs in with an access key pair; the answer sets the cookie.
pub async fn sign_in(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let result = async {
        same_origin(&parts.headers)?;
        let body = wire::read_body(body, &state.limits).await?;
        let form: SignIn = serde_json::from_slice(&body)
            .map_err(|e| ApiError::serialization(format!("The sign-in request is not valid: {e}")))?;
        let principal = open(&state, &form)?;
        let token = random_token();
        let at = now();
        let ttl = state.console_session.as_secs_f64();
        let record = ConsoleSession {
            id: digest(&token),
            access_key_id: form.access_key_id.clone(),
            created_at: at,
            expires_at: at + ttl,
            csrf_token: random_token(),
        };
        let scope = Scope::new(principal.account_id(), form.region.clone());
        let stored = record.clone();
        state.store.write(&scope, move |tx| tx.put(&stored)).await?;
        tracing::info!(principal = principal.name(), region = %form.region, "console sign-in");
        let cookie = format!("{}.{}.{token}", scope.account, scope.region);
        Ok::<_, ApiError>((cookie, describe(&principal, &form.region, &record)))
    }
    .await;
    no_store(match result {
        Ok((cookie, info)) => {
            let mut response = axum::Json(info).into_response();
            set_cookie(&mut response, &cookie, state.console_session.as_secs());
            response
        }
        Err(e) => wire::error_response(&request_id, &e),
    })
}

/// The principal whose keys a sign-in gives, checked as a signature's key is: the secret (and
/// session token, if the principal has one) compared in constant time, after the throttle.
fn open(state: &AppState, form: &SignIn) -> Result<Arc<Principal>, ApiError> {
    let wrong = || {
        refused(
            ErrorCode::UnrecognizedClientException,
            "The access key ID or the secret access key is not valid.",
        )
    };
    let principal = state.keys.get(&form.access_key_id).ok_or_else(wrong)?;
    if !state.regions.serves(&form.region) {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'region' '{}': this endpoint serves {}.",
            form.region,
            state.regions.describe()
        )));
    }
    // Guessing a known key's secret costs the account's write budget.
    state
        .throttle
        .check(principal.account_id(), &form.region, Family::Write)?;
    let secret_ok = bool::from(form.secret_access_key.as_bytes().ct_eq(principal.secret().as_bytes()));
    let token_ok = match (principal.session_token(), form.session_token.as_deref()) {
        (None, None) => true,
        (Some(expected), Some(sent)) => bool::from(sent.as_bytes().ct_eq(expected.as_bytes())),
        _ => false,
    };
    if !(secret_ok && token_ok) {
        tracing::warn!(principal = principal.name(), "console sign-in refused");
        return Err(wrong());
    }
    Ok(principal.clone())
}

/// `DELETE /console/session`: ends the session and clears the cookie.
pub async fn sign_out(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let result = async {
        let session = current(&state, &headers).await?;
        check_csrf(&session, &headers)?;
        let scope = Scope::new(session.caller.principal.account_id(), session.caller.region.clone());
        let id = session.record.id.clone();
        state
            .store
            .write(&scope, move |tx| tx.delete::<ConsoleSession>(&[Param::Text(&id)]))
            .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    no_store(match result {
        Ok(()) => {
            let mut response = axum::Json(json!({})).into_response();
            set_cookie(&mut response, "", 0);
            response
        }
        Err(e) => wire::error_response(&request_id, &e),
    })
}

/// How long a session lasts unless told otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_session_cookie_names_its_scope_and_a_token() {
        let token = "a".repeat(64);
        let h = with(&[("cookie", &format!("x=1; {COOKIE}=123456789012.eu-west-1.{token}"))]);
        let (scope, found) = named_session(&h).unwrap();
        assert_eq!(
            (scope.account.as_str(), scope.region.as_str()),
            ("123456789012", "eu-west-1")
        );
        assert_eq!(found, token);
        for bad in ["123.eu-west-1.aaaa", "123456789012.moon.x", "123456789012.eu-west-1"] {
            assert!(
                named_session(&with(&[("cookie", &format!("{COOKIE}={bad}"))])).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn requests_of_another_origin_are_refused() {
        assert!(same_origin(&with(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ]))
        .is_ok());
        assert!(same_origin(&with(&[("host", "127.0.0.1:8080")])).is_ok());
        let other = same_origin(&with(&[("host", "127.0.0.1:8080"), ("origin", "http://localhost:9")]));
        assert_eq!(other.unwrap_err().code, ErrorCode::AccessDeniedException);
        assert!(same_origin(&with(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&with(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&with(&[("sec-fetch-site", "same-origin")])).is_ok());
    }
}
