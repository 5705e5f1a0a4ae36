//! Client names: what is allowed, and the case-insensitive form used as the unique key.

use crate::Error;

/// Longest name accepted, in characters.
pub const MAX_NAME_LEN: usize = 32;

/// Checks a name: 1 to 32 characters of `[A-Za-z0-9._-]`.
pub fn validate(name: &str) -> Result<(), Error> {
    let invalid = |why: &str| Error::InvalidName {
        name: name.chars().take(40).collect(),
        why: why.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("a name needs at least one character"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("a name has at most 32 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// The case-insensitive key under which a name is unique.
pub fn canonical(name: &str) -> String {
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        assert!(validate("alice").is_ok());
        assert!(validate("A.b_c-9").is_ok());
        assert!(validate(&"x".repeat(32)).is_ok());
        assert!(validate("").is_err());
        assert!(validate(&"x".repeat(33)).is_err());
        assert!(validate("al ice").is_err());
        assert!(validate("élan").is_err());
        assert_eq!(canonical("Alice"), canonical("aLICE"));
    }
}
