//! The rotation a person asked for through a server's annotations (`tessera.dev/rotate`,
//! `tessera.dev/rotate-revoke`), against those the keys Secret records as handled.

use std::collections::BTreeMap;

use super::RotationRequest;
use crate::api::{ROTATE_ANNOTATION, ROTATE_REVOKE_ANNOTATION};

/// The request in `asked` (the server's annotations) not handled yet by `handled` (the keys
/// Secret's annotations), and the handled markers once it is; a revocation wins over a rotation.
pub fn rotation_request(
    asked: &BTreeMap<String, String>,
    handled: &BTreeMap<String, String>,
) -> (RotationRequest, BTreeMap<String, String>) {
    let mut now_handled = handled.clone();
    let mut request = RotationRequest::None;
    for (annotation, kind) in
        [(ROTATE_ANNOTATION, RotationRequest::Rotate), (ROTATE_REVOKE_ANNOTATION, RotationRequest::Revoke)]
    {
        let marker = format!("{annotation}-handled");
        if let Some(value) = asked.get(annotation)
            && handled.get(&marker) != Some(value)
        {
            now_handled.insert(marker, value.clone());
            if request != RotationRequest::Revoke {
                request = kind;
            }
        }
    }
    (request, now_handled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_new_annotation_value_is_one_request_and_is_marked_handled() {
        let asked = map(&[(ROTATE_ANNOTATION, "1")]);
        let (request, handled) = rotation_request(&asked, &BTreeMap::new());
        assert_eq!(request, RotationRequest::Rotate);
        assert_eq!(handled, map(&[("tessera.dev/rotate-handled", "1")]));
        assert_eq!(rotation_request(&asked, &handled).0, RotationRequest::None, "handled once");
    }

    #[test]
    fn revoke_wins_over_rotate() {
        let asked = map(&[(ROTATE_ANNOTATION, "1"), (ROTATE_REVOKE_ANNOTATION, "2")]);
        assert_eq!(rotation_request(&asked, &BTreeMap::new()).0, RotationRequest::Revoke);
    }
}
