//! `acr` (OpenID Connect Core §2): how strongly a person authenticated, as a level read from
//! how they signed in (`amr`), and the `acr_values` a client asks for (§3.1.2.1).

use crate::config::IdentityConfig;

/// One factor: a static user's password, or an upstream sign-in that shows no second one.
pub const ONE_FACTOR: &str = "1";
/// More than one factor, as the upstream's `amr` says (`mfa`, or two methods).
pub const MULTI_FACTOR: &str = "2";

/// Most `acr_values` read from a request, and the longest one (bytes).
pub const MAX_ACR_VALUES: usize = 8;
pub const MAX_ACR_VALUE_BYTES: usize = 64;

/// Methods of RFC 8176 that are a factor of their own (`fed` is ours: federated, unknown).
const FACTORS: [&str; 14] =
    ["pwd", "pin", "otp", "sms", "tel", "hwk", "swk", "sc", "face", "fpt", "iris", "retina", "vbm", "kba"];

/// The level a sign-in with `amr` reached.
pub fn level(amr: &[String]) -> &'static str {
    let factors = FACTORS.iter().filter(|f| amr.iter().any(|m| m == *f)).count();
    if amr.iter().any(|m| m == "mfa") || factors >= 2 { MULTI_FACTOR } else { ONE_FACTOR }
}

/// The levels some person of the server can reach: a second factor only comes from an upstream.
pub fn supported(identity: &IdentityConfig) -> Vec<&'static str> {
    if identity.upstreams.is_empty() { vec![ONE_FACTOR] } else { vec![ONE_FACTOR, MULTI_FACTOR] }
}

/// Whether a sign-in at `reached` satisfies the requested value `wanted` (a higher level
/// satisfies a lower one; values we do not define are never satisfied).
fn satisfies(reached: &str, wanted: &str) -> bool {
    wanted == reached || (reached == MULTI_FACTOR && wanted == ONE_FACTOR)
}

/// The `acr` of an ID token: the first of `requested` (in the client's order of preference)
/// that the sign-in satisfies, else the level it reached (`acr_values` is voluntary: §3.1.2.1).
pub fn acr_for(amr: &[String], requested: &[String]) -> String {
    let reached = level(amr);
    requested.iter().find(|w| satisfies(reached, w)).cloned().unwrap_or_else(|| reached.to_owned())
}

/// Whether a sign-in with `amr` satisfies one of `values` (an essential `acr` claim, §5.5.1.1).
pub fn meets(amr: &[String], values: &[String]) -> bool {
    let reached = level(amr);
    values.iter().any(|w| satisfies(reached, w))
}

/// `acr_values` of a request: space-separated, bounded.
pub fn parse_acr_values(v: Option<&str>) -> Result<Vec<String>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let values: Vec<String> = v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if values.len() > MAX_ACR_VALUES || values.iter().any(|s| s.len() > MAX_ACR_VALUE_BYTES) {
        return Err(format!("acr_values takes at most {MAX_ACR_VALUES} values of at most {MAX_ACR_VALUE_BYTES} bytes"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn the_level_follows_the_methods_of_the_sign_in() {
        assert_eq!(level(&s(&["pwd"])), ONE_FACTOR);
        assert_eq!(level(&s(&["fed"])), ONE_FACTOR);
        assert_eq!(level(&s(&["pwd", "pwd"])), ONE_FACTOR, "one method twice is one factor");
        assert_eq!(level(&s(&["mfa"])), MULTI_FACTOR);
        assert_eq!(level(&s(&["pwd", "otp"])), MULTI_FACTOR);
    }

    #[test]
    fn requested_values_are_answered_in_the_clients_order_when_met() {
        assert_eq!(acr_for(&s(&["pwd"]), &s(&["1", "2"])), "1");
        assert_eq!(acr_for(&s(&["pwd"]), &s(&["2", "1"])), "1");
        assert_eq!(acr_for(&s(&["mfa"]), &s(&["2", "1"])), "2");
        assert_eq!(acr_for(&s(&["mfa"]), &s(&["1"])), "1", "a stronger sign-in meets a weaker level");
        assert_eq!(acr_for(&s(&["pwd"]), &s(&["2"])), "1", "voluntary: the level reached");
        assert_eq!(acr_for(&s(&["pwd"]), &s(&["urn:other"])), "1");
        assert!(meets(&s(&["mfa"]), &s(&["2"])) && !meets(&s(&["pwd"]), &s(&["2", "urn:x"])));
    }

    #[test]
    fn acr_values_are_bounded() {
        assert_eq!(parse_acr_values(Some(" 1  2 ")).unwrap(), s(&["1", "2"]));
        assert!(parse_acr_values(Some(&"1 ".repeat(9))).is_err());
        assert!(parse_acr_values(Some(&"x".repeat(65))).is_err());
    }
}
