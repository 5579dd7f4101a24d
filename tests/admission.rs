//! Admission against a real kube-apiserver: the examples are accepted, and each CEL or schema
//! rule refuses a bad resource with the field and message the user sees.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, PostParams},
};
use serde_json::{Value, json};
use tessera::api::AuthorizationServer;

fn api_resource(kind: &str) -> ApiResource {
    tessera::api::api_resource(kind).unwrap_or_else(|| panic!("unknown kind {kind}"))
}

async fn create(client: &Client, ns: &str, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let kind = doc["kind"].as_str().unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &api_resource(kind));
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await
}

/// The example documents of our kinds, moved into namespace `ns`.
fn examples_in(ns: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(support::repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for de in serde_norway::Deserializer::from_str(&text) {
            let mut doc: Value = serde::Deserialize::deserialize(de).unwrap();
            if doc["apiVersion"] != "tessera.dev/v1alpha1" {
                continue;
            }
            doc["metadata"]["namespace"] = json!(ns);
            if doc["spec"]["serverRef"].get("namespace").is_some() {
                doc["spec"]["serverRef"]["namespace"] = json!(ns);
            }
            docs.push(doc);
        }
    }
    docs
}

#[tokio::test]
async fn examples_are_accepted() {
    let client = support::client().await;
    let ns = support::namespace(&client, "examples").await;
    let docs = examples_in(&ns);
    assert!(docs.len() >= 10, "expected the full example set, got {}", docs.len());
    for doc in &docs {
        create(&client, &ns, doc).await.unwrap_or_else(|e| panic!("example {} refused: {e}", doc["metadata"]["name"]));
    }
}

fn base(kind: &str) -> Value {
    let spec = match kind {
        "AuthorizationServer" => {
            json!({ "issuer": "https://auth.example.com/payments", "audiences": ["api://payments"] })
        }
        "AuthScope" => json!({ "serverRef": { "name": "payments" }, "name": "payments:read" }),
        "AuthClaim" => {
            json!({ "serverRef": { "name": "payments" }, "name": "tenant", "value": "client.metadata.tenant" })
        }
        "AccessPolicy" => json!({
            "serverRef": { "name": "payments" },
            "clients": { "all": true },
            "rules": [{ "name": "m2m", "grantTypes": ["client_credentials"], "scopes": ["payments:read"] }]
        }),
        "AuthClient" => json!({ "serverRef": { "name": "payments" }, "grantTypes": ["client_credentials"] }),
        other => panic!("unknown kind {other}"),
    };
    json!({ "apiVersion": "tessera.dev/v1alpha1", "kind": kind, "metadata": { "name": "x" }, "spec": spec })
}

/// Sets `value` at a JSON pointer below the document, creating objects on the way; `null` removes.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let mut parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let last = parts.pop().unwrap();
    let mut cur = doc;
    for p in parts {
        cur = if let Ok(i) = p.parse::<usize>() {
            &mut cur[i]
        } else {
            cur.as_object_mut().unwrap().entry(p).or_insert(json!({}))
        };
    }
    if value.is_null() {
        cur.as_object_mut().unwrap().remove(last);
    } else if let Ok(i) = last.parse::<usize>() {
        let list = cur.as_array_mut().unwrap();
        if i == list.len() { list.push(value) } else { list[i] = value }
    } else {
        cur[last] = value;
    }
}

struct Case {
    kind: &'static str,
    changes: Vec<(&'static str, Value)>,
    field: &'static str,
    message: &'static str,
}

fn case(kind: &'static str, changes: Vec<(&'static str, Value)>, field: &'static str, message: &'static str) -> Case {
    Case { kind, changes, field, message }
}

/// An upstream provider entry of `spec.identity.upstreams`.
fn upstream(name: &str, issuer: &str) -> Value {
    json!({ "name": name, "issuer": issuer, "clientId": "tessera", "clientSecretRef": { "name": "corp-oidc" } })
}

