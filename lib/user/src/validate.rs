//! Input rules for accounts and profiles. Each check returns the normalised value or a
//! client-facing error naming the field.

use mosaic_api::{ApiError, ErrorCode};

/// Names that would collide with routes or impersonate the platform.
const RESERVED: &[&str] = &[
    "me",
    "admin",
    "administrator",
    "root",
    "api",
    "system",
    "support",
    "mosaic",
    "settings",
    "help",
    "about",
    "login",
    "logout",
    "signup",
    "null",
    "undefined",
];

/// A handful of the most common passwords; the length rule already rules out most others.
const COMMON_PASSWORDS: &[&str] = &[
    "1234567890",
    "12345678910",
    "qwertyuiop",
    "password123",
    "password1234",
    "1q2w3e4r5t",
    "0987654321",
    "iloveyou123",
    "qwerty1234",
    "abcdefghij",
    "passwordpassword",
    "letmein123",
];

/// Usernames: 3–30 of `a-z 0-9 _ .`, case-insensitive (stored lowercase), no leading,
/// trailing or doubled dot, not reserved.
pub fn username(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim().to_lowercase();
    let len = name.chars().count();
    if !(3..=30).contains(&len) {
        return Err(ApiError::validation("username must be 3 to 30 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.') {
        return Err(ApiError::validation("username may contain only letters, digits, '_' and '.'"));
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(ApiError::validation("username cannot start or end with '.' or contain '..'"));
    }
    if RESERVED.contains(&name.as_str()) {
        return Err(ApiError::validation("this username is reserved"));
    }
    Ok(name)
}

/// Emails: a plausible address, at most 254 characters, stored lowercase.
pub fn email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let invalid = || ApiError::validation("email is not a valid address");
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return Err(invalid());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
        || !labels.iter().all(|l| l.chars().all(|c| c.is_alphanumeric() || c == '-'))
    {
        return Err(invalid());
    }
    Ok(email)
}

/// Passwords: 10–128 characters, not made of one repeated pattern, not a well-known
/// password, not containing the username or the email's local part.
pub fn password(password: &str, username: &str, email: &str) -> Result<(), ApiError> {
    let weak = |detail: &str| ApiError::new(ErrorCode::WeakPassword, detail);
    let len = password.chars().count();
    if len < 10 {
        return Err(weak("password must be at least 10 characters"));
    }
    if len > 128 {
        return Err(weak("password must be at most 128 characters"));
    }
    let lower = password.to_lowercase();
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Err(weak("password needs at least 5 different characters"));
    }
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Err(weak("password is too common"));
    }
    let local = email.split('@').next().unwrap_or_default();
    if (username.len() >= 3 && lower.contains(&username.to_lowercase()))
        || (local.len() >= 3 && lower.contains(&local.to_lowercase()))
    {
        return Err(weak("password must not contain your username or email"));
    }
    Ok(())
}

/// Display names: at most 64 characters, no control characters, trimmed.
pub fn display_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.chars().count() > 64 {
        return Err(ApiError::validation("display_name must be at most 64 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::validation("display_name must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Bios: at most 300 characters; newlines allowed, other control characters not.
pub fn bio(raw: &str) -> Result<String, ApiError> {
    let bio = raw.trim();
    if bio.chars().count() > 300 {
        return Err(ApiError::validation("bio must be at most 300 characters"));
    }
    if bio.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::validation("bio must not contain control characters"));
    }
    Ok(bio.to_owned())
}

/// Topics: at most 50, each 1–32 of `a-z 0-9 _` (a leading `#` is dropped), deduplicated.
pub fn topics(raw: &[String]) -> Result<Vec<String>, ApiError> {
    if raw.len() > 50 {
        return Err(ApiError::validation("preferences.topics holds at most 50 topics"));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for t in raw {
        let topic = t.trim().trim_start_matches('#').to_lowercase();
        if topic.is_empty() || topic.chars().count() > 32 || !topic.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(ApiError::validation(format!("preferences.topics: {t:?} is not a valid topic")));
        }
        if !out.contains(&topic) {
            out.push(topic);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised_and_checked() {
        assert_eq!(username("  Alice_1 ").unwrap(), "alice_1");
        for bad in ["ab", "me", "ADMIN", "a b c", "al..ice", ".alice", "x'; DROP TABLE user; --", &"a".repeat(31)] {
            assert_eq!(username(bad).unwrap_err().code, ErrorCode::ValidationFailed, "{bad}");
        }
    }

    #[test]
    fn emails_are_lowercased_and_shape_checked() {
        assert_eq!(email("Bob@Example.COM").unwrap(), "bob@example.com");
        for bad in ["bob", "bob@", "@x.io", "bob@localhost", "bob@-x.io", "b ob@x.io", "bob@x..io"] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weak_passwords_are_refused_with_their_own_code() {
        for bad in ["short", "aaaaaaaaaaaa", "1234567890", "alice-rocks-2024", "bobby1234567"] {
            let err = password(bad, "alice", "bobby@x.io").unwrap_err();
            assert_eq!(err.code, ErrorCode::WeakPassword, "{bad}");
        }
        assert!(password("correct horse battery", "alice", "bob@x.io").is_ok());
    }

    #[test]
    fn topics_are_normalised_and_bounded() {
        let t = topics(&["#Cats".into(), "cats".into(), "dogs_2".into()]).unwrap();
        assert_eq!(t, vec!["cats", "dogs_2"]);
        assert!(topics(&["no spaces".into()]).is_err());
        assert!(topics(&vec!["a".to_string(); 51]).is_err());
    }
}
