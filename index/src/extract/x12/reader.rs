//! The X12 tokenizer: segments and their elements, with the delimiters each
//! interchange declares in its fixed-length ISA header.
//!
//! An interchange starts with a 106-byte ISA segment whose fourth byte is the
//! element separator, ISA11 the repetition separator (5010; in 4010 it is the
//! standards id `U`), ISA16 the component separator and the byte after ISA16 the
//! segment terminator. Every ISA re-declares them, so a file of several
//! interchanges may change delimiters between them. Whitespace between segments
//! (CR/LF after terminators, indentation) is skipped; a `BIN` segment's binary
//! data is skipped by its declared length.
//!
//! [`Reader`] checks only the shape of segments: an ISA at the start, a well-formed
//! ISA header, identifiers of 2-3 upper-case letters or digits. The envelope
//! (ISA/GS/ST nesting) is checked by the caller. Errors name a byte offset or a
//! segment position and id, never a value. Work is linear in the input: segments
//! and elements are slices found by scanning forward, with nothing copied.

use std::borrow::Cow;

use crate::extract::{ExtractError, Format};

/// Length of the fixed-length ISA segment, its terminator included.
pub const ISA_LEN: usize = 106;

/// Byte offsets of the 16 element separators in an ISA segment.
const ISA_SEPARATOR_OFFSETS: [usize; 16] = [
    3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103,
];
/// Offset of ISA11 (repetition separator in 5010, standards id in 4010).
const ISA11_OFFSET: usize = 82;
/// Offsets of ISA12, the interchange control version (`00401`, `00501`).
const ISA12_RANGE: std::ops::Range<usize> = 84..89;
/// Offset of ISA16, the component separator.
const ISA16_OFFSET: usize = 104;
/// First version whose ISA11 is a repetition separator.
const FIRST_VERSION_WITH_REPETITION: &[u8; 5] = b"00402";

/// The delimiters of one interchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Between elements (ISA byte 3), usually `*`.
    pub element: u8,
    /// Between the components of a composite element (ISA16), usually `:`.
    pub component: u8,
    /// Between repeats of an element (ISA11, from version 00402 on), usually `^`.
    pub repetition: Option<u8>,
    /// After each segment (the byte after ISA16), usually `~`.
    pub segment: u8,
}

/// An interchange control version, from ISA12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version([u8; 5]);

impl Version {
    /// The five digits of ISA12.
    pub fn as_bytes(&self) -> &[u8; 5] {
        &self.0
    }

    /// Whether this is 4010 or older (ISA11 is a standards id, not a separator).
    pub fn is_4010_or_older(self) -> bool {
        self.0.as_slice() < FIRST_VERSION_WITH_REPETITION.as_slice()
    }
}

/// One segment: its identifier and elements, as slices of the input.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    position: usize,
    offset: usize,
    id: &'a str,
    raw: &'a [u8],
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    /// 1-based position of the segment in the file (the first ISA is 1).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Byte offset of the segment's first byte in the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The segment identifier (`CLP`, `NM1`): 2-3 upper-case letters or digits.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The delimiters in force for this segment.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// Where this segment is, for errors: `segment 12 (CLP)`.
    pub fn location(&self) -> String {
        format!("segment {} ({})", self.position, self.id)
    }

    /// Element `n` (1-based, as in `CLP01`; 0 is the identifier); empty when absent.
    pub fn element(&self, n: usize) -> &'a [u8] {
        self.raw
            .split(|&b| b == self.delimiters.element)
            .nth(n)
            .unwrap_or_default()
    }

    /// The elements after the identifier, in order.
    pub fn elements(&self) -> impl Iterator<Item = &'a [u8]> {
        let separator = self.delimiters.element;
        self.raw.split(move |&b| b == separator).skip(1)
    }

    /// Element `n` as text, surrounding whitespace trimmed (invalid UTF-8 replaced).
    pub fn text(&self, n: usize) -> Cow<'a, str> {
        text(self.element(n))
    }

    /// Whether element `n`, trimmed, is exactly `expected`.
    pub fn is(&self, n: usize, expected: &str) -> bool {
        self.element(n).trim_ascii() == expected.as_bytes()
    }

    /// The components of a composite element taken from this segment.
    pub fn components(&self, element: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        let separator = self.delimiters.component;
        element.split(move |&b| b == separator)
    }

    /// Component `c` (1-based) of element `n`; empty when absent.
    pub fn component(&self, n: usize, c: usize) -> &'a [u8] {
        match c.checked_sub(1) {
            Some(index) => self
                .components(self.element(n))
                .nth(index)
                .unwrap_or_default(),
            None => &[],
        }
    }

    /// The repeats of element `n` (one, when the interchange has no repetition
    /// separator).
    pub fn repeats(&self, n: usize) -> impl Iterator<Item = &'a [u8]> {
        let element = self.element(n);
        let separator = self.delimiters.repetition;
        element.split(move |&b| Some(b) == separator)
    }
}