fn invalid_cases() -> Vec<Case> {
    use json as j;
    const AS: &str = "AuthorizationServer";
    const SC: &str = "AuthScope";
    const CL: &str = "AuthClaim";
    const AP: &str = "AccessPolicy";
    const CI: &str = "AuthClient";
    vec![
        // AuthorizationServer
        case(
            AS,
            vec![("/spec/issuer", j!("http://auth.example.com/payments"))],
            "spec.issuer",
            "issuer must be an absolute https URL",
        ),
        case(AS, vec![("/spec/issuer", j!("payments"))], "spec.issuer", "issuer must be an absolute https URL"),
        case(AS, vec![("/spec/issuer", j!("https://auth.example.com/payments/"))], "spec.issuer", "no trailing slash"),
        case(AS, vec![("/spec/issuer", j!("https://auth.example.com/p?x=1"))], "spec.issuer", "no query"),
        case(AS, vec![("/spec/audiences", j!([]))], "spec.audiences", "should have at least 1 items"),
        case(AS, vec![("/spec/audiences", j!(["a", "a"]))], "spec.audiences", "audiences must not repeat"),
        case(
            AS,
            vec![("/spec/signing/algorithm", j!("HS256"))],
            "spec.signing.algorithm",
            "supported values: \"RS256\", \"ES256\", \"EdDSA\"",
        ),
        case(
            AS,
            vec![("/spec/signing/rotation/period", j!("1s"))],
            "spec.signing.rotation.period",
            "rotation.period must be between 5s and 8760h",
        ),
        case(
            AS,
            vec![("/spec/signing/rotation/period", j!("ninety days"))],
            "spec.signing.rotation.period",
            "should match",
        ),
        case(
            AS,
            vec![("/spec/signing/rotation/prePublish", j!("5000h"))],
            "spec.signing.rotation.prePublish",
            "prePublish must be at most 2160h",
        ),
        case(
            AS,
            vec![("/spec/signing/rotation/mode", j!("Sometimes"))],
            "spec.signing.rotation.mode",
            "supported values: \"Automatic\", \"Manual\"",
        ),
        case(
            AS,
            vec![("/spec/workload/replicas", j!(3))],
            "spec.workload.replicas",
            "storage.type Memory keeps token state in one pod",
        ),
        case(
            AS,
            vec![("/spec/workload/replicas", j!(0))],
            "spec.workload.replicas",
            "should be greater than or equal to 1",
        ),
        case(
            AS,
            vec![("/spec/storage/type", j!("Redis"))],
            "spec.storage.redis",
            "storage.type Redis needs storage.redis.urlSecretRef",
        ),
        case(
            AS,
            vec![("/spec/clientNamespaces/from", j!("Selector"))],
            "spec.clientNamespaces.selector",
            "needs clientNamespaces.selector",
        ),
        case(
            AS,
            vec![("/spec/trustedOrigins", j!(["https://app.example.com/login"]))],
            "spec.trustedOrigins",
            "scheme://host[:port] with no path",
        ),
        case(
            AS,
            vec![("/spec/outbound", j!({"allowedUrlPrefixes": ["https://keys.example.com/?team=a"]}))],
            "spec.outbound.allowedUrlPrefixes",
            "without query or fragment",
        ),
        case(
            AS,
            vec![("/spec/rateLimit", j!({"perClient": 100, "burst": 10}))],
            "spec.rateLimit.burst",
            "burst must be at least rateLimit.perClient",
        ),
        case(
            AS,
            vec![("/spec/trustedIssuers", j!([{"kubernetes": true, "issuer": "https://x.example.com"}]))],
            "spec.trustedIssuers[0]",
            "either kubernetes: true or issuer",
        ),
        case(
            AS,
            vec![("/spec/trustedIssuers", j!([{"issuer": "http://x.example.com"}]))],
            "spec.trustedIssuers[0].issuer",
            "trusted issuer must be an https URL",
        ),
        case(
            AS,
            vec![("/spec/identity", j!({}))],
            "spec.identity",
            "identity needs at least one of upstreams or staticUsers",
        ),
        case(
            AS,
            vec![("/spec/identity", j!({"upstreams": []}))],
            "spec.identity",
            "identity needs at least one of upstreams or staticUsers",
        ),
        case(
            AS,
            vec![("/spec/identity", j!({"upstreams": [upstream("Corp_SSO", "https://sso.example.com")]}))],
            "spec.identity.upstreams[0].name",
            "upstream name must be lowercase letters, digits and '-'",
        ),
        case(
            AS,
            vec![(
                "/spec/identity",
                j!({"upstreams": [upstream("corp", "https://sso.example.com"), upstream("corp", "https://b.example.com")]}),
            )],
            "spec.identity.upstreams",
            "upstream names must be unique",
        ),
        case(
            AS,
            vec![("/spec/identity", j!({"upstreams": [upstream("corp", "http://sso.example.com")]}))],
            "spec.identity.upstreams[0].issuer",
            "upstream issuer must be an https URL (http only on localhost)",
        ),
        case(
            AS,
            vec![("/spec/identity", j!({"sessionLifetime": "30s", "staticUsers": {"secretName": "people"}}))],
            "spec.identity.sessionLifetime",
            "sessionLifetime must be between 1m and 720h",
        ),
        case(
            AS,
            vec![("/spec/identity", j!({"sessionLifetime": "721h", "staticUsers": {"secretName": "people"}}))],
            "spec.identity.sessionLifetime",
            "sessionLifetime must be between 1m and 720h",
        ),
        // AuthScope
        case(SC, vec![("/spec/name", j!("openid"))], "spec.name", "scope name is reserved"),
        case(SC, vec![("/spec/name", j!("payments read"))], "spec.name", "scope name must be printable ASCII"),
        case(SC, vec![("/spec/name", j!("pay\"ments"))], "spec.name", "scope name must be printable ASCII"),
        case(SC, vec![("/spec/name", j!("okta.users.read"))], "spec.name", "scope name is reserved"),
        case(SC, vec![("/spec/name", j!("*"))], "spec.name", "scope name is reserved"),
        case(
            SC,
            vec![("/spec/name", Value::Null), ("/metadata/name", j!("email"))],
            "",
            "metadata.name is used as the scope name and is reserved",
        ),
        case(
            SC,
            vec![("/spec/consent", j!("Sometimes"))],
            "spec.consent",
            "supported values: \"Implicit\", \"Required\"",
        ),
        // AuthClaim
        case(CL, vec![("/spec/name", j!("sub"))], "spec.name", "claim name is reserved"),
        case(CL, vec![("/spec/name", j!("scp"))], "spec.name", "claim name is reserved"),
        case(CL, vec![("/spec/name", j!("1tenant"))], "spec.name", "claim name must start with a letter or underscore"),
        case(CL, vec![("/spec/value", j!("   "))], "spec.value", "value must be a CEL expression"),
        case(
            CL,
            vec![("/spec/alwaysInclude", j!(false))],
            "spec.alwaysInclude",
            "alwaysInclude: false applies to IdToken claims only",
        ),
        case(
            CL,
            vec![("/spec/token", j!("RefreshToken"))],
            "spec.token",
            "supported values: \"AccessToken\", \"IdToken\"",
        ),
        // AccessPolicy
        case(AP, vec![("/spec/rules", j!([]))], "spec.rules", "should have at least 1 items"),
        case(
            AP,
            vec![("/spec/clients", j!({"all": true, "ids": ["a"]}))],
            "spec.clients",
            "exactly one of all: true, ids or selector",
        ),
        case(AP, vec![("/spec/clients", j!({}))], "spec.clients", "exactly one of all: true, ids or selector"),
        case(
            AP,
            vec![("/spec/rules/0/accessTokenLifetime", j!("1m"))],
            "spec.rules[0].accessTokenLifetime",
            "accessTokenLifetime must be between 5m and 24h",
        ),
        case(
            AP,
            vec![("/spec/rules/0/accessTokenLifetime", j!("48h"))],
            "spec.rules[0].accessTokenLifetime",
            "accessTokenLifetime must be between 5m and 24h",
        ),
        case(
            AP,
            vec![("/spec/rules/0/accessTokenLifetime", j!("2h")), ("/spec/rules/0/refreshTokenLifetime", j!("1h"))],
            "spec.rules[0].refreshTokenLifetime",
            "refreshTokenLifetime must be 0 (unlimited) or at least accessTokenLifetime",
        ),
        case(
            AP,
            vec![("/spec/rules/0/refreshTokenIdleTimeout", j!("1m"))],
            "spec.rules[0].refreshTokenIdleTimeout",
            "refreshTokenIdleTimeout must be between 10m",
        ),
        case(
            AP,
            vec![("/spec/rules/0/grantTypes", j!(["password"]))],
            "spec.rules[0].grantTypes[0]",
            "Unsupported value: \"password\"",
        ),
        case(
            AP,
            vec![("/spec/rules/0/grantTypes", j!(["implicit"]))],
            "spec.rules[0].grantTypes[0]",
            "Unsupported value: \"implicit\"",
        ),
        case(
            AP,
            vec![("/spec/rules/1", j!({"name": "m2m", "grantTypes": ["client_credentials"], "scopes": ["*"]}))],
            "spec.rules",
            "rule names must be unique",
        ),
        case(AP, vec![("/spec/rules/0/name", j!("Bad_Name"))], "spec.rules[0].name", "rule name must be a DNS label"),
        case(
            AP,
            vec![("/spec/rules/0/users", j!({"everyone": true, "groups": ["admins"]}))],
            "spec.rules[0].users",
            "either everyone: true, or groups",
        ),
        case(AP, vec![("/spec/rules/0/scopes", j!([]))], "spec.rules[0].scopes", "should have at least 1 items"),
        // AuthClient
        case(
            CI,
            vec![("/spec/grantTypes", j!(["authorization_code"]))],
            "spec.redirectUris",
            "authorization_code needs at least one redirectUris entry",
        ),
        case(
            CI,
            vec![
                ("/spec/grantTypes", j!(["authorization_code"])),
                ("/spec/redirectUris", j!(["http://app.example.com/cb"])),
            ],
            "spec.redirectUris",
            "each redirect URI must be an absolute https URL",
        ),
        case(
            CI,
            vec![
                ("/spec/grantTypes", j!(["authorization_code"])),
                ("/spec/redirectUris", j!(["https://app.example.com/cb#frag"])),
            ],
            "spec.redirectUris",
            "without a fragment",
        ),
        case(
            CI,
            vec![("/spec/authentication", j!({"method": "None"}))],
            "spec.authentication.method",
            "a public client (authentication.method None) cannot use client_credentials",
        ),
        case(
            CI,
            vec![("/spec/authentication", j!({"method": "PrivateKeyJwt"}))],
            "spec.authentication",
            "PrivateKeyJwt needs jwks or jwksUri",
        ),
        case(
            CI,
            vec![("/spec/authentication", j!({"method": "ServiceAccount"}))],
            "spec.authentication.serviceAccountName",
            "ServiceAccount needs serviceAccountName",
        ),
        case(
            CI,
            vec![(
                "/spec/authentication",
                j!({"method": "ClientSecretBasic", "jwksUri": "https://x.example.com/jwks"}),
            )],
            "spec.authentication",
            "jwks and jwksUri apply only to authentication.method PrivateKeyJwt",
        ),
        case(
            CI,
            vec![("/spec/clientId", j!("orders api"))],
            "spec.clientId",
            "clientId must start with a letter or digit",
        ),
        case(
            CI,
            vec![("/spec/authentication", j!({"secretName": "Bad_Secret"}))],
            "spec.authentication.secretName",
            "secretName must be a valid Secret name",
        ),
        case(
            CI,
            vec![("/spec/grantTypes", j!(["client_credentials", "client_credentials"]))],
            "spec.grantTypes",
            "grantTypes must not repeat",
        ),
        case(
            CI,
            vec![("/spec/authentication", j!({"method": "Magic"}))],
            "spec.authentication.method",
            "Unsupported value: \"Magic\"",
        ),
    ]
}

