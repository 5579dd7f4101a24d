//! Everything the issuer fetches from elsewhere goes through here: one HTTP client with a hard
//! cap on bodies, connect and total timeouts and no redirects ([`Fetcher`]); shared, negatively
//! cached fetches ([`DocumentCache`]); and the rules on where a tenant's URL may point
//! ([`policy`]). See "Outbound fetches" in docs/security.md.

pub mod cache;
pub mod fetch;
pub mod policy;

pub use cache::{DocumentCache, Fetch, Need};
pub use fetch::{FetchError, Fetcher};
pub use policy::{OutboundConfig, Reach};
