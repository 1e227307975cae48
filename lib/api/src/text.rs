//! What counts as a `#tag` or an `@mention` in user text. Captions (content service) and
//! comments (interaction service) follow the same rule, so it lives in the contract.

/// Most mentions honoured in one text; the rest are plain text.
pub const MAX_MENTIONS: usize = 20;

fn words_after(text: &str, sigil: char, allowed: impl Fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut prev: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        // A sigil inside a word (an email address, `a#b`) starts nothing.
        if c == sigil && !prev.is_some_and(|p| p.is_alphanumeric() || p == '_') {
            let mut word = String::new();
            while let Some(&(_, n)) = chars.peek() {
                if !allowed(n) {
                    break;
                }
                word.push(n);
                chars.next();
            }
            let word = word.trim_end_matches('.').to_lowercase();
            if !word.is_empty() {
                out.push(word);
            }
            prev = None;
            continue;
        }
        prev = Some(c);
    }
    out
}

/// `#hashtags` of a text, lowercase, in order (repeats kept).
pub fn hashtags(caption: &str) -> Vec<String> {
    words_after(caption, '#', |c| c.is_alphanumeric() || c == '_')
}

/// `@usernames` of a text, lowercase, deduplicated, at most [`MAX_MENTIONS`].
pub fn mentions(caption: &str) -> Vec<String> {
    let mut names = words_after(caption, '@', |c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    names.retain(|n| (3..=30).contains(&n.len()));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names.truncate(MAX_MENTIONS);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashtags_and_mentions_come_from_the_text() {
        let caption = "Sunset at the #Beach with @Ana_B and @tom.k. #beach #golden_hour mail me: x@y.io #";
        assert_eq!(hashtags(caption), vec!["beach", "beach", "golden_hour"]);
        assert_eq!(mentions(caption), vec!["ana_b", "tom.k"]);
    }
}
