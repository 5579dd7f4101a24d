//! Who may claim which client id, and the forms `sub` takes, so that a machine, a person, a
//! ServiceAccount and a federated subject can never be confused with one another.
//!
//! | subject                               | `sub`                                    |
//! |---------------------------------------|------------------------------------------|
//! | a client acting for itself            | its client id (`team-orders.orders-api`) |
//! | a Kubernetes ServiceAccount (exchange)| `system:serviceaccount:<ns>:<name>`      |
//! | a token of a trusted issuer (exchange)| `<issuer>#<sub>`                         |
//! | a person from upstream provider `u`   | `u\|<the upstream's sub>`                |
//! | a static user                         | `static\|<sub or username>`              |
//!
//! Client ids use the RFC 3986 unreserved characters only (no `:`, `|`, `#`, `@`, `/`), so no
//! other form can equal one; the other forms differ in their first separator.

use std::collections::BTreeMap;

use crate::api::{AuthClient, AuthorizationServer, NamespaceFrom};

/// Longest client id.
pub const CLIENT_ID_MAX_LEN: usize = 256;
/// Prefix of every ServiceAccount subject (the Kubernetes API server's form).
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
/// Identity provider name of static users, in `sub` and `idp`; no upstream may take it.
pub const STATIC_IDP: &str = "static";

/// `Accepted=False` reason: the client id has characters outside its charset.
pub const INVALID_CLIENT_ID: &str = "InvalidClientId";
/// `Accepted=False` reason: the client id belongs to another namespace's name space.
pub const CLIENT_ID_NOT_OWNED: &str = "ClientIdNotOwned";
/// `Accepted=False` reason: the server's `spec.clientNamespaces` does not admit the client's namespace.
pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";

