//! The one gate every request passes before it reaches a resource, whichever door it comes in
//! by (the API, the agent channels, the event log): its SigV4 signature and the region it was
//! signed for ([`authenticate`]), then the throttle and the permission for its action
//! ([`authorize`]), then the principal's cluster scope for every cluster it names, by name or
//! inside an ARN ([`Admitted::check_cluster`], [`Admitted::check_arn`]).

use std::time::SystemTime;

use axum::http::HeaderMap;

use crate::auth::sigv4::{self, SignedRequest};
use crate::auth::Caller;
use crate::domain::arn::cluster_of;
use crate::domain::Scope;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::throttle::Family;

/// The service name requests are signed for.
pub const SIGNING_NAME: &str = "ecs";

/// A request as it is signed.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// A caller through the gate: who it is, and the account and region it acts in.
pub struct Admitted {
    pub caller: Caller,
    pub scope: Scope,
    /// The action it was admitted for, named in refusals.
    action: String,
}

/// Verifies a request's signature and that its region is served here.
pub fn authenticate(state: &AppState, request: &Signed<'_>) -> Result<Caller, ApiError> {
    let signed = SignedRequest {
        method: request.method,
        path_and_query: request.path_and_query,
        headers: request.headers,
        body: request.body,
    };
    let caller = sigv4::verify(&state.keys, SIGNING_NAME, &signed, SystemTime::now())?;
    if !state.regions.serves(&caller.region) {
        return Err(ApiError::new(
            ErrorCode::InvalidSignatureException,
            format!(
                "Credential should be scoped to a valid region, not '{}'. This endpoint serves {}.",
                caller.region,
                state.regions.describe()
            ),
        ));
    }
    Ok(caller)
}

/// Throttles the caller's account and region in `family`, and checks that it may perform
/// `action` at all.
pub fn authorize(state: &AppState, caller: Caller, family: Family, action: &str) -> Result<Admitted, ApiError> {
    let scope = Scope::new(caller.principal.account_id(), caller.region.clone());
    state.throttle.check(&scope.account, &scope.region, family)?;
    let admitted = Admitted {
        caller,
        scope,
        action: action.to_owned(),
    };
    if !admitted.caller.principal.may(action) {
        let everything = format!("arn:aws:ecs:{}:{}:*", admitted.scope.region, admitted.scope.account);
        return Err(admitted.denied(&everything));
    }
    Ok(admitted)
}

/// [`authenticate`] and [`authorize`] at once, for doors that know their action up front.
pub fn admit(state: &AppState, request: &Signed<'_>, family: Family, action: &str) -> Result<Admitted, ApiError> {
    let caller = authenticate(state, request)?;
    authorize(state, caller, family, action)
}

impl Admitted {
    /// `AccessDeniedException` for this caller's action on `resource`.
    pub fn denied(&self, resource: &str) -> ApiError {
        ApiError::new(
            ErrorCode::AccessDeniedException,
            format!(
                "User: {} is not authorized to perform: {} on resource: {resource}",
                self.caller.principal.arn(),
                self.action
            ),
        )
    }

    /// The cluster a request names (short name or ARN) must be in the principal's scope.
    pub fn check_cluster(&self, reference: &str) -> Result<(), ApiError> {
        let name = self.scope.cluster_name(reference).unwrap_or(reference);
        if self.caller.principal.may_use_cluster(name) {
            Ok(())
        } else {
            Err(self.denied(&self.scope.cluster_arn(name)))
        }
    }

    /// A resource named by ARN must be of a cluster in the principal's scope (resources of no
    /// cluster, such as task definitions, pass).
    pub fn check_arn(&self, arn: &str) -> Result<(), ApiError> {
        match cluster_of(arn) {
            Some(cluster) if !self.caller.principal.may_use_cluster(cluster) => Err(self.denied(arn)),
            _ => Ok(()),
        }
    }

    /// Whether the principal may see every cluster (no cluster scope).
    pub fn sees_every_cluster(&self) -> bool {
        self.caller.principal.may_use_cluster("*")
    }
}
