//! The one validator of node and federation names, used when a certificate is issued, when a config's roster is
//! read, and when a peer's certificate is admitted.
//!
//! A valid name matches `[a-z0-9][a-z0-9._-]{0,62}`: lowercase ASCII letters, digits, `.`, `_` and `-`, starting
//! with a letter or a digit, at most 63 bytes. Such a name holds no path separator, no `..` component of its own,
//! no whitespace, no control character and no upper case (so `Hospital-A` and `hospital-a` cannot be two nodes),
//! which makes it safe as a file name and in a log line.

/// The longest valid name, in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// Why a name is not a valid node name. Carries no copy of the name, so printing it never echoes untrusted text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error("the name has {0} bytes, more than {MAX_NAME_BYTES}")]
    TooLong(usize),
    /// The name starts with something other than a lowercase letter or a digit.
    #[error("the name must start with a lowercase letter or a digit")]
    BadStart,
    /// The name holds a character outside `[a-z0-9._-]` (at this byte offset).
    #[error("the name holds a character other than a-z, 0-9, '.', '_' and '-' at byte {0}")]
    BadChar(usize),
}

/// Checks that `name` matches `[a-z0-9][a-z0-9._-]{0,62}`.
///
/// # Errors
/// [`NameError`] saying which rule the name breaks.
pub fn check_node_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let first = *bytes.first().ok_or(NameError::Empty)?;
    if bytes.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong(bytes.len()));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(NameError::BadStart);
    }
    match bytes.iter().position(|&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')))
    {
        Some(at) => Err(NameError::BadChar(at)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_names_in_use_are_valid() {
        for name in ["hospital-a", "hospital-b", "coordinator", "prober", "e2e", "st-mary-network", "a", "0", "n.1_x"] {
            assert_eq!(check_node_name(name), Ok(()), "{name}");
        }
        assert_eq!(check_node_name(&"a".repeat(MAX_NAME_BYTES)), Ok(()));
    }

    #[test]
    fn names_that_could_escape_a_path_or_a_log_line_are_refused() {
        assert_eq!(check_node_name(""), Err(NameError::Empty));
        assert_eq!(check_node_name("../../../pwned"), Err(NameError::BadStart));
        assert_eq!(check_node_name("a/../../pwned"), Err(NameError::BadChar(1)));
        assert_eq!(check_node_name("a\\b"), Err(NameError::BadChar(1)));
        assert_eq!(check_node_name("a\nINFO forged"), Err(NameError::BadChar(1)));
        assert_eq!(check_node_name(".hidden"), Err(NameError::BadStart));
        assert_eq!(check_node_name("-rf"), Err(NameError::BadStart));
        assert_eq!(check_node_name("Hospital-A"), Err(NameError::BadStart));
        assert_eq!(check_node_name("a b"), Err(NameError::BadChar(1)));
        assert_eq!(check_node_name("hôpital"), Err(NameError::BadChar(1)));
        assert_eq!(check_node_name(&"a".repeat(MAX_NAME_BYTES + 1)), Err(NameError::TooLong(MAX_NAME_BYTES + 1)));
    }

    proptest! {
        #[test]
        fn a_valid_name_is_one_plain_path_component(name in "\\PC{0,80}") {
            if check_node_name(&name).is_ok() {
                let path = std::path::Path::new(&name);
                prop_assert_eq!(path.components().count(), 1);
                prop_assert!(matches!(path.components().next(), Some(std::path::Component::Normal(_))));
                prop_assert!(!name.chars().any(char::is_control));
            }
        }

        #[test]
        fn the_pattern_is_accepted(name in "[a-z0-9][a-z0-9._-]{0,62}") {
            prop_assert_eq!(check_node_name(&name), Ok(()));
        }
    }
}
