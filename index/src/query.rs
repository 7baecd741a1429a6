//! The search query language and its exact evaluation.
//!
//! ```text
//! query   := or
//! or      := and ( "OR" and )*
//! and     := unary ( "AND"? unary )*          (juxtaposition means AND)
//! unary   := "NOT" unary | primary
//! primary := "(" query ")" | field ":" value
//! value   := bare | "quoted \"text\"" | "[" month "TO" month "]"   (service_month only)
//! ```
//!
//! Values are normalised while parsing, so a query holds search terms, never the
//! text as typed. Error messages give a position and what was expected, never a
//! value: a query is as sensitive as the records it looks for.

use std::collections::BTreeSet;

use crate::fields::Field;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Most `field:value` terms in one query (a month range counts its months).
pub const MAX_TERMS: usize = 256;
/// Deepest nesting of parentheses and `NOT`.
pub const MAX_DEPTH: usize = 32;

/// A parsed query over normalised terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A field has this (normalised) term.
    Term(Field, String),
    /// Any of the children.
    Or(Vec<Query>),
    /// All of the children.
    And(Vec<Query>),
    /// Not the child.
    Not(Box<Query>),
}

/// A query that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct QueryError {
    /// 1-based character position in the query.
    pub position: usize,
    /// What was expected (never a value from the query).
    pub message: String,
}

