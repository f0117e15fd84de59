//! The handshake outcomes of the router, `misar_handshakes_total{outcome}`, recorded through
//! [`misar_proto_tokio::metrics::handshake`] (cargo feature `metrics`, which this crate
//! forwards; every other family is recorded by `misar-proto-tokio`).

use misar_proto::handshake::{Rejected, Rejection};

/// The `outcome` label of a refusal.
pub(crate) fn outcome(rejected: &Rejected) -> &'static str {
    match rejected.reason() {
        Rejection::NotFound(_) => "not_found",
        Rejection::BadRequest(_) => "bad_request",
        Rejection::MethodNotAllowed => "method_not_allowed",
        Rejection::OriginRefused => "origin_refused",
        Rejection::Unauthenticated(_) | Rejection::UnknownKey => "unauthorized",
        Rejection::NotOwned => "forbidden",
        Rejection::HookFailed => "hook_failed",
        Rejection::TooManyForAccount => "too_many_for_account",
        Rejection::TooManyPendingHandshakes { .. } | Rejection::TooManyConnections { .. } => {
            "overloaded"
        }
        // A reason this version does not know: classed by its status.
        other => match other.status().as_u16() {
            404 => "not_found",
            405 => "method_not_allowed",
            429 => "too_many_for_account",
            403 => "forbidden",
            status if status >= 500 => "overloaded",
            _ => "bad_request",
        },
    }
}