/// Bytes as trimmed text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes.trim_ascii())
}

/// Reads the segments of an X12 file, one interchange after another.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    count: usize,
    delimiters: Option<Delimiters>,
    version: Option<Version>,
    done: bool,
}

impl<'a> Reader<'a> {
    /// A reader over a whole file (a leading UTF-8 byte-order mark is skipped).
    pub fn new(bytes: &'a [u8]) -> Self {
        let pos = if bytes.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        Reader {
            bytes,
            pos,
            count: 0,
            delimiters: None,
            version: None,
            done: false,
        }
    }

    /// The delimiters of the current interchange (none before the first ISA).
    pub fn delimiters(&self) -> Option<Delimiters> {
        self.delimiters
    }

    /// The control version of the current interchange (ISA12).
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The location of the end of the input, for errors: `byte 1234 (end of input)`.
    pub fn end_location(&self) -> String {
        format!("byte {} (end of input)", self.bytes.len())
    }

    fn fail(
        &mut self,
        location: String,
        problem: &str,
    ) -> Option<Result<Segment<'a>, ExtractError>> {
        self.done = true;
        Some(Err(ExtractError {
            format: Format::X12,
            location,
            problem: problem.to_owned(),
        }))
    }

    fn read_isa(&mut self, start: usize) -> Option<Result<Segment<'a>, ExtractError>> {
        let location = format!("segment {} (ISA)", self.count);
        let Some(header) = self.bytes.get(start..start.saturating_add(ISA_LEN)) else {
            let problem = format!(
                "expected a {ISA_LEN}-byte ISA interchange header; the input ends {} bytes into it",
                self.bytes.len().saturating_sub(start)
            );
            return self.fail(location, &problem);
        };
        let at = |offset: usize| header.get(offset).copied().unwrap_or_default();
        let element = at(3);
        if let Some(offset) = ISA_SEPARATOR_OFFSETS
            .iter()
            .copied()
            .find(|&offset| at(offset) != element)
        {
            let problem = format!(
                "expected the element separator at byte {offset} of the fixed-length ISA header"
            );
            return self.fail(location, &problem);
        }
        let fixed = header.get(..ISA16_OFFSET).unwrap_or_default();
        if fixed.iter().filter(|&&b| b == element).count() != ISA_SEPARATOR_OFFSETS.len() {
            return self.fail(
                location,
                "expected no element separator inside the fixed-length ISA elements",
            );
        }
        let component = at(ISA16_OFFSET);
        let segment = at(ISA_LEN - 1);
        let is_separator = |b: u8| !b.is_ascii_alphanumeric() && !b.is_ascii_whitespace();
        if !is_separator(element)
            || !is_separator(component)
            || !(is_separator(segment) || segment == b'\r' || segment == b'\n')
            || element == component
            || element == segment
            || component == segment
        {
            return self.fail(
                location,
                "expected distinct element, component (ISA16) and segment separators that are not letters, digits or spaces",
            );
        }
        let mut version = [0u8; 5];
        if let Some(declared) = header.get(ISA12_RANGE) {
            version.copy_from_slice(declared);
        }
        let version = Version(version);
        let isa11 = at(ISA11_OFFSET);
        let repetition = (!version.is_4010_or_older()
            && is_separator(isa11)
            && isa11 != element
            && isa11 != component
            && isa11 != segment)
            .then_some(isa11);
        let delimiters = Delimiters {
            element,
            component,
            repetition,
            segment,
        };
        self.delimiters = Some(delimiters);
        self.version = Some(version);
        self.pos = start.saturating_add(ISA_LEN);
        Some(Ok(Segment {
            position: self.count,
            offset: start,
            id: "ISA",
            raw: header.get(..ISA_LEN - 1).unwrap_or_default(),
            delimiters,
        }))
    }
}

