//! AWS Signature Version 4 verification (header form).
//!
//! The canonical request is rebuilt from exactly the headers the client says it signed, with the
//! client's date, region and service, and the secret of the access key it named; the resulting
//! signature is compared with the one sent in constant time. The date must be within 15 minutes
//! of ours, every signed header must be present, and `host` must be signed.
//!
//! Every API call is a request to `/` with no query: its canonical request is built here, and
//! signed with a signing key derived once per access key, day, region and service
//! ([`SigningKeys`]) instead of four HMACs per request. Any other request (a path, a query) is
//! canonicalized by `aws-sigv4`, whose URI encoding rules it needs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use zeroize::Zeroizing;

use super::{Caller, Keys};
use crate::error::{ApiError, ErrorCode};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's date may be from ours.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Signing keys already derived, by access key, date, region and service. A client signs every
/// request of a day with the same key; a few are kept (the cache is emptied when it fills).
#[derive(Default)]
pub struct SigningKeys(Mutex<HashMap<[String; 4], Zeroizing<Vec<u8>>>>);

/// Signing keys kept at most.
const SIGNING_KEYS_KEPT: usize = 1024;

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKeys(..)")
    }
}

impl SigningKeys {
    /// The signature of `string_to_sign` with the key derived from `secret` for this scope.
    fn sign(
        &self,
        access_key: &str,
        secret: &str,
        auth: &Authorization<'_>,
        at: SystemTime,
        string_to_sign: &str,
    ) -> String {
        let scope = [access_key, auth.date, auth.region, auth.service].map(str::to_owned);
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !kept.contains_key(&scope) {
            if kept.len() >= SIGNING_KEYS_KEPT {
                kept.clear();
            }
            let key = v4::generate_signing_key(secret, at, auth.region, auth.service);
            kept.insert(scope.clone(), Zeroizing::new(key.as_ref().to_vec()));
        }
        v4::calculate_signature(&kept[&scope][..], string_to_sign.as_bytes())
    }
}

/// The parts of a request that a signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// The `Authorization` header's parts.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::IncompleteSignatureException, message)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSignatureException, message)
}

fn mismatch() -> ApiError {
    invalid(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
    )
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, ApiError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| incomplete(format!("Authorization header requires the {ALGORITHM} algorithm.")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |what: &str| {
        incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={value}"
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(format!(
            "Credential '{credential}' must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request."
        )));
    };
    if terminator != "aws4_request" || access_key.is_empty() || region.is_empty() {
        return Err(incomplete(format!(
            "Credential '{credential}' must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request."
        )));
    }
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: signed.split(';').filter(|h| !h.is_empty()).collect(),
        signature,
    })
}

fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    PrimitiveDateTime::parse(text, format)
        .ok()
        .map(|t| SystemTime::from(t.assume_utc()))
}

fn format_amz_date(t: SystemTime) -> String {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    OffsetDateTime::from(t).format(format).unwrap_or_default()
}

