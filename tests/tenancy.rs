//! Tenant safety: one namespace attacking another, the operator or the issuer. Each case of
//! `docs/security.md` is a test here, against a real control plane where admission or the
//! operator is involved, and against `tessera serve` (or the issuer in-process) otherwise.

mod support;

/// `tessera serve` of a test's own files, for the cases that need no control plane.
#[path = "tenancy/serve.rs"]
mod serve;

/// CEL expressions: depth and cost bounded before parsing and evaluation.
#[path = "tenancy/cel.rs"]
mod cel;

/// Client ids, subjects and the rules `serve` enforces without admission.
#[path = "tenancy/client_ids.rs"]
mod client_ids;

/// Policies: what the platform asserts against what a tenant asserts; consent; logout.
#[path = "tenancy/policies.rs"]
mod policies;

/// The token endpoint and sign-in: rate limits, enumeration, revocation, introspection, devices.
#[path = "tenancy/endpoints.rs"]
mod endpoints;

/// Unauthenticated state and connections: stored sizes, memory ceiling, timeouts.
#[path = "tenancy/resources.rs"]
mod resources;

/// Outbound fetches and JWTs from outside.
#[path = "tenancy/outbound.rs"]
mod outbound;