/// Labels of namespaces, by namespace name.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// Namespace of an object as kubectl would place it: `default` when it names none.
pub fn namespace_or_default(namespace: Option<&str>) -> &str {
    match namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

/// A client id: 1 to 256 characters, letters, digits, `.`, `_`, `~`, `-`, starting with a
/// letter or digit.
pub fn is_client_id(id: &str) -> bool {
    let mut chars = id.chars();
    id.len() <= CLIENT_ID_MAX_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
}

/// Why a client in `client_ns` may not use `client_id` at a server in `server_ns`: the
/// `Accepted=False` reason and message. An id with a `.` belongs to the namespace before its
/// first `.` (namespace names have none); an id without one belongs to the server's namespace.
pub fn client_id_refusal(client_id: &str, client_ns: &str, server_ns: &str) -> Option<(&'static str, String)> {
    if !is_client_id(client_id) {
        return Some((
            INVALID_CLIENT_ID,
            // The id itself is not quoted: it may be long, and is not what needs fixing.
            format!(
                "spec.clientId: clientId must start with a letter or digit and contain only letters, digits, '.', '_', '~' or '-' (at most {CLIENT_ID_MAX_LEN})"
            ),
        ));
    }
    let owned = match client_id.split_once('.') {
        Some((ns, rest)) => ns == client_ns && !rest.is_empty(),
        None => client_ns == server_ns,
    };
    (!owned).then(|| {
        let rule = if client_ns == server_ns {
            format!("an id in namespace {client_ns} either has no '.' or starts with \"{client_ns}.\"")
        } else {
            format!(
                "a client outside the server's namespace ({server_ns}) uses an id that starts with \"{client_ns}.\""
            )
        };
        (CLIENT_ID_NOT_OWNED, format!("spec.clientId: {client_id:?} belongs to another namespace: {rule}"))
    })
}

/// Whether `server.spec.clientNamespaces` lets namespace `client_ns` hold its clients;
/// `labels` are that namespace's labels, when known (only `from: Selector` reads them).
pub fn namespace_admits(
    server: &AuthorizationServer,
    client_ns: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let server_ns = namespace_or_default(server.metadata.namespace.as_deref());
    let cn = &server.spec.client_namespaces;
    match cn.from {
        NamespaceFrom::All => true,
        NamespaceFrom::Same => client_ns == server_ns,
        NamespaceFrom::Selector => {
            client_ns == server_ns
                || match (&cn.selector, labels) {
                    (Some(selector), Some(labels)) => super::selector::matches(selector, labels),
                    _ => false,
                }
        }
    }
}

/// Why `client` may not be a client of `server`, if it may not: the `Accepted=False` reason and
/// message. Its namespace must be admitted by `spec.clientNamespaces` (judged on `labels`, the
/// namespaces' labels as the platform set them), and its client id must belong to that
/// namespace. The one admission rule: `compile` applies it, and the operator asks it before it
/// writes a client's credentials, so that a squatter never gets a credentials Secret.
pub fn client_refusal(
    server: &AuthorizationServer,
    client: &AuthClient,
    labels: &NamespaceLabels,
) -> Option<(&'static str, String)> {
    let server_ns = namespace_or_default(server.metadata.namespace.as_deref());
    let client_ns = namespace_or_default(client.metadata.namespace.as_deref());
    if !namespace_admits(server, client_ns, labels.get(client_ns)) {
        let why = format!(
            "namespace {client_ns} may not hold clients of AuthorizationServer {server_ns}/{}: its spec.clientNamespaces (from: {:?}) does not allow it",
            server.metadata.name.as_deref().unwrap_or_default(),
            server.spec.client_namespaces.from
        );
        return Some((NAMESPACE_NOT_ALLOWED, why));
    }
    client_id_refusal(&client.client_id(), client_ns, server_ns)
}

/// `sub` of a static user whose own subject (its `sub`, else its username) is `sub`.
pub fn static_user_subject(sub: &str) -> String {
    format!("{STATIC_IDP}|{sub}")
}

/// `sub` of a person signed in through upstream provider `upstream`.
pub fn federated_subject(upstream: &str, upstream_sub: &str) -> String {
    format!("{upstream}|{upstream_sub}")
}

/// `sub` of a token-exchanged subject token of trusted issuer `issuer` (which has no `#`).
pub fn exchanged_subject(issuer: &str, sub: &str) -> String {
    format!("{issuer}#{sub}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_belong_to_the_namespace_before_their_first_dot() {
        assert_eq!(client_id_refusal("team-orders.orders-api", "team-orders", "identity"), None);
        assert_eq!(client_id_refusal("identity.console", "identity", "identity"), None);
        assert_eq!(client_id_refusal("console", "identity", "identity"), None);
        for (id, ns) in [
            ("team-orders.orders-admin", "aaa-evil"),
            ("alice", "aaa-evil"),
            ("team-orders.", "team-orders"),
            ("other.console", "identity"),
        ] {
            assert_eq!(client_id_refusal(id, ns, "identity").map(|r| r.0), Some(CLIENT_ID_NOT_OWNED), "{id} in {ns}");
        }
        for id in ["system:serviceaccount:team-orders:orders-worker", "a|b", "a@b", "a/b", "a#b", ".a", "", "a b"] {
            assert_eq!(client_id_refusal(id, "identity", "identity").map(|r| r.0), Some(INVALID_CLIENT_ID), "{id:?}");
        }
        assert!(!is_client_id(&"a".repeat(CLIENT_ID_MAX_LEN + 1)));
    }

    #[test]
    fn no_subject_form_can_equal_a_client_id_or_another_form() {
        let forms = [
            "system:serviceaccount:team-orders:orders-worker".to_owned(),
            exchanged_subject("https://token.actions.githubusercontent.com", "alice"),
            federated_subject("corp", "alice"),
            static_user_subject("alice"),
        ];
        for f in &forms {
            assert!(!is_client_id(f), "{f}");
        }
        // Each form's first separator tells them apart: ':' then ':', '#' after a URL, '|'.
        assert!(forms[0].starts_with(SERVICE_ACCOUNT_PREFIX));
        assert_ne!(federated_subject(STATIC_IDP, "x"), federated_subject("corp", "x"));
        assert_ne!(federated_subject("https", "x"), exchanged_subject("https://x", "x"));
    }
}