/// Verifies the signature of `request` for `service`, and returns who signed it.
pub fn verify(keys: &Keys, service: &str, request: &SignedRequest<'_>, now: SystemTime) -> Result<Caller, ApiError> {
    let header = request
        .headers
        .get("authorization")
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingAuthenticationTokenException,
                "Missing Authentication Token",
            )
        })?
        .to_str()
        .map_err(|_| incomplete("The Authorization header is not valid text."))?;
    let auth = parse_authorization(header)?;
    if auth.service != service {
        return Err(invalid(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    let principal = keys.get(auth.access_key).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnrecognizedClientException,
            "The security token included in the request is invalid.",
        )
    })?;

    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        })?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
        incomplete(format!(
            "X-Amz-Date '{amz_date}' is not of the form YYYYMMDD'T'HHMMSS'Z'."
        ))
    })?;
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
            auth.date,
            &amz_date[..8.min(amz_date.len())]
        )));
    }
    if signed_at + MAX_SKEW < now {
        return Err(invalid(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(now - MAX_SKEW),
            format_amz_date(now)
        )));
    }
    if signed_at > now + MAX_SKEW {
        return Err(invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(now + MAX_SKEW),
            format_amz_date(now)
        )));
    }

    if !auth.signed_headers.contains(&"host") {
        return Err(invalid("'Host' must be a 'SignedHeader' in the AWS Authorization."));
    }
    // The operation header says what the request does: a signature that does not cover it
    // would let anyone who saw one signed request turn it into another operation.
    if request.headers.contains_key("x-amz-target") && !auth.signed_headers.contains(&"x-amz-target") {
        return Err(invalid(
            "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization when the request has one.",
        ));
    }
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(auth.signed_headers.len());
    let mut session_token = None;
    for name in &auth.signed_headers {
        let values = request.headers.get_all(*name);
        if values.iter().next().is_none() {
            return Err(invalid(format!(
                "The header '{name}' is signed but absent from the request."
            )));
        }
        for value in values {
            let value = value
                .to_str()
                .map_err(|_| invalid(format!("The signed header '{name}' is not valid text.")))?;
            match *name {
                // aws-sigv4 adds these two itself, from the date and the identity.
                "x-amz-date" => {}
                "x-amz-security-token" => session_token = Some(value),
                _ => headers.push((name, value)),
            }
        }
    }
    match (session_token, principal.session_token()) {
        (None, None) => {}
        (Some(sent), Some(expected)) if bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) => {}
        _ => {
            return Err(ApiError::new(
                ErrorCode::UnrecognizedClientException,
                "The security token included in the request is invalid.",
            ))
        }
    }

    let signature = if request.path_and_query == "/" {
        let string_to_sign = string_to_sign(request, &auth, amz_date, &headers, session_token)?;
        keys.signing
            .sign(auth.access_key, principal.secret(), &auth, signed_at, &string_to_sign)
    } else {
        sdk_signature(request, &auth, principal.secret(), signed_at, headers, session_token)?
    };
    if !bool::from(signature.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Err(mismatch());
    }
    Ok(Caller {
        principal: principal.clone(),
        region: auth.region.to_owned(),
    })
}