/// Where the terminator search of a `BIN` segment starts: after its binary data,
/// whose length BIN01 gives (which may contain any byte, terminators included).
fn binary_data_end(rest: &[u8], element: u8) -> Option<usize> {
    let after_id = rest.strip_prefix(b"BIN")?.strip_prefix(&[element])?;
    let digits_len = after_id.iter().position(|&b| b == element)?;
    let digits = after_id.get(..digits_len)?;
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    // "BIN" + separator + digits + separator + data.
    Some((4 + digits_len + 1).saturating_add(length))
}

fn is_segment_id(id: &[u8]) -> bool {
    (2..=3).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Segment<'a>, ExtractError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let skipped = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let start = self.pos.saturating_add(skipped);
        let Some(rest) = self.bytes.get(start..).filter(|r| !r.is_empty()) else {
            self.done = true;
            return None;
        };
        let is_isa =
            rest.starts_with(b"ISA") && rest.get(3).is_none_or(|b| !b.is_ascii_alphanumeric());
        let Some(delimiters) = self.delimiters.filter(|_| !is_isa) else {
            if is_isa {
                self.count += 1;
                return self.read_isa(start);
            }
            return self.fail(
                format!("byte {start}"),
                "expected an ISA interchange header",
            );
        };
        self.count += 1;
        let search_from = binary_data_end(rest, delimiters.element)
            .unwrap_or(0)
            .min(rest.len());
        let end = rest
            .get(search_from..)
            .and_then(|tail| tail.iter().position(|&b| b == delimiters.segment))
            .map_or(rest.len(), |p| search_from + p);
        self.pos = start.saturating_add(end).saturating_add(1);
        let raw = rest.get(..end).unwrap_or_default();
        let raw = raw
            .iter()
            .rposition(|&b| b != b'\r' && b != b'\n')
            .map_or(&[][..], |last| raw.get(..=last).unwrap_or_default());
        let id = raw
            .split(|&b| b == delimiters.element)
            .next()
            .unwrap_or_default();
        if id.is_empty() {
            return self.fail(
                format!("segment {}", self.count),
                "expected a segment identifier before the first element separator",
            );
        }
        let id = match std::str::from_utf8(id) {
            Ok(id) if is_segment_id(id.as_bytes()) => id,
            _ => {
                return self.fail(
                    format!("segment {}", self.count),
                    "expected a segment identifier of 2 or 3 upper-case letters or digits",
                )
            }
        };
        Some(Ok(Segment {
            position: self.count,
            offset: start,
            id,
            raw,
            delimiters,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISA_5010: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*^*00501*000000001*0*P*:~";
    const ISA_4010: &str = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *240101*1200*U*00401*000000001*0*P*>~";

    fn read(input: &str) -> Result<Vec<(usize, String, Vec<String>)>, ExtractError> {
        Reader::new(input.as_bytes())
            .map(|s| {
                s.map(|s| {
                    let elements = s.elements().map(|e| text(e).into_owned()).collect();
                    (s.position(), s.id().to_owned(), elements)
                })
            })
            .collect()
    }

    fn ids(input: &str) -> Vec<String> {
        read(input)
            .unwrap()
            .into_iter()
            .map(|(_, id, _)| id)
            .collect()
    }

    fn error(input: &[u8]) -> ExtractError {
        Reader::new(input)
            .find_map(Result::err)
            .expect("the reader accepted malformed input")
    }

    #[test]
    fn the_standard_isa_is_106_bytes() {
        assert_eq!(ISA_5010.len(), ISA_LEN);
        assert_eq!(ISA_4010.len(), ISA_LEN);
    }

    #[test]
    fn delimiters_come_from_the_isa_header() {
        let mut reader = Reader::new(ISA_5010.as_bytes());
        let isa = reader.next().unwrap().unwrap();
        assert_eq!(isa.id(), "ISA");
        assert_eq!(isa.text(6), "SENDER");
        assert_eq!(isa.text(16), ":");
        assert_eq!(
            reader.delimiters(),
            Some(Delimiters {
                element: b'*',
                component: b':',
                repetition: Some(b'^'),
                segment: b'~',
            })
        );
        assert!(!reader.version().unwrap().is_4010_or_older());

        let input = format!("{ISA_5010}CLP*A^B*HC:99213:25~");
        let segments: Vec<_> = Reader::new(input.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let clp = segments[1];
        assert_eq!(clp.location(), "segment 2 (CLP)");
        assert_eq!(clp.offset(), ISA_LEN);
        assert_eq!(clp.component(2, 2), b"99213");
        assert_eq!(clp.component(2, 3), b"25");
        assert_eq!(clp.component(2, 4), b"");
        assert_eq!(clp.component(2, 0), b"");
        assert_eq!(clp.element(9), b"");
        assert!(clp.is(0, "CLP"));
        let repeats: Vec<_> = clp.repeats(1).collect();
        assert_eq!(repeats, vec![&b"A"[..], &b"B"[..]]);
    }

    #[test]
    fn in_4010_isa11_is_a_standards_id_not_a_separator() {
        let input = format!("{ISA_4010}NM1*IL*1*U^V~");
        let mut reader = Reader::new(input.as_bytes());
        reader.next().unwrap().unwrap();
        assert!(reader.version().unwrap().is_4010_or_older());
        let delimiters = reader.delimiters().unwrap();
        assert_eq!(delimiters.repetition, None);
        assert_eq!(delimiters.component, b'>');
        let nm1 = reader.next().unwrap().unwrap();
        assert_eq!(nm1.repeats(3).count(), 1);
        assert_eq!(nm1.text(3), "U^V");
        // A 5010 header with an alphanumeric ISA11 has no repetition separator either.
        let odd = ISA_5010.replace("*^*", "*U*");
        let mut reader = Reader::new(odd.as_bytes());
        reader.next().unwrap().unwrap();
        assert_eq!(reader.delimiters().unwrap().repetition, None);
    }

    #[test]
    fn other_delimiters_and_line_breaks() {
        let isa = ISA_5010.replace('*', "|").replace(":~", "^\n");
        let input = format!("{isa}GS|HC|A\n  ST|837|0001\r\n\nCLM|X^Y|1\nSE|2|0001");
        let segments = read(&input).unwrap();
        let seg_ids: Vec<_> = segments.iter().map(|(_, id, _)| id.as_str()).collect();
        assert_eq!(seg_ids, ["ISA", "GS", "ST", "CLM", "SE"]);
        assert_eq!(segments[2].2, ["837", "0001"]);
        assert_eq!(segments[3].2, ["X^Y", "1"]);

        let crlf = format!("{ISA_5010}\r\nGS*HC~\r\nST*835*1~\r\n\r\nSE*2*1~\r\n");
        assert_eq!(ids(&crlf), ["ISA", "GS", "ST", "SE"]);
        // A CR terminator followed by LF.
        let cr = ISA_5010.replace(":~", ":\r");
        assert_eq!(
            ids(&format!("{cr}\nGS*HC\r\nST*835\r\n")),
            ["ISA", "GS", "ST"]
        );
    }

    #[test]
    fn several_interchanges_may_change_delimiters() {
        let second = ISA_4010.replace('*', "|").replace(">~", "`!");
        let input = format!("{ISA_5010}GS*HC~IEA*1*1~\n{second}GS|HC!ST|837`X!IEA|1|1!");
        let segments = read(&input).unwrap();
        let seg_ids: Vec<_> = segments.iter().map(|(_, id, _)| id.as_str()).collect();
        assert_eq!(seg_ids, ["ISA", "GS", "IEA", "ISA", "GS", "ST", "IEA"]);
        assert_eq!(segments[5].2, ["837`X"]);
        assert_eq!(segments[6].0, 7);
    }

    #[test]
    fn binary_segments_are_skipped_by_length() {
        let input = format!("{ISA_5010}BIN*7*a~b*c~d~NM1*QC~");
        let segments = read(&input).unwrap();
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[1].1, "BIN");
        assert_eq!(segments[2].1, "NM1");
        // A length running past the end of the input ends the segment there.
        assert_eq!(ids(&format!("{ISA_5010}BIN*999*abc~")), ["ISA", "BIN"]);
    }

    #[test]
    fn leading_bom_and_whitespace_and_a_missing_last_terminator_are_accepted() {
        let input = format!("\u{feff}\r\n {ISA_5010}GS*HC*1");
        let segments = read(&input).unwrap();
        assert_eq!(segments[1].2, ["HC", "1"]);
    }

    #[test]
    fn input_without_an_isa_header_is_refused_at_its_first_byte() {
        let e = error(b"GS*HC*SENDER~ST*837~");
        assert_eq!(e.format, Format::X12);
        assert_eq!(e.location, "byte 0");
        assert_eq!(e.problem, "expected an ISA interchange header");
        assert_eq!(error(b"  \nISAX*00").location, "byte 3");
        assert_eq!(error(b"\x00\x01").location, "byte 0");
    }

    #[test]
    fn a_short_or_misaligned_isa_is_refused() {
        let e = error(&ISA_5010.as_bytes()[..80]);
        assert_eq!(e.location, "segment 1 (ISA)");
        assert!(e.problem.contains("106-byte"), "{e}");

        // ISA02 one space short shifts every later separator.
        let shifted = format!(
            "{}GS*HC~",
            ISA_5010.replacen("*          *", "*         *", 1)
        );
        let e = error(shifted.as_bytes());
        assert_eq!(e.location, "segment 1 (ISA)");
        assert_eq!(
            e.problem,
            "expected the element separator at byte 17 of the fixed-length ISA header"
        );

        // A separator inside a fixed-length element.
        let e = error(ISA_5010.replace("SENDER ", "SEN*ER ").as_bytes());
        assert!(e.problem.contains("inside the fixed-length"), "{e}");

        // Component separator equal to the terminator, or alphanumeric.
        let e = error(ISA_5010.replace(":~", "~~").as_bytes());
        assert!(e.problem.contains("distinct"), "{e}");
        let e = error(ISA_5010.replace(":~", "A~").as_bytes());
        assert!(e.problem.contains("distinct"), "{e}");

        // The second interchange's header is checked too, at its position.
        let input = format!("{ISA_5010}GS*HC~IEA*1~ISA*00~");
        let e = error(input.as_bytes());
        assert_eq!(e.location, "segment 4 (ISA)");
    }

    #[test]
    fn bad_segment_identifiers_are_refused_by_position_only() {
        let e = error(format!("{ISA_5010}GS*HC~*SECRET*VALUE~").as_bytes());
        assert_eq!(e.location, "segment 3");
        assert_eq!(
            e.problem,
            "expected a segment identifier before the first element separator"
        );
        for bad in ["Nd4", "NM31", "N", "N-1", "DOE JOHN"] {
            let e = error(format!("{ISA_5010}GS*HC~{bad}*X~").as_bytes());
            assert_eq!(e.location, "segment 3", "{bad}");
            assert_eq!(
                e.problem,
                "expected a segment identifier of 2 or 3 upper-case letters or digits"
            );
            assert!(!e.to_string().contains(bad), "{bad}");
        }
        // Nothing is read after an error.
        let input = format!("{ISA_5010}n~GS~");
        let mut reader = Reader::new(input.as_bytes());
        assert!(reader.next().unwrap().is_ok());
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
    }

    #[test]
    fn empty_input_has_no_segments() {
        assert!(read("").unwrap().is_empty());
        assert!(read(" \r\n").unwrap().is_empty());
        assert_eq!(Reader::new(b"ab").end_location(), "byte 2 (end of input)");
    }
}
