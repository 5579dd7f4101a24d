//! `AuthClaim`: a custom claim, its value a CEL expression.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ChildStatus, LocalServerRef, RESERVED_CLAIMS};

/// [`RESERVED_CLAIMS`] as a CEL list literal, for the CRD rule.
fn reserved_list() -> String {
    let quoted: Vec<String> = RESERVED_CLAIMS.iter().map(|c| format!("'{c}'")).collect();
    format!("[{}]", quoted.join(", "))
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "AuthClaim",
    namespaced,
    status = "ChildStatus",
    shortname = "aclaim",
    category = "tessera",
    printcolumn = r#"{"name":"Server","type":"string","jsonPath":".spec.serverRef.name"}"#,
    printcolumn = r#"{"name":"Claim","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Token","type":"string","jsonPath":".spec.token"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.token == 'IdToken' || !has(self.alwaysInclude) || self.alwaysInclude").message("alwaysInclude: false applies to IdToken claims only; access token claims are always included").field_path(".alwaysInclude"))]
#[serde(rename_all = "camelCase")]
pub struct AuthClaimSpec {
    pub server_ref: LocalServerRef,
    /// The claim name in the token.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_.:/-]*$')").message("claim name must start with a letter or underscore and contain only letters, digits, '_', '.', ':', '/' or '-'"))]
    #[x_kube(validation = Rule::new(format!("!(self in {})", reserved_list())).message("claim name is reserved (iss sub aud exp nbf iat jti cid uid scp ver client_id auth_time nonce at_hash c_hash amr azp typ are set by the issuer): choose another name"))]
    pub name: String,
    #[serde(default)]
    pub token: TokenKind,
    /// CEL expression; a null result omits the claim.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("value must be a CEL expression, e.g. client.metadata.tenant"))]
    pub value: String,
    /// IdToken only: false serves the claim from userinfo alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_include: Option<bool>,
    /// Include only when one of these scopes is granted; empty: always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new("self.all(s, size(s) > 0 && size(s) <= 256)").message("each scope must be 1 to 256 characters"))]
    pub scopes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TokenKind {
    #[default]
    AccessToken,
    IdToken,
}