impl Query {
    /// Parses a query.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(QueryError {
                position: 1,
                message: format!("queries are at most {MAX_QUERY_BYTES} bytes"),
            });
        }
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            at: 0,
            terms: 0,
            end: text.chars().count() + 1,
        };
        let query = parser.or(0)?;
        if let Some(token) = parser.tokens.get(parser.at) {
            return Err(QueryError {
                position: token.position,
                message: "expected AND, OR or the end of the query".into(),
            });
        }
        Ok(query)
    }

    /// Whether a document with these search terms matches: the exact evaluation
    /// that post-filters the candidates truncated tokens find.
    pub fn matches(&self, terms: &BTreeSet<(Field, String)>) -> bool {
        self.matches_by(&|field, term| terms.contains(&(field, term.to_owned())))
    }

    /// Whether a document matches, given whether it holds each `field:term`.
    pub fn matches_by(&self, holds: &dyn Fn(Field, &str) -> bool) -> bool {
        match self {
            Query::Term(field, term) => holds(*field, term),
            Query::Or(children) => children.iter().any(|c| c.matches_by(holds)),
            Query::And(children) => children.iter().all(|c| c.matches_by(holds)),
            Query::Not(child) => !child.matches_by(holds),
        }
    }

    /// Calls `each` with every `field:term` of the query, in order; stops at the
    /// first error.
    pub fn for_each_term<'a, E>(
        &'a self,
        each: &mut dyn FnMut(Field, &'a str) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Query::Term(field, term) => each(*field, term),
            Query::Or(children) | Query::And(children) => {
                children.iter().try_for_each(|c| c.for_each_term(each))
            }
            Query::Not(child) => child.for_each_term(each),
        }
    }

    /// The distinct fields the query names (what the audit log may record).
    pub fn fields(&self) -> BTreeSet<Field> {
        let mut out = BTreeSet::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields(&self, out: &mut BTreeSet<Field>) {
        match self {
            Query::Term(field, _) => {
                out.insert(*field);
            }
            Query::Or(children) | Query::And(children) => {
                children.iter().for_each(|c| c.collect_fields(out))
            }
            Query::Not(child) => child.collect_fields(out),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lexeme {
    Open,
    Close,
    LBracket,
    RBracket,
    Colon,
    And,
    Or,
    Not,
    To,
    Word(String),
    Quoted(String),
}

#[derive(Debug)]
struct Token {
    lexeme: Lexeme,
    position: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        let single = match c {
            '(' => Some(Lexeme::Open),
            ')' => Some(Lexeme::Close),
            '[' => Some(Lexeme::LBracket),
            ']' => Some(Lexeme::RBracket),
            ':' => Some(Lexeme::Colon),
            _ => None,
        };
        if let Some(lexeme) = single {
            tokens.push(Token { lexeme, position });
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut value = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(QueryError {
                            position,
                            message: "unterminated quoted value".into(),
                        })
                    }
                    Some('"') => break,
                    Some('\\') if chars.get(i + 1).is_some() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(other) => {
                        value.push(*other);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push(Token {
                lexeme: Lexeme::Quoted(value),
                position,
            });
        } else {
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !matches!(chars[i], '(' | ')' | '[' | ']' | ':' | '"')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lexeme = match word.as_str() {
                "AND" => Lexeme::And,
                "OR" => Lexeme::Or,
                "NOT" => Lexeme::Not,
                "TO" => Lexeme::To,
                _ => Lexeme::Word(word),
            };
            tokens.push(Token { lexeme, position });
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    terms: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Lexeme> {
        self.tokens.get(self.at).map(|t| &t.lexeme)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |t| t.position)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, QueryError> {
        Err(QueryError {
            position: self.position(),
            message: message.into(),
        })
    }

    fn or(&mut self, depth: usize) -> Result<Query, QueryError> {
        let mut children = vec![self.and(depth)?];
        while self.peek() == Some(&Lexeme::Or) {
            self.at += 1;
            children.push(self.and(depth)?);
        }
        Ok(flatten(children, Query::Or))
    }

    fn and(&mut self, depth: usize) -> Result<Query, QueryError> {
        let mut children = vec![self.unary(depth)?];
        loop {
            match self.peek() {
                Some(Lexeme::And) => {
                    self.at += 1;
                    children.push(self.unary(depth)?);
                }
                Some(Lexeme::Open | Lexeme::Not | Lexeme::Word(_)) => {
                    children.push(self.unary(depth)?)
                }
                _ => break,
            }
        }
        Ok(flatten(children, Query::And))
    }

    fn unary(&mut self, depth: usize) -> Result<Query, QueryError> {
        if depth >= MAX_DEPTH {
            return self.error(format!("queries nest at most {MAX_DEPTH} deep"));
        }
        match self.peek() {
            Some(Lexeme::Not) => {
                self.at += 1;
                Ok(Query::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Lexeme::Open) => {
                self.at += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Lexeme::Close) {
                    return self.error("expected )");
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Lexeme::Word(_)) => self.term(),
            None => self.error("expected field:value"),
            Some(_) => self.error("expected field:value, NOT or ("),
        }
    }

    fn term(&mut self) -> Result<Query, QueryError> {
        let field_position = self.position();
        let Some(Lexeme::Word(name)) = self.peek().cloned() else {
            return self.error("expected a field name");
        };
        let field = Field::from_name(&name).ok_or_else(|| QueryError {
            position: field_position,
            // The unknown name is not echoed: it may be a value typed without a field.
            message: format!(
                "unknown field; fields: {}",
                Field::ALL.map(Field::name).join(", ")
            ),
        })?;
        self.at += 1;
        if self.peek() != Some(&Lexeme::Colon) {
            return self.error(format!("expected : after {field}"));
        }
        self.at += 1;
        let value_position = self.position();
        let normalize = |raw: &str| {
            field.normalize(raw).map_err(|e| QueryError {
                position: value_position,
                message: e.to_string(),
            })
        };
        let query = match self.peek().cloned() {
            Some(Lexeme::Word(raw) | Lexeme::Quoted(raw)) => {
                self.at += 1;
                Query::Term(field, normalize(&raw)?)
            }
            Some(Lexeme::LBracket) if field.is_monthly() => {
                self.at += 1;
                let from = self.range_end(&normalize)?;
                if self.peek() != Some(&Lexeme::To) {
                    return self.error("expected TO in a month range");
                }
                self.at += 1;
                let to = self.range_end(&normalize)?;
                if self.peek() != Some(&Lexeme::RBracket) {
                    return self.error("expected ] after a month range");
                }
                self.at += 1;
                let months = months_between(&from, &to).ok_or_else(|| QueryError {
                    position: value_position,
                    message:
                        "a month range runs from an earlier to a later month, at most 20 years"
                            .into(),
                })?;
                self.terms += months.len().saturating_sub(1);
                flatten(
                    months.into_iter().map(|m| Query::Term(field, m)).collect(),
                    Query::Or,
                )
            }
            Some(Lexeme::LBracket) => {
                return self.error(format!("{field} takes no ranges (service_month does)"))
            }
            _ => return self.error(format!("expected a value after {field}:")),
        };
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(QueryError {
                position: field_position,
                message: format!("queries hold at most {MAX_TERMS} terms"),
            });
        }
        Ok(query)
    }

    fn range_end(
        &mut self,
        normalize: &impl Fn(&str) -> Result<String, QueryError>,
    ) -> Result<String, QueryError> {
        match self.peek().cloned() {
            Some(Lexeme::Word(raw) | Lexeme::Quoted(raw)) => {
                self.at += 1;
                normalize(&raw)
            }
            _ => self.error("expected a month, YYYY-MM"),
        }
    }
}

fn flatten(mut children: Vec<Query>, make: fn(Vec<Query>) -> Query) -> Query {
    if children.len() == 1 {
        children.remove(0)
    } else {
        make(children)
    }
}

/// Every `YYYY-MM` from `from` to `to` inclusive; `None` if reversed or over 240.
fn months_between(from: &str, to: &str) -> Option<Vec<String>> {
    let parse = |m: &str| -> Option<u32> {
        let (y, mo) = m.split_once('-')?;
        Some(y.parse::<u32>().ok()? * 12 + mo.parse::<u32>().ok()? - 1)
    };
    let (a, b) = (parse(from)?, parse(to)?);
    if a > b || b - a >= 240 {
        return None;
    }
    Some(
        (a..=b)
            .map(|m| format!("{:04}-{:02}", m / 12, m % 12 + 1))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn term(field: Field, value: &str) -> Query {
        Query::Term(field, value.into())
    }

    #[test]
    fn precedence_and_implicit_and() {
        let q = Query::parse(
            r#"patient_name:"Doe, John" member_id:w-123 OR NOT (claim_status:1 AND payer:Acme)"#,
        )
        .unwrap();
        assert_eq!(
            q,
            Query::Or(vec![
                Query::And(vec![
                    term(Field::PatientName, "doe john"),
                    term(Field::MemberId, "W123"),
                ]),
                Query::Not(Box::new(Query::And(vec![
                    term(Field::ClaimStatus, "1"),
                    term(Field::Payer, "acme"),
                ]))),
            ])
        );
    }

    #[test]
    fn month_ranges_expand() {
        let q = Query::parse("service_month:[2023-11 TO 2024-02]").unwrap();
        assert_eq!(
            q,
            Query::Or(
                ["2023-11", "2023-12", "2024-01", "2024-02"]
                    .map(|m| term(Field::ServiceMonth, m))
                    .to_vec()
            )
        );
        assert!(Query::parse("service_month:[2024-02 TO 2023-11]").is_err());
        assert!(Query::parse("service_date:[2024-02 TO 2024-03]").is_err());
    }

    #[test]
    fn errors_have_positions_and_no_values() {
        let cases = [
            ("ssn:123456789", 1, "unknown field"),
            ("patient_dob:secret-value", 13, "patient_dob expects a date"),
            ("member_id:1 AND", 16, "expected field:value"),
            ("(member_id:1", 13, "expected )"),
            ("member_id 1", 11, "expected : after member_id"),
            ("member_id:\"abc", 11, "unterminated"),
            ("member_id:1 )", 13, "expected AND, OR"),
        ];
        for (text, position, message) in cases {
            let e = Query::parse(text).unwrap_err();
            assert_eq!(e.position, position, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
            assert!(!e.message.contains("secret"), "{text}: {e}");
        }
    }

    #[test]
    fn exact_evaluation() {
        let q = Query::parse("patient_last_name:doe AND NOT claim_status:4").unwrap();
        let doc = |status: &str| {
            BTreeSet::from([
                (Field::PatientLastName, "doe".to_owned()),
                (Field::ClaimStatus, status.to_owned()),
            ])
        };
        assert!(q.matches(&doc("1")));
        assert!(!q.matches(&doc("4")));
        assert_eq!(
            q.fields(),
            BTreeSet::from([Field::PatientLastName, Field::ClaimStatus])
        );
    }

    #[test]
    fn limits_hold() {
        let deep = format!("{}member_id:1{}", "(".repeat(40), ")".repeat(40));
        assert!(Query::parse(&deep).is_err());
        let many = vec!["member_id:1"; MAX_TERMS + 1].join(" OR ");
        assert!(Query::parse(&many).is_err());
        assert!(Query::parse(&"x".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,120}") {
            let _ = Query::parse(&text);
        }

        #[test]
        fn parsing_structured_noise_never_panics(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("("), Just(")"), Just("AND"), Just("OR"), Just("NOT"), Just("["), Just("]"),
                    Just("TO"), Just(":"), Just("\""), Just("member_id"), Just("service_month"),
                    Just("2024-01"), Just("x"),
                ],
                0..30,
            )
        ) {
            let _ = Query::parse(&parts.join(" "));
        }
    }
}
