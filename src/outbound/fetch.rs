//! The one HTTP client for every outbound request of the issuer: JWKS and discovery
//! documents, upstream token and userinfo endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

use super::policy::{Reach, check_literal_address, is_internal};

/// Largest response body read; the read stops as soon as it is passed.
pub const MAX_RESPONSE: usize = 256 * 1024;
/// Time to set up a connection (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for a whole request, body included: a server that drips is cut off here.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not fetch {url}: {message}")]
pub struct FetchError {
    pub url: String,
    pub message: String,
}

impl FetchError {
    pub fn new(url: &str, message: impl Into<String>) -> Self {
        Self { url: url.to_owned(), message: message.into() }
    }
}

/// Resolves names to public addresses only: a tenant's host that resolves to an internal
/// address (or that a DNS answer rebinds to one) is not connected to.
struct PublicAddresses;

impl Resolve for PublicAddresses {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| !is_internal(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// HTTP with a hard cap on response bodies, connect and total timeouts, no redirects, and
/// for [`Reach::Public`] no connection to an internal address.
#[derive(Clone)]
pub struct Fetcher {
    public: reqwest::Client,
    any: reqwest::Client,
}

impl Default for Fetcher {
    fn default() -> Self {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                // A redirect would lead a fetch where no rule looked.
                .redirect(reqwest::redirect::Policy::none())
        };
        // A proxy would resolve the name itself, past the address check.
        let public = builder().no_proxy().dns_resolver(Arc::new(PublicAddresses)).build().unwrap_or_default();
        let any = builder().build().unwrap_or_default();
        Self { public, any }
    }
}

impl Fetcher {
    /// A request to `url`, on the client for `reach`; the caller adds credentials and a body.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        reach: Reach,
    ) -> Result<reqwest::RequestBuilder, FetchError> {
        let parsed = url::Url::parse(url).map_err(|e| FetchError::new(url, e.to_string()))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(FetchError::new(url, "only http(s) URLs are fetched"));
        }
        // The resolver never sees an address literal: check it here.
        check_literal_address(&parsed, reach).map_err(|why| FetchError::new(url, why))?;
        let client = match reach {
            Reach::Public => &self.public,
            Reach::Any => &self.any,
        };
        Ok(client.request(method, parsed))
    }

    /// Sends `request` and reads its JSON body, at most [`MAX_RESPONSE`] bytes of it (`null`
    /// for an error status whose body is not JSON).
    pub async fn json(&self, url: &str, request: reqwest::RequestBuilder) -> Result<(u16, Value), FetchError> {
        let fail = |m: String| FetchError::new(url, m);
        let mut resp = request.send().await.map_err(|e| fail(describe(&e)))?;
        let status = resp.status().as_u16();
        if resp.content_length().is_some_and(|n| n > MAX_RESPONSE as u64) {
            return Err(fail(format!("response is larger than {MAX_RESPONSE} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(describe(&e)))? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                // Dropping the response closes the connection: nothing more is read.
                return Err(fail(format!("response is larger than {MAX_RESPONSE} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice(&body) {
            Ok(json) => Ok((status, json)),
            // An error answer need not be JSON; a success must be.
            Err(_) if !(200..300).contains(&status) => Ok((status, Value::Null)),
            Err(e) => Err(fail(format!("not JSON: {e}"))),
        }
    }

    /// GETs a JSON document that must answer 2xx.
    pub async fn get_json(&self, url: &str, reach: Reach) -> Result<Value, FetchError> {
        let request = self.request(reqwest::Method::GET, url, reach)?;
        match self.json(url, request).await? {
            (200..=299, doc) => Ok(doc),
            (status, _) => Err(FetchError::new(url, format!("status {status}"))),
        }
    }
}

/// A reqwest error without its URL (which may carry a query) and with its cause.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}
