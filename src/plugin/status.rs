//! The text of `kubectl tessera status`: what a person checks first, from the server's status
//! and the clients that point at it. Pure: takes the objects and `now`.

use std::fmt::Write;

use kube::ResourceExt;
use serde_json::Value;

use crate::api::{AuthClient, AuthorizationServer};

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// "3h ago" / "in 2d" for an RFC 3339 time, relative to `now`; "-" when absent.
fn relative(v: &Value, now: jiff::Timestamp) -> String {
    let Some(t) = v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else { return "-".into() };
    let secs = t.as_second() - now.as_second();
    let abs = secs.unsigned_abs();
    let amount = match abs {
        0..60 => format!("{abs}s"),
        60..3600 => format!("{}m", abs / 60),
        3600..86400 => format!("{}h", abs / 3600),
        _ => format!("{}d", abs / 86400),
    };
    if secs > 0 { format!("in {amount}") } else { format!("{amount} ago") }
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    out.push_str(&line(header.to_vec()));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
}

pub fn render_status(server: &AuthorizationServer, clients: &[AuthClient], now: jiff::Timestamp) -> String {
    let status = serde_json::to_value(&server.status).unwrap_or(Value::Null);
    let mut out = String::new();
    let _ = writeln!(out, "AuthorizationServer {}/{}", server.namespace().unwrap_or_default(), server.name_any());
    let _ = writeln!(out, "Issuer:    {}", server.spec.issuer);
    let _ = writeln!(
        out,
        "Replicas:  {}/{} ready",
        status["readyReplicas"].as_i64().unwrap_or(0),
        status["replicas"].as_i64().unwrap_or(0)
    );

    out.push_str("\nConditions:\n");
    let conditions: Vec<Vec<String>> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                text(&c["type"]).to_owned(),
                text(&c["status"]).to_owned(),
                text(&c["reason"]).to_owned(),
                relative(&c["lastTransitionTime"], now),
                text(&c["message"]).to_owned(),
            ]
        })
        .collect();
    table(&mut out, &["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], &conditions);

    out.push_str("\nEndpoints:\n");
    match status["endpoints"].as_object() {
        Some(endpoints) => {
            for (name, url) in endpoints {
                let _ = writeln!(out, "  {:<11} {}", format!("{name}:"), text(url));
            }
        }
        None => out.push_str("  (not published yet)\n"),
    }

    let signing = &status["signing"];
    out.push_str("\nSigning keys:\n");
    let _ = writeln!(
        out,
        "  active: {}   next rotation: {}",
        text(&signing["activeKeyId"]),
        relative(&signing["nextRotationTime"], now)
    );
    let keys: Vec<Vec<String>> = signing["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            vec![
                text(&k["kid"]).to_owned(),
                text(&k["algorithm"]).to_owned(),
                text(&k["state"]).to_owned(),
                relative(&k["createdAt"], now),
                relative(&k["activatesAt"], now),
                relative(&k["retiresAt"], now),
                relative(&k["deleteAt"], now),
            ]
        })
        .collect();
    table(&mut out, &["KID", "ALG", "STATE", "CREATED", "ACTIVATES", "RETIRES", "DELETED"], &keys);

    out.push_str("\nClients:\n");
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            let v = serde_json::to_value(c).unwrap_or(Value::Null);
            let conditions = v["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let ready = ["Ready", "Accepted"]
                .iter()
                .find_map(|t| conditions.iter().find(|c| c["type"] == *t))
                .map(|c| format!("{}={}", text(&c["type"]), text(&c["status"])))
                .unwrap_or_else(|| "-".into());
            vec![
                format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
                v["status"]["clientId"].as_str().map(str::to_owned).unwrap_or_else(|| "-".into()),
                text(&v["spec"]["authentication"]["method"]).to_owned(),
                v["status"]["secretName"].as_str().unwrap_or("-").to_owned(),
                ready,
            ]
        })
        .collect();
    table(&mut out, &["CLIENT", "CLIENT ID", "AUTH", "SECRET", "STATE"], &rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_to_now() {
        let now: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        assert_eq!(relative(&Value::from("2026-11-26T09:00:00Z"), now), "3h ago");
        assert_eq!(relative(&Value::from("2026-11-28T12:00:00Z"), now), "in 2d");
        assert_eq!(relative(&Value::Null, now), "-");
    }

    #[test]
    fn a_server_without_status_still_renders() {
        let server: AuthorizationServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "AuthorizationServer",
            "metadata": { "name": "payments", "namespace": "identity" },
            "spec": { "issuer": "https://auth.example.com/payments", "audiences": ["api://payments"] }
        }))
        .unwrap();
        let text = render_status(&server, &[], jiff::Timestamp::now());
        assert!(text.contains("AuthorizationServer identity/payments"));
        assert!(text.contains("(not published yet)"));
    }
}
