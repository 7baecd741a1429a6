//! Normalisation: the same value written two ways gives the same blind token.

use unicode_normalization::UnicodeNormalization;

/// A person's name: Unicode NFKD with diacritics removed, lowercase, punctuation
/// dropped, whitespace collapsed. `"  O'Brien,  José "` → `"obrien jose"`.
pub fn name(raw: &str) -> String {
    let folded: String = raw
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c == ',' || c == '^' || c == '*' {
                ' '
            } else {
                c
            }
        })
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An identifier (member id, claim number, NPI, trace number, codes): uppercase,
/// separators (space, `-`, `.`, `/`) removed.
pub fn identifier(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '\t'))
        .flat_map(char::to_uppercase)
        .collect()
}

/// A date as `YYYY-MM-DD`, from `YYYY-MM-DD`, `YYYYMMDD` (X12 D8) or `MM/DD/YYYY`.
/// `None` when it is not a real calendar date.
pub fn date(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (y, m, d) = if raw.len() == 8 && raw.bytes().all(|b| b.is_ascii_digit()) {
        (&raw[0..4], &raw[4..6], &raw[6..8])
    } else if raw.len() == 10 && raw.as_bytes()[4] == b'-' && raw.as_bytes()[7] == b'-' {
        (&raw[0..4], &raw[5..7], &raw[8..10])
    } else if raw.len() == 10 && raw.as_bytes()[2] == b'/' && raw.as_bytes()[5] == b'/' {
        (&raw[6..10], &raw[0..2], &raw[3..5])
    } else {
        return None;
    };
    let (year, month, day): (u32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days)
        .contains(&day)
        .then(|| format!("{year:04}-{month:02}-{day:02}"))
}

/// The year-month (`YYYY-MM`) of a date.
pub fn month(raw: &str) -> Option<String> {
    date(raw).map(|d| d[..7].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_fold_case_accents_and_punctuation() {
        assert_eq!(name("  O'Brien,  José "), "obrien jose");
        assert_eq!(name("DOE^JOHN"), "doe john");
        assert_eq!(name("Zoë   Ångström-Smith"), "zoe angstromsmith");
    }

    #[test]
    fn identifiers_drop_separators() {
        assert_eq!(identifier("w123-456 789"), "W123456789");
        assert_eq!(identifier("99213"), "99213");
        assert_eq!(identifier("E11.9"), "E119");
    }

    #[test]
    fn dates_in_three_spellings() {
        assert_eq!(date("20240229").as_deref(), Some("2024-02-29"));
        assert_eq!(date("2024-03-01").as_deref(), Some("2024-03-01"));
        assert_eq!(date("03/01/2024").as_deref(), Some("2024-03-01"));
        assert_eq!(date("20230229"), None);
        assert_eq!(date("2024-13-01"), None);
        assert_eq!(date("yesterday"), None);
        assert_eq!(month("20240229").as_deref(), Some("2024-02"));
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(s in "\\PC{0,40}") {
            prop_assert_eq!(name(&name(&s)), name(&s));
            prop_assert_eq!(identifier(&identifier(&s)), identifier(&s));
        }
    }
}