#[tokio::test]
async fn invalid_resources_are_refused_with_the_field_and_a_message_that_says_what_to_change() {
    let client = support::client().await;
    let ns = support::namespace(&client, "invalid").await;
    let cases = invalid_cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let mut doc = base(c.kind);
        doc["metadata"]["name"] = json!(format!("case-{i}"));
        for (pointer, value) in &c.changes {
            set(&mut doc, pointer, value.clone());
        }
        match create(&client, &ns, &doc).await {
            Ok(_) => failures.push(format!("case {i} ({} {:?}): accepted", c.kind, c.changes)),
            Err(kube::Error::Api(status)) => {
                let field_ok = c.field.is_empty() || status.message.contains(&format!("{}:", c.field));
                if status.code != 422 || !field_ok || !status.message.contains(c.message) {
                    failures.push(format!(
                        "case {i} ({} {:?}): expected 422 on {:?} with {:?}, got {}: {}",
                        c.kind, c.changes, c.field, c.message, status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("case {i}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[tokio::test]
async fn the_unmodified_base_documents_are_valid() {
    // Guards the table above: each case fails for its own change, not for a bad base.
    let client = support::client().await;
    let ns = support::namespace(&client, "base").await;
    for kind in ["AuthorizationServer", "AuthScope", "AuthClaim", "AccessPolicy", "AuthClient"] {
        create(&client, &ns, &base(kind)).await.unwrap_or_else(|e| panic!("base {kind} refused: {e}"));
    }
}

#[tokio::test]
async fn garbage_collector_removes_children_of_a_deleted_server() {
    let client = support::client().await;
    let ns = support::namespace(&client, "gc").await;
    let mut doc = base("AuthorizationServer");
    doc["metadata"]["name"] = json!("owner");
    let server = create(&client, &ns, &doc).await.unwrap();
    let child: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "child",
            "ownerReferences": [{
                "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthorizationServer",
                "name": "owner", "uid": server.metadata.uid.unwrap(), "controller": true
            }]
        }
    }))
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &child).await.unwrap();
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &ns);
    servers.delete("owner", &DeleteParams::default()).await.unwrap();
    support::eventually(Duration::from_secs(60), "the garbage collector to delete the child", || async {
        cms.get_opt("child").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn status_is_a_subresource_and_printer_columns_show_issuer_ready_and_key() {
    let client = support::client().await;
    let ns = support::namespace(&client, "status").await;
    let mut doc = base("AuthorizationServer");
    doc["metadata"]["name"] = json!("shown");
    doc["status"] = json!({ "issuer": "ignored on create" });
    create(&client, &ns, &doc).await.unwrap();
    let servers: Api<AuthorizationServer> = Api::namespaced(client.clone(), &ns);
    assert!(
        servers.get("shown").await.unwrap().status.is_none(),
        "status must be written through the subresource only"
    );

    let patch = json!({ "status": {
        "issuer": "https://auth.example.com/payments",
        "signing": { "activeKeyId": "key-1" },
        "conditions": [{ "type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
                          "lastTransitionTime": "2026-11-26T00:00:00Z" }]
    }});
    servers.patch_status("shown", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();

    let plane = support::control_plane();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .args(["get", "tessera", "-n", &ns])
        .output()
        .expect("kubectl must be installed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubectl get tessera failed: {}", String::from_utf8_lossy(&out.stderr));
    let header = text.lines().next().unwrap_or_default();
    for column in ["NAME", "ISSUER", "READY", "ACTIVE KEY", "AGE"] {
        assert!(header.contains(column), "missing column {column} in {header:?}");
    }
    assert!(text.contains("key-1") && text.contains("True"), "{text}");
}
