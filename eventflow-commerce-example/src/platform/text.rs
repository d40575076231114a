//! What a client may put in a free-text field, and how much of a client's value goes back out in
//! an error or a log line.

/// Why a text field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("at most {max} characters")]
    TooLong { max: usize },
    /// A control character (NUL, escape codes) or an invisible format character (zero-width
    /// spaces, bidirectional overrides) that would let the value display as something else.
    #[error("must not contain control or invisible formatting characters (found U+{0:04X})")]
    Invisible(u32),
}

/// Checks a free-text field: not blank, at most `max` characters (Unicode scalar values, as the
/// OpenAPI documents' `maxLength` counts them), and no control or format characters.
pub(crate) fn check(value: &str, max: usize) -> Result<(), TextError> {
    if let Some(c) = value.chars().find(|&c| c.is_control() || is_format(c)) {
        return Err(TextError::Invisible(u32::from(c)));
    }
    if value.trim().is_empty() {
        return Err(TextError::Empty);
    }
    if value.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    Ok(())
}

/// Unicode's general category Cf ("format"), which the standard library does not expose: the
/// characters that change how text around them displays without showing themselves.
fn is_format(c: char) -> bool {
    matches!(u32::from(c),
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

/// The most of a client's value an error message or a log line repeats.
pub(crate) const ECHO_CHARS: usize = 64;

/// `value` as it may be repeated back: its first [`ECHO_CHARS`] characters, then `…` when cut.
pub(crate) fn echo(value: &str) -> String {
    truncate(value, ECHO_CHARS)
}

/// The first `max` characters of `value`, then `…` when cut.
pub(crate) fn truncate(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_counted_in_characters() {
        assert_eq!(check(&"é".repeat(200), 200), Ok(()));
        assert_eq!(
            check(&"é".repeat(201), 200),
            Err(TextError::TooLong { max: 200 })
        );
    }

    #[test]
    fn blank_control_and_invisible_values_are_refused() {
        assert_eq!(check("   ", 10), Err(TextError::Empty));
        assert_eq!(check("a\0b", 10), Err(TextError::Invisible(0)));
        assert_eq!(
            check("\u{200B}\u{200B}", 10),
            Err(TextError::Invisible(0x200B))
        );
        assert_eq!(
            check("evil\u{202E}txt", 20),
            Err(TextError::Invisible(0x202E))
        );
        assert_eq!(check("123 Main St", 200), Ok(()));
        assert_eq!(check("Straße 5, 東京", 200), Ok(()));
    }

    #[test]
    fn an_echo_is_cut_at_a_character_boundary() {
        assert_eq!(echo("prod-1"), "prod-1");
        let long = "é".repeat(100);
        let echoed = echo(&long);
        assert_eq!(echoed.chars().count(), ECHO_CHARS + 1);
        assert!(echoed.ends_with('…'));
    }
}