/// The signature `aws-sigv4` computes for `request`, of `headers` (the signed ones but the date
/// and the session token, which it adds itself).
fn sdk_signature(
    request: &SignedRequest<'_>,
    auth: &Authorization<'_>,
    secret: &str,
    signed_at: SystemTime,
    headers: Vec<(&str, &str)>,
    session_token: Option<&str>,
) -> Result<String, ApiError> {
    let identity =
        aws_credential_types::Credentials::new(auth.access_key, secret, session_token.map(str::to_owned), None, "ecsd")
            .into();
    let mut settings = SigningSettings::default();
    // Sign exactly what the client signed: none of the default exclusions apply.
    settings.excluded_headers = Some(Vec::<Cow<'static, str>>::new());
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    settings.signature_location = SignatureLocation::Headers;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| mismatch())?
        .into();
    let signable = SignableRequest::new(
        request.method,
        request.path_and_query,
        headers.into_iter(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|_| mismatch())?;
    let output = sign(signable, &params).map_err(|_| mismatch())?;
    let computed_signed_headers = output
        .output()
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| value.split("SignedHeaders=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .to_owned();
    if computed_signed_headers != auth.signed_headers.join(";") {
        return Err(mismatch());
    }
    Ok(output.signature().to_owned())
}

/// The string to sign of a request to `/` with no query: the canonical request (method, path,
/// no query, the signed headers with their values trimmed and runs of spaces made one, several
/// values joined by commas, the signed header names, the body's hash) hashed under the
/// algorithm, the date and the credential scope. `headers` are the signed ones but the date and
/// the session token.
fn string_to_sign(
    request: &SignedRequest<'_>,
    auth: &Authorization<'_>,
    amz_date: &str,
    headers: &[(&str, &str)],
    session_token: Option<&str>,
) -> Result<String, ApiError> {
    // The names as a signer lists them: lowercase, sorted, once each; the date always.
    let listed_as_signed = auth.signed_headers.windows(2).all(|w| w[0] < w[1])
        && auth
            .signed_headers
            .iter()
            .all(|name| !name.bytes().any(|b| b.is_ascii_uppercase()))
        && auth.signed_headers.contains(&"x-amz-date");
    if !listed_as_signed {
        return Err(mismatch());
    }
    let mut canonical = String::with_capacity(512);
    canonical.push_str(request.method);
    canonical.push_str("\n/\n\n");
    for name in &auth.signed_headers {
        canonical.push_str(name);
        canonical.push(':');
        match *name {
            "x-amz-date" => canonical.push_str(amz_date),
            "x-amz-security-token" => canonical.push_str(session_token.unwrap_or_default()),
            _ => {
                let values = headers.iter().filter(|(n, _)| n == name);
                for (i, (_, value)) in values.enumerate() {
                    if i > 0 {
                        canonical.push(',');
                    }
                    push_trimmed(&mut canonical, value);
                }
            }
        }
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&auth.signed_headers.join(";"));
    canonical.push('\n');
    push_hex(&mut canonical, &Sha256::digest(request.body));
    let mut string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/aws4_request\n",
        auth.date, auth.region, auth.service
    );
    push_hex(&mut string_to_sign, &Sha256::digest(canonical.as_bytes()));
    Ok(string_to_sign)
}

/// Appends `value` without leading or trailing spaces and with each run of spaces made one.
fn push_trimmed(out: &mut String, value: &str) {
    let mut space = false;
    for c in value.trim_matches(' ').chars() {
        if c == ' ' {
            if space {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        out.push(c);
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::policy::Keys;
    use axum::http::HeaderValue;

    /// AWS's published SigV4 test suite credentials and time.
    const KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";

    fn keys() -> Keys {
        Keys::from_toml(&format!(
            r#"
            [[principals]]
            name = "example"
            access_key_id = "{KEY}"
            secret_access_key = "{SECRET}"
            account_id = "111122223333"
            permissions = ["admin"]
            "#
        ))
        .unwrap()
    }

    fn at(date: &str) -> SystemTime {
        parse_amz_date(date).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(method: &str, path: &str, h: &HeaderMap, body: &[u8], now: SystemTime) -> Result<Caller, ApiError> {
        let request = SignedRequest {
            method,
            path_and_query: path,
            headers: h,
            body,
        };
        verify(&keys(), "service", &request, now)
    }

    /// Method, path, headers, body, signed headers, signature.
    type Example = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static [u8],
        &'static str,
        &'static str,
    );

    // Cases from AWS's SigV4 test suite ("post-vanilla", "get-vanilla", "post-x-www-form-urlencoded",
    // "get-header-key-duplicate", "get-header-value-trim"), with their published signatures.
    #[test]
    fn accepts_the_published_examples() {
        let cases: [Example; 5] = [
            (
                "POST",
                "/",
                vec![("host", "example.amazonaws.com")],
                b"",
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
            (
                "GET",
                "/",
                vec![("host", "example.amazonaws.com")],
                b"",
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                "/",
                vec![
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("host", "example.amazonaws.com"),
                    ("content-length", "13"),
                    (
                        "x-amz-content-sha256",
                        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                    ),
                ],
                b"Param1=value1",
                "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
                "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
            ),
            (
                "GET",
                "/",
                vec![
                    ("host", "example.amazonaws.com"),
                    ("my-header1", "value2"),
                    ("my-header1", "value2"),
                    ("my-header1", "value1"),
                ],
                b"",
                "host;my-header1;x-amz-date",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            ),
            (
                "GET",
                "/",
                vec![
                    ("host", "example.amazonaws.com"),
                    ("my-header1", " value1"),
                    ("my-header2", " \"a   b   c\""),
                ],
                b"",
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            ),
        ];
        for (method, path, mut pairs, body, signed, signature) in cases {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={signature}"
            );
            pairs.push(("x-amz-date", DATE));
            pairs.push(("authorization", &authorization));
            let h = headers(&pairs);
            let caller = check(method, path, &h, body, at(DATE)).unwrap_or_else(|e| panic!("{signed}: {e}"));
            assert_eq!(caller.region, "us-east-1");
            assert_eq!(caller.principal.account_id(), "111122223333");
        }
    }

    fn vanilla(signature: &str, extra: &[(&'static str, &str)]) -> HeaderMap {
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
        );
        let mut pairs = vec![
            ("host", "example.amazonaws.com"),
            ("x-amz-date", DATE),
            ("authorization", &authorization),
        ];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    const POST_VANILLA: &str = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";

    #[test]
    fn refuses_tampering() {
        // Another body, another signature, another host.
        let err = check("POST", "/", &vanilla(POST_VANILLA, &[]), b"{}", at(DATE)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidSignatureException);
        let err = check(
            "POST",
            "/",
            &vanilla(&POST_VANILLA.replace('5', "6"), &[]),
            b"",
            at(DATE),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidSignatureException);
        let mut h = vanilla(POST_VANILLA, &[]);
        h.insert("host", HeaderValue::from_static("evil.example.com"));
        assert_eq!(
            check("POST", "/", &h, b"", at(DATE)).unwrap_err().code,
            ErrorCode::InvalidSignatureException
        );
        // Unsigned headers may be added freely.
        check("POST", "/", &vanilla(POST_VANILLA, &[("x-extra", "1")]), b"", at(DATE)).unwrap();
    }

    #[test]
    fn the_clock_window_is_fifteen_minutes() {
        let h = vanilla(POST_VANILLA, &[]);
        check("POST", "/", &h, b"", at("20150830T125000Z")).unwrap();
        check("POST", "/", &h, b"", at("20150830T122200Z")).unwrap();
        let late = check("POST", "/", &h, b"", at("20150830T125200Z")).unwrap_err();
        assert_eq!(late.code, ErrorCode::InvalidSignatureException);
        assert!(
            late.message
                .starts_with("Signature expired: 20150830T123600Z is now earlier than"),
            "{}",
            late.message
        );
        let early = check("POST", "/", &h, b"", at("20150830T122000Z")).unwrap_err();
        assert!(
            early.message.starts_with("Signature not yet current"),
            "{}",
            early.message
        );
    }

    #[test]
    fn each_way_of_failing_has_its_own_error() {
        let none = check("POST", "/", &headers(&[("host", "h")]), b"", at(DATE)).unwrap_err();
        assert_eq!(none.code, ErrorCode::MissingAuthenticationTokenException);

        let unknown = vanilla(POST_VANILLA, &[]);
        let mut h = unknown.clone();
        let auth = h["authorization"].to_str().unwrap().replace(KEY, "AKIDUNKNOWN");
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        assert_eq!(
            check("POST", "/", &h, b"", at(DATE)).unwrap_err().code,
            ErrorCode::UnrecognizedClientException
        );

        let mut h = unknown.clone();
        h.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"),
        );
        assert_eq!(
            check("POST", "/", &h, b"", at(DATE)).unwrap_err().code,
            ErrorCode::IncompleteSignatureException
        );

        let mut h = unknown.clone();
        h.remove("x-amz-date");
        assert_eq!(
            check("POST", "/", &h, b"", at(DATE)).unwrap_err().code,
            ErrorCode::IncompleteSignatureException
        );

        let mut h = unknown.clone();
        let auth = h["authorization"].to_str().unwrap().replace("/service/", "/s3/");
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        let wrong_service = check("POST", "/", &h, b"", at(DATE)).unwrap_err();
        assert!(wrong_service.message.contains("correct service"));

        // A signed header that is absent.
        let mut h = unknown.clone();
        let auth = h["authorization"]
            .to_str()
            .unwrap()
            .replace("host;x-amz-date", "host;x-amz-date;x-amz-target");
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        let absent = check("POST", "/", &h, b"", at(DATE)).unwrap_err();
        assert!(absent.message.contains("x-amz-target"), "{}", absent.message);

        // Host must be signed.
        let mut h = unknown;
        let auth = h["authorization"]
            .to_str()
            .unwrap()
            .replace("host;x-amz-date", "x-amz-date");
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        assert!(check("POST", "/", &h, b"", at(DATE))
            .unwrap_err()
            .message
            .contains("'Host'"));

        // A session token nobody issued.
        let h = vanilla(POST_VANILLA, &[("x-amz-security-token", "tok")]);
        let mut h2 = h.clone();
        let auth = h["authorization"]
            .to_str()
            .unwrap()
            .replace("host;x-amz-date", "host;x-amz-date;x-amz-security-token");
        h2.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        assert_eq!(
            check("POST", "/", &h2, b"", at(DATE)).unwrap_err().code,
            ErrorCode::UnrecognizedClientException
        );
    }

    /// The canonical request built here and the one `aws-sigv4` builds sign alike, whatever the
    /// headers' values, repeats and spacing.
    #[test]
    fn requests_to_the_root_are_signed_as_aws_sigv4_signs_them() {
        let values = ["x", "  padded  ", "a   b\tc", "\"quoted  value\"", "", "{\"k\": 1}"];
        let mut checked = 0;
        for (i, first) in values.iter().enumerate() {
            for second in &values[i..] {
                for token in [None, Some("session token")] {
                    let headers = vec![
                        ("content-type", "application/x-amz-json-1.1"),
                        ("host", "127.0.0.1:8080"),
                        ("x-amz-target", "AmazonEC2ContainerServiceV20141113.DescribeTasks"),
                        ("x-custom", *first),
                        ("x-custom", *second),
                    ];
                    let mut signed = vec!["content-type", "host", "x-amz-date", "x-amz-target", "x-custom"];
                    if token.is_some() {
                        signed.insert(3, "x-amz-security-token");
                    }
                    let signed_list = signed.join(";");
                    let auth = Authorization {
                        access_key: KEY,
                        date: "20150830",
                        region: "eu-west-3",
                        service: "ecs",
                        signed_headers: signed,
                        signature: "",
                    };
                    let map = {
                        let mut pairs = headers.clone();
                        pairs.push(("x-amz-date", DATE));
                        self::headers(&pairs)
                    };
                    let request = SignedRequest {
                        method: "POST",
                        path_and_query: "/",
                        headers: &map,
                        body: br#"{"cluster":"default","tasks":["t"]}"#,
                    };
                    let to_sign = string_to_sign(&request, &auth, DATE, &headers, token).unwrap();
                    let ours = SigningKeys::default().sign(KEY, SECRET, &auth, at(DATE), &to_sign);
                    let theirs = sdk_signature(&request, &auth, SECRET, at(DATE), headers, token)
                        .unwrap_or_else(|e| panic!("{signed_list} {first:?} {second:?}: {e}"));
                    assert_eq!(ours, theirs, "{signed_list} {first:?} {second:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 42);
    }

    #[test]
    fn a_list_of_signed_headers_no_signer_writes_is_refused() {
        // Unsorted, repeated or capitalized names: a signer lists them sorted, once, lowercase.
        for signed in ["x-amz-date;host", "host;host;x-amz-date", "Host;x-amz-date"] {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={POST_VANILLA}"
            );
            let h = headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", DATE),
                ("authorization", &authorization),
            ]);
            let err = check("POST", "/", &h, b"", at(DATE)).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidSignatureException, "{signed}");
        }
    }

    #[test]
    fn amz_dates_round_trip() {
        assert_eq!(format_amz_date(at(DATE)), DATE);
        assert!(parse_amz_date("2015-08-30T12:36:00Z").is_none());
    }
}
