//! The `claims` request parameter (OpenID Connect Core §5.5): individual claims a client asks
//! for in userinfo and in the ID token, essential or voluntary, with `value` / `values`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest `claims` parameter read, in bytes.
pub const MAX_BYTES: usize = 4096;
/// Most claims asked for in one member (`userinfo`, `id_token`).
pub const MAX_CLAIMS: usize = 32;
/// Longest claim name.
pub const MAX_NAME_BYTES: usize = 256;
/// Most entries of `values`.
pub const MAX_VALUES: usize = 16;

/// How one claim is asked for (§5.5.1; `null` means voluntary, any value).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimAsk {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub essential: bool,
    /// `value`, or the members of `values`, in the client's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
}

impl ClaimAsk {
    /// The asked-for values that are strings (what `acr` and `sub` take).
    pub fn strings(&self) -> Vec<String> {
        self.values.iter().filter_map(Value::as_str).map(str::to_owned).collect()
    }
}

/// A parsed `claims` parameter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimsRequest {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub userinfo: BTreeMap<String, ClaimAsk>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub id_token: BTreeMap<String, ClaimAsk>,
}

impl ClaimsRequest {
    pub fn is_empty(&self) -> bool {
        self.userinfo.is_empty() && self.id_token.is_empty()
    }
}

/// Parses the `claims` parameter; the error is an `invalid_request` description that never
/// quotes the input.
pub fn parse(raw: Option<&str>) -> Result<ClaimsRequest, String> {
    let Some(raw) = raw else { return Ok(ClaimsRequest::default()) };
    if raw.len() > MAX_BYTES {
        return Err(format!("claims is longer than {MAX_BYTES} bytes"));
    }
    let invalid = || "claims must be a JSON object as OpenID Connect Core §5.5 describes".to_owned();
    let top: Value = serde_json::from_str(raw).map_err(|_| invalid())?;
    let top = top.as_object().ok_or_else(invalid)?;
    let mut out = ClaimsRequest::default();
    // Other members belong to extensions we do not implement: ignored (§5.5).
    for (member, into) in [("userinfo", &mut out.userinfo), ("id_token", &mut out.id_token)] {
        let Some(v) = top.get(member) else { continue };
        let asks = v.as_object().ok_or_else(|| format!("claims.{member} must be an object"))?;
        if asks.len() > MAX_CLAIMS {
            return Err(format!("claims.{member} asks for more than {MAX_CLAIMS} claims"));
        }
        for (name, ask) in asks {
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                return Err(format!("claims.{member} has a claim name of more than {MAX_NAME_BYTES} bytes"));
            }
            into.insert(name.clone(), claim_ask(ask).map_err(|why| format!("claims.{member}: {why}"))?);
        }
    }
    Ok(out)
}

fn claim_ask(v: &Value) -> Result<ClaimAsk, &'static str> {
    let o = match v {
        Value::Null => return Ok(ClaimAsk::default()),
        Value::Object(o) => o,
        _ => return Err("each claim is null or an object"),
    };
    let essential = match o.get("essential") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("essential must be true or false"),
    };
    let mut values = Vec::new();
    if let Some(v) = o.get("value") {
        values.push(v.clone());
    }
    match o.get("values") {
        None => {}
        Some(Value::Array(a)) if a.len() <= MAX_VALUES && values.is_empty() => values.extend(a.iter().cloned()),
        Some(Value::Array(a)) if a.len() > MAX_VALUES => return Err("values has more than 16 entries"),
        Some(Value::Array(_)) => return Err("value and values cannot both be given"),
        Some(_) => return Err("values must be an array"),
    }
    Ok(ClaimAsk { essential, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn essential_and_voluntary_claims_parse() {
        let c = parse(Some(
            r#"{"userinfo":{"name":{"essential":true},"email":null},"id_token":{"acr":{"values":["2","1"]},"sub":{"value":"x"}},"other":{}}"#,
        ))
        .unwrap();
        assert!(c.userinfo["name"].essential);
        assert_eq!(c.userinfo["email"], ClaimAsk::default());
        assert_eq!(c.id_token["acr"].strings(), ["2", "1"]);
        assert_eq!(c.id_token["sub"].values, [json!("x")]);
        assert_eq!(parse(None).unwrap(), ClaimsRequest::default());
    }

    #[test]
    fn malformed_or_oversized_claims_are_refused_without_quoting_them() {
        let many: serde_json::Map<String, Value> = (0..=MAX_CLAIMS).map(|i| (format!("c{i}"), Value::Null)).collect();
        let cases = [
            "[]".to_owned(),
            "{".to_owned(),
            r#"{"userinfo":[]}"#.to_owned(),
            r#"{"userinfo":{"name":1}}"#.to_owned(),
            r#"{"userinfo":{"name":{"essential":"yes"}}}"#.to_owned(),
            r#"{"id_token":{"acr":{"values":"1"}}}"#.to_owned(),
            r#"{"id_token":{"acr":{"value":"1","values":["2"]}}}"#.to_owned(),
            json!({ "userinfo": many }).to_string(),
            json!({ "userinfo": { "x".repeat(300): null } }).to_string(),
            format!(r#"{{"userinfo":{{"name":{{"value":"{}"}}}}}}"#, "v".repeat(MAX_BYTES)),
            "[".repeat(3000),
        ];
        for raw in cases {
            let e = parse(Some(&raw)).unwrap_err();
            assert!(e.len() < 120 && !e.contains("vvvv") && !e.contains("xxxx"), "{e}");
        }
    }
}
