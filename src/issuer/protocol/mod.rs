//! What the browser flows and the token endpoint's grants share of the protocol: one-time
//! codes and what they carry, PKCE, redirect-URI matching and the `scope` parameter. Below
//! both `browser` and `grants`, so neither imports the other.

mod codes;
mod pkce;
mod redirect_uri;
mod scope;

pub use codes::{Approval, Decision, DeviceState, decision_key, random, same, sha256_b64};
pub use pkce::is_pkce_value;
pub use redirect_uri::redirect_uri_matches;
pub use scope::parse_scope;
